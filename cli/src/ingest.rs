//! `duetdb ingest`: JSON Lines in, committed in batches, a bad line named by its number.

use crate::{out, progress};
use duetdb::db::JsonFields;
use duetdb::{Document, Error, Result};
use serde_json::json;
use std::io::BufRead;
use std::path::PathBuf;

/// Ingests `input` (a file, or `-` for standard input) into `db`, in durable batches.
pub(crate) fn ingest(db: PathBuf, input: String, embedder: Option<String>, batch: usize, json: bool, skip_bad: bool, fields: JsonFields) -> Result<()> {
    let batch = duetdb::limits::check("--batch", batch, 1, duetdb::limits::MAX_BATCH)?;
    let mut opts = crate::db_options()?;
    if let Some(e) = embedder {
        opts = opts.embedder_spec(e);
    }
    let db = opts.open(&db)?;
    let (reader, total): (Box<dyn BufRead>, Option<u64>) = if input == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(&input).map_err(|e| Error::io(&input, e))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::with_capacity(1 << 20, f)), len)
    };
    // indicatif draws only when stderr is a terminal, so scripts see clean output.
    let bar = match total {
        Some(n) => progress::bytes(n),
        None => progress::spinner(),
    };
    let started = std::time::Instant::now();
    let (mut committed, mut written) = (0usize, 0usize);
    let mut skipped = 0usize;
    // Lines become batches on this thread, which also embeds them; the library commits
    // each on its own thread while the next is embedded (Db::ingest_stream).
    let mut reader = reader;
    let mut buf = Vec::new();
    let mut lineno = 0;
    let mut pending: Vec<Document> = Vec::with_capacity(batch);
    let mut stopped: Option<Error> = None;
    let mut last_doc_line = 0;
    let mut done = false;
    let read_bar = bar.clone();
    let batches = std::iter::from_fn(|| loop {
        if done {
            return stopped.take().map(Err);
        }
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                stopped = Some(Error::io(&input, e));
                0
            }
        };
        if n == 0 {
            done = true;
            if !pending.is_empty() {
                return Some(Ok((format!("batch ending at line {last_doc_line}"), std::mem::take(&mut pending))));
            }
            continue;
        }
        lineno += 1;
        read_bar.inc(n as u64);
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match fields.document(raw).and_then(|d| db.check_document(&d).map(|_| d)).map_err(|e| e.context(format!("line {lineno}"))) {
            Ok(d) => {
                pending.push(d);
                last_doc_line = lineno;
            }
            Err(e) if skip_bad => {
                skipped += 1;
                read_bar.suspend(|| eprintln!("skipped {e}"));
            }
            Err(e) => {
                // The documents before the bad line are committed first.
                stopped = Some(e);
                done = true;
                if !pending.is_empty() {
                    return Some(Ok((format!("batch ending at line {last_doc_line}"), std::mem::take(&mut pending))));
                }
                continue;
            }
        }
        if pending.len() >= batch {
            return Some(Ok((format!("batch ending at line {last_doc_line}"), std::mem::take(&mut pending))));
        }
    });
    let commit_bar = bar.clone();
    let report = db.ingest_stream(batches, |_, docs, r| {
        committed += docs.len();
        written += r.written;
        if json {
            out(json!({"committed": committed, "last_id": docs.last().map(|d| d.id.as_str())}));
        }
        commit_bar.set_message(format!("{committed} documents, {:.1} documents/s", committed as f64 / started.elapsed().as_secs_f64().max(1e-9)));
        Ok(())
    });
    report?;
    bar.finish_and_clear();
    if json {
        out(json!({"done": true, "committed": committed, "skipped": skipped}));
    } else {
        out(format!("ingested {committed} documents ({written} written, {} unchanged), skipped {skipped} bad lines", committed - written));
    }
    db.close()
}
