//! The `duetdb` command-line tool: ingest, query, get, delete, stats, eval, train,
//! transfer, reindex, export/import, serve and maintenance of a local database. Every command prints JSON with
//! `--json`; errors are one line on stderr and a non-zero exit status.

mod args;
mod eval;
mod ingest;
mod parquet_io;
mod progress;
mod reindex;
mod search;
mod serve;
mod train;

use args::{Cli, Cmd};
use clap::Parser;
use duetdb::{Db, Error, Result};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Writes a line to stdout; a closed pipe (`| head`) ends the program quietly.
pub(crate) fn out(line: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Options every command opens a database with: the library's defaults, and automatic
/// compaction as `DUETDB_AUTO_COMPACT` sets it (a fraction of dead rows, or `off`).
pub(crate) fn db_options() -> Result<duetdb::DbOptions> {
    let opts = Db::options();
    match std::env::var("DUETDB_AUTO_COMPACT") {
        Err(_) => Ok(opts),
        Ok(v) if v == "off" => Ok(opts.auto_compact(None)),
        Ok(v) => match v.parse::<f64>() {
            Ok(r) => Ok(opts.auto_compact(Some(r))),
            Err(_) => Err(Error::invalid(format!("DUETDB_AUTO_COMPACT={v:?} is neither a fraction of dead rows (like 0.5) nor `off`"))),
        },
    }
}

/// Opens a database that must exist already: read and maintenance commands never create one.
pub(crate) fn open_existing(db: &Path) -> Result<Db> {
    db_options()?.create_if_missing(false).open(db)
}

fn run(cli: Cli) -> Result<()> {
    if let Some(p) = &cli.precision {
        duetdb::embed::set_precision(p.parse()?);
    }
    if let Some(d) = &cli.device {
        duetdb::embed::set_device(d.parse()?);
    }
    match cli.cmd {
        Cmd::Ingest { db, input, embedder, batch, json, skip_bad, fields } => ingest::ingest(db, input, embedder, batch, json, skip_bad, fields.json_fields()),
        Cmd::Query { db, text, k, ef, filters, where_expr, rank, json } => {
            // A bad expression is reported before the database is opened.
            let expr = where_expr.as_deref().map(duetdb::Filter::parse).transpose()?;
            let db = open_existing(&db)?;
            let mut q = rank.apply(db.query(&text).limit(k));
            if let Some(ef) = ef {
                q = q.ef(ef);
            }
            for f in &filters {
                let (k, v) = search::parse_filter(f)?;
                q = q.filter(k, v);
            }
            if let Some(f) = expr {
                q = q.matching(f);
            }
            let hits = q.run()?;
            if json {
                out(json!({ "hits": hits }));
            } else {
                for h in hits {
                    let text: String = h.text.chars().take(100).collect::<String>().replace('\n', " ");
                    out(format!("{:.4}  {}  {}", h.score, h.id, text));
                }
            }
            Ok(())
        }
        Cmd::Get { db, id, json } => {
            let db = open_existing(&db)?;
            let d = db.get(&id)?.ok_or_else(|| Error::invalid(format!("no document with id `{id}`")))?;
            if json {
                out(serde_json::to_string(&d).unwrap());
            } else {
                out(format!("{}\n{}\n{}", d.id, d.metadata, d.text));
            }
            Ok(())
        }
        Cmd::Delete { db, ids, json } => {
            let db = open_existing(&db)?;
            let n = db.delete(&ids)?;
            if json {
                out(json!({"deleted": n, "requested": ids.len()}));
            } else {
                out(format!("deleted {n} of {} documents", ids.len()));
            }
            db.close()
        }
        Cmd::Embed { texts, embedder, kind, json } => search::embed_cmd(texts, embedder, kind, json),
        Cmd::Eval { file, query_field, doc_field, embedder, db, limit, rank, json } => {
            eval::eval_cmd(eval::EvalArgs { files: file, query_field, doc_field, embedder, keep: db, limit }, rank, json)
        }
        Cmd::Train(args) => train::train_cmd(args),
        Cmd::Transfer(mut args) => {
            args.mode = "transfer".into();
            if !args.resume && (args.from.is_none() || args.backbone.is_none()) {
                return Err(Error::invalid("transfer needs --from CHECKPOINT and --backbone qwen2.5|gemma3|FILE.gguf"));
            }
            train::train_cmd(args)
        }
        Cmd::Reindex { db, embedder, batch, threads, status, rollback, json } => reindex::reindex_cmd(db, embedder, batch, threads, status, rollback, json),
        Cmd::Gc { db, json } => {
            let db = open_existing(&db)?;
            let gone = db.gc()?;
            if json {
                out(json!({"removed_generations": gone}));
            } else {
                out(format!("removed {} kept generation(s) {gone:?}", gone.len()));
            }
            db.close()
        }
        Cmd::Compact { db, json } => {
            let db = open_existing(&db)?;
            let r = db.compact()?;
            if json {
                out(serde_json::to_string(&r).unwrap());
            } else {
                out(format!(
                    "compacted {} rows to {} in {:.2} s: {:.1} MB -> {:.1} MB",
                    r.rows_before,
                    r.rows_after,
                    r.seconds,
                    r.bytes_before as f64 / 1e6,
                    r.bytes_after as f64 / 1e6
                ));
            }
            db.close()
        }
        Cmd::Check { db, json } => {
            let report = duetdb::db::check_at(&db)?;
            if json {
                out(serde_json::to_string(&report).unwrap());
            } else {
                for p in &report.problems {
                    let kind = if p.derived { "derived state, rebuilt on open" } else { "damage" };
                    out(format!("problem ({kind}): {}: {}", p.path.display(), p.detail));
                }
                out(format!("checked {} documents and {} rows: {} problem(s)", report.documents, report.rows, report.problems.len()));
            }
            if report.is_ok() {
                Ok(())
            } else {
                Err(Error::invalid(format!("{} problem(s) found in {}", report.problems.len(), db.display())))
            }
        }
        Cmd::Dump { db, out: file } => {
            let report = match &file {
                Some(f) => {
                    duetdb::store::Layout::refuse_inside_database("--out", f)?;
                    let mut report = None;
                    duetdb::durable::replace_file(f, |tmp| {
                        let fh = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
                        let mut w = std::io::BufWriter::new(fh);
                        report = Some(duetdb::db::dump_at(&db, &mut w)?);
                        w.flush().map_err(|e| Error::io(tmp, e))
                    })?;
                    report.expect("written by the dump")
                }
                None => duetdb::db::dump_at(&db, &mut std::io::stdout().lock())?,
            };
            for u in &report.unreadable {
                eprintln!("unreadable: {u}");
            }
            eprintln!("dumped {} documents; {} could not be read", report.documents, report.unreadable.len());
            Ok(())
        }
        Cmd::Backup { db, dest } => {
            let src = open_existing(&db)?;
            src.backup(&dest)?;
            out(format!("backed up {} documents to {}", src.len(), dest.display()));
            src.close()
        }
        Cmd::Export { db, out: file, generation, list_vectors, json } => parquet_io::export_cmd(db, file, generation, list_vectors, json),
        Cmd::Import { db, file, reembed, embedder, json } => parquet_io::import_cmd(parquet_io::ImportArgs { db, file, embedder, reembed, json }),
        Cmd::Serve(args) => serve::serve_cmd(args),
        Cmd::Stats { db, json } => {
            let db = open_existing(&db)?;
            let st = db.stats()?;
            if json {
                out(serde_json::to_string(&st).unwrap());
            } else {
                let v = serde_json::to_value(&st).unwrap();
                for (k, v) in v.as_object().unwrap() {
                    out(format!("{k:>18}: {v}"));
                }
            }
            Ok(())
        }
    }
}

static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal who has not asked for none (NO_COLOR).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        // sled's own error lines come back to us as errors that we report in one line:
        // printed too, they would say it twice (RUST_LOG=sled=debug shows them).
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,sled=off".into()))
        .init();
    // A bug must still end as one line on stderr, not a backtrace. Panics that the
    // library catches at a dependency's boundary (and turns into errors) only log.
    std::panic::set_hook(Box::new(|info| {
        tracing::debug!("panic: {info}");
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(move || run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            // Each error's message already ends with its source's (see duetdb::Error).
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            let msg = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            eprintln!("error: internal error: {}", msg.as_deref().unwrap_or("panic"));
            ExitCode::from(101)
        }
    }
}
