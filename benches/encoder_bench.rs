//! Embedding throughput of one built-in embedder alone (no database): the texts of a
//! JSON Lines file embedded as passages, in calls of BATCH texts as `ingest` makes them.
//! Driven by `benches/minilm.sh`.
//!
//! Usage: `encoder_bench TEXTS.jsonl SPEC [BATCH=256] [REPEAT=1]`; prints one JSON line:
//! `{"spec", "docs", "seconds", "docs_per_s"}` (the best of REPEAT runs, after a warm-up
//! call on the first batch).

use duetdb::embed::Kind;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let texts: Vec<String> = std::fs::read_to_string(&a[1])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let spec = &a[2];
    let batch: usize = a.get(3).map_or(256, |s| s.parse().unwrap());
    let repeat: usize = a.get(4).map_or(1, |s| s.parse().unwrap());
    let e = duetdb::embed::from_spec(spec).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed(&refs[..batch.min(refs.len()).min(32)], Kind::Passage).unwrap();
    let best = (0..repeat)
        .map(|_| {
            let t = Instant::now();
            for chunk in refs.chunks(batch) {
                e.embed(chunk, Kind::Passage).unwrap();
            }
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    println!("{}", serde_json::json!({"spec": spec, "docs": refs.len(), "seconds": best, "docs_per_s": refs.len() as f64 / best}));
}
