//! `duetdb serve`: one process owns the database and answers HTTP (axum on tokio), so
//! several programs, in any language, share one database and its embedder, and other
//! engines can embed their queries in the same space as duetdb's documents.
//!
//! `api.rs` holds errors, limits and the API key, `routes.rs` the routes, `batcher.rs`
//! the shared embedding queue, `committer.rs` group commit of ingests. On SIGTERM or Ctrl-C the server stops accepting, answers
//! the requests in flight, then closes the database.

mod api;
mod batcher;
mod committer;
mod routes;

use crate::args::ServeArgs;
use api::{require_key, Limits};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use batcher::{Batcher, Budget};
use committer::Committer;
use duetdb::{Db, Error, Result};
use std::sync::Arc;

/// What every handler reads.
pub(crate) struct AppState {
    pub(crate) db: Arc<Db>,
    pub(crate) batcher: Batcher,
    pub(crate) committer: Committer,
    pub(crate) limits: Limits,
}

fn app(state: Arc<AppState>, key: Option<String>, max_body: usize) -> Router {
    let guarded = Router::new()
        .route("/v1/embeddings", post(routes::openai_embeddings))
        .route("/embed", post(routes::tei_embed))
        .route("/query", post(routes::query))
        .route("/ingest", post(routes::ingest))
        .route("/documents/{id}", get(routes::get_document).delete(routes::delete_document))
        .route("/stats", get(routes::stats))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(key), require_key));
    Router::new()
        .merge(guarded)
        .route("/health", get(routes::health))
        .fallback(|| async { api::ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such route: see `duetdb serve --help` and the README") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The job a worker thread (embedding or commit) starts its next round with: the one
/// that did not fit the last round, or the next to arrive; `None` once every handle to
/// the queue is gone.
fn next_job<T>(carry: &mut Option<T>, rx: &std::sync::mpsc::Receiver<T>) -> Option<T> {
    carry.take().or_else(|| rx.recv().ok())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("stopping: answering the requests in flight");
}

/// Runs the server until SIGTERM or Ctrl-C.
pub(crate) fn serve_cmd(a: ServeArgs) -> Result<()> {
    duetdb::limits::check("--max-inputs", a.max_inputs, 1, duetdb::limits::MAX_BATCH)?;
    duetdb::limits::check("--max-documents", a.max_documents, 1, duetdb::limits::MAX_BATCH)?;
    duetdb::limits::check("--batch-texts", a.batch_texts, 1, duetdb::limits::MAX_BATCH)?;
    if a.max_body_bytes == 0 || a.max_text_bytes == 0 || a.batch_bytes == 0 {
        return Err(Error::invalid("--max-body-bytes, --max-text-bytes and --batch-bytes must be positive"));
    }
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(Error::invalid("--api-key is empty"));
    }
    let mut opts = crate::db_options()?;
    if let Some(e) = &a.embedder {
        opts = opts.embedder_spec(e.clone());
    }
    let db = Arc::new(opts.open(&a.db)?);
    // Load the embedder now, so that a missing model fails the start, not a request.
    db.embedder()?;
    let (batcher, worker) = Batcher::start(db.clone(), Budget { texts: a.batch_texts, bytes: a.batch_bytes });
    let limits = Limits { max_inputs: a.max_inputs, max_documents: a.max_documents, max_text_bytes: a.max_text_bytes, max_body_bytes: a.max_body_bytes };
    let (committer, commit_worker) = Committer::start(db.clone());
    let state = Arc::new(AppState { db: db.clone(), batcher, committer, limits });
    let router = app(state, a.api_key.clone(), a.max_body_bytes);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::io("<tokio runtime>", e))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.addr).await.map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", a.addr)))?;
        let local = listener.local_addr().map_err(|e| Error::io("<listener>", e))?;
        // The first line of stdout: scripts and tests read the port from it.
        crate::out(format!("listening on http://{local}"));
        axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await.map_err(|e| Error::io("<server>", e))
    })?;
    drop(rt);
    // Every handler has finished: the router held the last handles to the queue.
    let _ = worker.join();
    let _ = commit_worker.join();
    match Arc::try_unwrap(db) {
        Ok(db) => db.close()?,
        Err(db) => db.flush()?,
    }
    crate::out("stopped; database closed");
    Ok(())
}
