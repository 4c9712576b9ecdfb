//! The routes: embeddings in OpenAI's and text-embeddings-inference's shapes, and the
//! database's own query, ingest, get, delete and stats, in and out as the CLI's `--json`.

use super::api::{blocking, parse_json, ApiError, Body};
use super::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use duetdb::db::JsonFields;
use duetdb::{Document, Kind, Mode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The `model` names of `/v1/embeddings`: the query/passage choice of an asymmetric
/// embedder, made explicit where OpenAI's shape has room for it.
pub(crate) const MODEL_QUERY: &str = "duetdb-query";
pub(crate) const MODEL_PASSAGE: &str = "duetdb-passage";

/// A string or a list of strings, as both embeddings APIs accept.
#[derive(Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn into_vec(self) -> Vec<String> {
        match self {
            Texts::One(t) => vec![t],
            Texts::Many(v) => v,
        }
    }
}

fn kind_named(name: &str, field: &str) -> Result<Kind, ApiError> {
    match name {
        "query" => Ok(Kind::Query),
        "passage" | "document" => Ok(Kind::Passage),
        other => Err(ApiError::bad(format!("`{field}` is `{other}`: expected `query` or `passage`"))),
    }
}

#[derive(Deserialize)]
struct OpenAiRequest {
    input: Texts,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// duetdb's own field, which OpenAI's clients can send with `extra_body`; it
    /// overrides the kind that `model` names.
    #[serde(default)]
    input_type: Option<String>,
}

/// `POST /v1/embeddings`, in OpenAI's shape.
pub(crate) async fn openai_embeddings(State(s): State<Arc<AppState>>, Body(body): Body) -> Result<Response, ApiError> {
    let req: OpenAiRequest = parse_json(&body)?;
    let mut kind = match req.model.as_str() {
        MODEL_QUERY => Kind::Query,
        MODEL_PASSAGE => Kind::Passage,
        other => return Err(ApiError::bad(format!("unknown model `{other}`: use `{MODEL_QUERY}` for queries or `{MODEL_PASSAGE}` for documents"))),
    };
    if let Some(t) = &req.input_type {
        kind = kind_named(t, "input_type")?;
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad(format!("`encoding_format` is `{other}`: expected `float` or `base64`"))),
    };
    if let Some(d) = req.dimensions {
        if d != s.db.dimension() {
            return Err(ApiError::bad(format!("`dimensions` is {d}, but this embedder's vectors have {} (they cannot be shortened)", s.db.dimension())));
        }
    }
    let texts = req.input.into_vec();
    s.limits.check_inputs(&texts)?;
    // No tokenizer is shared by every embedder: usage counts whitespace-separated words.
    let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let vectors = s.batcher.embed(texts, kind).await?.vectors;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": req.model, "usage": {"prompt_tokens": words, "total_tokens": words}})).into_response())
}

#[derive(Deserialize)]
struct TeiRequest {
    inputs: Texts,
    /// text-embeddings-inference's name for the prompt to use: `query` or `passage`.
    #[serde(default)]
    prompt_name: Option<String>,
}

/// `POST /embed`, in text-embeddings-inference's shape: `[[float]]`.
pub(crate) async fn tei_embed(State(s): State<Arc<AppState>>, Body(body): Body) -> Result<Response, ApiError> {
    let req: TeiRequest = parse_json(&body)?;
    let kind = match &req.prompt_name {
        Some(p) => kind_named(p, "prompt_name")?,
        None => Kind::Query,
    };
    let texts = req.inputs.into_vec();
    s.limits.check_inputs(&texts)?;
    Ok(Json(s.batcher.embed(texts, kind).await?.vectors).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    text: String,
    #[serde(default = "ten")]
    k: usize,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    ef: Option<usize>,
    /// Metadata equality filters, `{"key": value, ...}`.
    #[serde(default)]
    filters: serde_json::Map<String, Value>,
    /// A filter expression, as the CLI's `--where` (`year >= 2020 and tag in (a, b)`).
    #[serde(default, rename = "where")]
    where_expr: Option<String>,
}

fn ten() -> usize {
    10
}

/// `POST /query`: `{"text", "k", "mode", "ef", "filters"}` to `{"hits": [...]}`.
pub(crate) async fn query(State(s): State<Arc<AppState>>, Body(body): Body) -> Result<Response, ApiError> {
    let req: QueryRequest = parse_json(&body)?;
    let mode = match &req.mode {
        Some(m) => Mode::parse(m)?,
        None => duetdb::db::DEFAULT_MODE,
    };
    s.limits.check_text("the query text", &req.text)?;
    let expr = req.where_expr.as_deref().map(duetdb::Filter::parse).transpose()?;
    let vector = match mode {
        Mode::Text => None,
        _ => s.batcher.embed(vec![req.text.clone()], Kind::Query).await?.vectors.pop(),
    };
    let db = s.db.clone();
    let hits = blocking("query", move || {
        let mut q = db.query(&req.text).limit(req.k).mode(mode);
        if let Some(v) = vector {
            q = q.vector(v);
        }
        if let Some(ef) = req.ef {
            q = q.ef(ef);
        }
        for (k, v) in req.filters {
            q = q.filter(k, v);
        }
        if let Some(f) = expr {
            q = q.matching(f);
        }
        q.run()
    })
    .await?;
    Ok(Json(json!({"hits": hits})).into_response())
}

/// The documents of an ingest body: a JSON array of documents, or JSON Lines (one
/// document per line), each `{"id", "text", "metadata"}` as `duetdb ingest` reads them.
fn documents(body: &Bytes) -> Result<Vec<Document>, ApiError> {
    let fields = JsonFields::default();
    let text = std::str::from_utf8(body).map_err(|e| ApiError::bad(format!("the body is not UTF-8: {e}")))?;
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> = parse_json(body)?;
        return items
            .iter()
            .enumerate()
            .map(|(i, v)| fields.document(v.to_string().as_bytes()).map_err(|e| ApiError::bad(format!("document {i}: {e}"))))
            .collect();
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            docs.push(fields.document(line.as_bytes()).map_err(|e| ApiError::bad(format!("line {}: {e}", i + 1)))?);
        }
    }
    Ok(docs)
}

/// `POST /ingest`: answered once every document of the request is durable.
pub(crate) async fn ingest(State(s): State<Arc<AppState>>, Body(body): Body) -> Result<Response, ApiError> {
    let docs = documents(&body)?;
    if docs.is_empty() {
        return Err(ApiError::bad("no documents in the body"));
    }
    if docs.len() > s.limits.max_documents {
        return Err(ApiError::too_large(format!(
            "{} documents in one request, more than the limit of {} (split the request)",
            docs.len(),
            s.limits.max_documents
        )));
    }
    for (i, d) in docs.iter().enumerate() {
        s.db.check_document(d).map_err(|e| ApiError::bad(format!("document {i}: {e}")))?;
        s.limits.check_text(&format!("document `{}`", d.id), &d.text)?;
    }
    // Embedded in the shared queue with every other client's texts, then committed.
    let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
    let embedded = s.batcher.embed(texts, Kind::Passage).await?;
    let n = docs.len();
    let report = s.committer.commit(docs, embedded.vectors, embedded.fingerprint).await?;
    Ok(Json(json!({"committed": n, "written": report.written, "unchanged": report.unchanged})).into_response())
}

/// `GET /documents/{id}`.
pub(crate) async fn get_document(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match s.db.get(&id)? {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no document with id `{id}`"))),
    }
}

/// `DELETE /documents/{id}`: durable on return.
pub(crate) async fn delete_document(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let db = s.db.clone();
    let key = id.clone();
    let n = blocking("delete", move || db.delete(&[key])).await?;
    if n == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no document with id `{id}`")));
    }
    Ok(Json(json!({"deleted": n})).into_response())
}

/// `GET /stats`: as `duetdb stats --json`.
pub(crate) async fn stats(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(s.db.stats()?).into_response())
}

/// `GET /health`: answered without a key, for load balancers.
pub(crate) async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}
