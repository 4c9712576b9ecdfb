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
    let (mut committed, mut skipped, mut written) = (0usize, 0usize, 0usize);
    let mut pending: Vec<(usize, Document)> = Vec::with_capacity(batch);
    let flush = |pending: &mut Vec<(usize, Document)>, committed: &mut usize, written: &mut usize| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let docs: Vec<Document> = pending.iter().map(|(_, d)| d.clone()).collect();
        let r = db.ingest_batch(&docs).map_err(|e| e.context(format!("batch ending at line {}", pending.last().expect("not empty").0)))?;
        *committed += docs.len();
        *written += r.written;
        if json {
            out(json!({"committed": *committed, "last_id": docs.last().unwrap().id}));
        }
        bar.set_message(format!("{committed} documents, {:.1} documents/s", *committed as f64 / started.elapsed().as_secs_f64().max(1e-9)));
        pending.clear();
        Ok(())
    };
    let mut reader = reader;
    let mut buf = Vec::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(&input, e))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        bar.inc(n as u64);
        let raw = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc = fields.document(raw).and_then(|d| db.check_document(&d).map(|_| d)).map_err(|e| e.context(format!("line {lineno}")));
        match doc {
            Ok(d) => pending.push((lineno, d)),
            Err(e) if skip_bad => {
                skipped += 1;
                bar.suspend(|| eprintln!("skipped {e}"));
            }
            Err(e) => {
                flush(&mut pending, &mut committed, &mut written)?;
                return Err(e);
            }
        }
        if pending.len() >= batch {
            flush(&mut pending, &mut committed, &mut written)?;
        }
    }
    flush(&mut pending, &mut committed, &mut written)?;
    bar.finish_and_clear();
    if json {
        out(json!({"done": true, "committed": committed, "skipped": skipped}));
    } else {
        out(format!("ingested {committed} documents ({written} written, {} unchanged), skipped {skipped} bad lines", committed - written));
    }
    db.close()
}
