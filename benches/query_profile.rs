//! Latency of embedding one short query, the part of a database query that dominates
//! with a model embedder (`benches/embedder.sh` times whole queries on a database).
//!
//! Usage: `query_profile [SPEC] [N] [QUERIES.jsonl]` (default `default`, 200, four
//! Debian-style summaries): prints p10/p50/p90 in
//! milliseconds over N queries, after one warm-up query (which also computes the
//! cached soft prompt).

use duetdb::embed::{from_spec, Kind};
use std::time::Instant;

fn main() -> duetdb::Result<()> {
    let mut args = std::env::args().skip(1);
    let spec = args.next().unwrap_or_else(|| "default".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200).max(1);
    let e = from_spec(&spec)?;
    // Debian-style summaries: 4-8 words, like the dev split's queries; or a JSON Lines
    // file's `text` fields (`benches/embedder.sh`'s queries.jsonl).
    let queries: Vec<String> = match args.next() {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| duetdb::Error::io(std::path::Path::new(&path), e))?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["text"].as_str().map(String::from))
            .collect(),
        None => ["python library for parsing YAML files", "GNU C compiler", "tools for managing ext4 filesystems", "fonts for Chinese text"]
            .map(String::from)
            .to_vec(),
    };
    e.embed(&[queries[0].as_str()], Kind::Query)?;
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        e.embed(&[queries[i % queries.len()].as_str()], Kind::Query)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((n - 1) as f64 * p).round() as usize];
    println!("{spec}: {n} queries, p10 {:.1} ms, p50 {:.1} ms, p90 {:.1} ms", pct(0.1), pct(0.5), pct(0.9));
    Ok(())
}
