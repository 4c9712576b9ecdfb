//! Ingest and query speed of a database with a model embedder; driven by
//! `benches/embedder.sh`.
//!
//! Usage: `embed_bench DOCS.jsonl QUERIES.jsonl N_DOCS SPEC OUT_DIR` (JSON Lines with a
//! `text` field). Ingests N_DOCS documents into a fresh database in batches of 64
//! (documents per second, embedding included), then times every query end to end
//! (embedding + search + fetch): p50 and p99 in milliseconds.
//!
//! `INGEST=stream` (the default) ingests as `Db::ingest` and `duetdb ingest` do, embedding
//! the next batch while the previous one commits (`Db::ingest_stream`); `INGEST=batches`
//! calls `Db::ingest_batch` one batch after the other, as before the pipeline;
//! `INGEST=none` opens the database a run before left in OUT_DIR as it is and only times
//! the queries (a 10,000-document database takes the default embedder 20 minutes).
//! Beside the whole query, the query's embedding alone is timed in the same loop.

use duetdb::{Db, Document};
use std::time::Instant;

fn texts(p: &str) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (docs, queries, n, spec, out) = (texts(&a[1]), texts(&a[2]), a[3].parse::<usize>().unwrap(), &a[4], std::path::Path::new(&a[5]));
    let path = out.join(format!("bench-{spec}.duet"));
    let ingest = std::env::var("INGEST").unwrap_or_else(|_| "stream".into());
    if ingest != "none" {
        let _ = std::fs::remove_dir_all(&path);
    }
    let t = Instant::now();
    let db = Db::options().embedder_spec(spec.as_str()).open(&path).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let docs: Vec<Document> =
        if ingest == "none" { Vec::new() } else { docs.into_iter().take(n).enumerate().map(|(i, t)| Document::new(i.to_string(), t)).collect() };
    let stream = ingest != "batches";
    let t = Instant::now();
    // A line per 1024 documents: long runs show where they are in the log.
    let report = |i: usize| {
        if (i + 1).is_multiple_of(16) {
            eprintln!("{spec}: {} documents in {:.0} s", (i + 1) * 64, t.elapsed().as_secs_f64());
        }
    };
    if stream {
        let batches = docs.chunks(64).enumerate().map(|(i, c)| Ok((i, c.to_vec())));
        db.ingest_stream(batches, |i, _, _| {
            report(i);
            Ok(())
        })
        .unwrap();
    } else {
        for (i, chunk) in docs.chunks(64).enumerate() {
            db.ingest_batch(chunk).unwrap();
            report(i);
        }
    }
    let docs_per_s = docs.len() as f64 / t.elapsed().as_secs_f64();
    let _ = db.query(&queries[0]).limit(10).run().unwrap(); // warm-up
    let embedder = db.embedder().unwrap();
    let (mut ms, mut embed_ms) = (Vec::new(), Vec::new());
    for q in &queries {
        let t = Instant::now();
        let _ = db.query(q).limit(10).run().unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let _ = embedder.embed(&[q.as_str()], duetdb::embed::Kind::Query).unwrap();
        embed_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    embed_ms.sort_by(f64::total_cmp);
    let at = |xs: &[f64], p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    let pct = |p: f64| at(&ms, p);
    eprintln!(
        "{spec}: load {load_s:.1}s; ingest {} docs at {docs_per_s:.1} docs/s; {} queries on {} documents p50 {:.1} ms p99 {:.1} ms (embedding alone p50 {:.1} ms)",
        docs.len(),
        ms.len(),
        db.len(),
        pct(0.5),
        pct(0.99),
        at(&embed_ms, 0.5)
    );
    println!(
        "{}",
        serde_json::json!({"spec": spec, "ingest": ingest, "docs": docs.len(), "docs_per_s": docs_per_s, "queries": ms.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "embed_p50_ms": at(&embed_ms, 0.5), "database_docs": db.len(), "load_s": load_s})
    );
    db.close().unwrap();
}
