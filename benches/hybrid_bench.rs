//! Cost of the full-text index and of each query mode; driven by `benches/hybrid.sh`.
//!
//! Usage: `hybrid_bench DOCS.jsonl QUERIES.jsonl N SPEC OUT_DIR` (JSON Lines with a `text`
//! field). Ingests N documents twice into fresh databases, without and with the
//! full-text index (documents/s, batches of 256), reports the index's size on disk, then
//! times every query end to end in `vector`, `text` and `hybrid` modes (p50 and p99, ms).

use duetdb::{Db, Document, Mode};
use std::time::Instant;

fn texts(p: &str) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect()
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| rd.flatten().map(|e| if e.path().is_dir() { dir_size(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) }).sum())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (docs, queries, n, spec, out) = (texts(&a[1]), texts(&a[2]), a[3].parse::<usize>().unwrap(), &a[4], std::path::Path::new(&a[5]));
    let docs: Vec<Document> = docs.into_iter().take(n).enumerate().map(|(i, t)| Document::new(i.to_string(), t)).collect();
    let mut result = serde_json::json!({"docs": docs.len(), "embedder": spec});
    for full_text in [false, true] {
        let path = out.join(format!("hybrid-{n}-{full_text}.duet"));
        let _ = std::fs::remove_dir_all(&path);
        let db = Db::options().embedder_spec(spec.as_str()).full_text(full_text).open(&path).unwrap();
        let t = Instant::now();
        for chunk in docs.chunks(256) {
            db.ingest_batch(chunk).unwrap();
        }
        let per_s = docs.len() as f64 / t.elapsed().as_secs_f64();
        result[if full_text { "ingest_docs_per_s_with_fulltext" } else { "ingest_docs_per_s_without" }] = per_s.into();
        eprintln!("{n} documents, full text {full_text}: {per_s:.0} documents/s");
        if !full_text {
            continue;
        }
        db.flush().unwrap();
        result["fulltext_bytes"] = dir_size(&path.join("fulltext")).into();
        result["database_bytes"] = dir_size(&path).into();
        for mode in [Mode::Vector, Mode::Text, Mode::Hybrid] {
            db.query(&queries[0]).mode(mode).run().unwrap();
            let mut ms: Vec<f64> = queries
                .iter()
                .map(|q| {
                    let t = Instant::now();
                    db.query(q).mode(mode).limit(10).run().unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            ms.sort_by(f64::total_cmp);
            let pick = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
            result[format!("{}_p50_ms", mode.name())] = pick(0.5).into();
            result[format!("{}_p99_ms", mode.name())] = pick(0.99).into();
        }
    }
    println!("{result}");
}
