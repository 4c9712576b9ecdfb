//! Filtered vector search (issue 31): recall@10 against exact filtered search, and
//! queries per second, for filters that match 50%, 10% and 1% of the documents.
//!
//! Documents: `bench-out/ann/base.jsonl` (written by benches/ann.sh: Debian descriptions
//! and summaries), each with `{"bucket": i % 100, "parity": "even"|"odd"}` as metadata;
//! queries: `bench-out/ann/queries.jsonl`. `hash` embedder, default ef.
//!
//! Usage: `$(benches/driver.sh filter_bench) [N] [QUERIES] [EF,EF,...]` (defaults 100000, 200, the
//! query default of 64). The timing excludes building the ground truth.

use duetdb::{Db, Document, Filter, Kind, Mode};
use std::collections::HashSet;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().filter(|x| x != "--bench").collect();
    let n: usize = a.get(1).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let nq: usize = a.get(2).and_then(|v| v.parse().ok()).unwrap_or(200);
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(format!("{root}/bench-out/ann/{f}"))
            .expect("run benches/ann.sh first")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let base = read("base.jsonl");
    let queries: Vec<String> = read("queries.jsonl").iter().take(nq).map(|q| q["text"].as_str().unwrap().to_string()).collect();
    let docs: Vec<Document> = base
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, r)| {
            Document::new(format!("{i}"), r["text"].as_str().unwrap())
                .with_metadata(serde_json::json!({"bucket": i % 100, "parity": if i % 2 == 0 { "even" } else { "odd" }}))
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("duetdb-filter-{}", std::process::id()));
    let t = Instant::now();
    let db = Db::options().embedder_spec("hash").open(&dir).unwrap();
    db.ingest(docs).unwrap();
    db.close().unwrap();
    let db = Db::options().create_if_missing(false).open(&dir).unwrap();
    eprintln!("{n} documents in {:.1} s", t.elapsed().as_secs_f64());
    let stored: Vec<(String, serde_json::Value, Vec<f32>)> = db.export(None).unwrap().map(|r| r.unwrap()).map(|(d, v)| (d.id, d.metadata, v)).collect();
    let e = db.embedder().unwrap();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let qv = e.embed(&refs, Kind::Query).unwrap();
    let cases = [
        ("50%", "parity = even"),
        ("10%", "bucket < 10"),
        ("1%", "bucket = 42"),
        ("1%, compound", "bucket in (7, 8) and parity = odd"),
        ("1%, a range", "bucket >= 30.5 and bucket < 31.5"),
    ];
    // The first filtered query builds the metadata cache: timed on its own.
    let t = Instant::now();
    db.query("").vector(qv[0].clone()).mode(Mode::Vector).matching(Filter::exists("bucket")).run().unwrap();
    println!("{}", serde_json::json!({"metadata_cache_build_ms": t.elapsed().as_secs_f64() * 1000.0}));
    let efs: Vec<Option<usize>> = a.get(3).map_or(vec![None], |v| v.split(',').map(|e| e.parse().ok()).collect());
    for ef in efs {
        for (name, expr) in cases {
            let f = Filter::parse(expr).unwrap();
            let matching: Vec<&(String, serde_json::Value, Vec<f32>)> = stored.iter().filter(|(_, m, _)| f.matches(m)).collect();
            let (mut got, mut want) = (0, 0);
            let t = Instant::now();
            let mut results = Vec::new();
            for q in &qv {
                let mut query = db.query("").vector(q.clone()).mode(Mode::Vector).limit(10).matching(f.clone());
                if let Some(ef) = ef {
                    query = query.ef(ef);
                }
                results.push(query.run().unwrap());
            }
            let qps = qv.len() as f64 / t.elapsed().as_secs_f64();
            for (q, hits) in qv.iter().zip(&results) {
                let mut s: Vec<(f32, &str)> = matching.iter().map(|(id, _, v)| (duetdb::index::dot(q, v), id.as_str())).collect();
                s.sort_by(|a, b| b.0.total_cmp(&a.0));
                let k = 10.min(s.len());
                if k == 0 {
                    continue;
                }
                let tenth = s[k - 1].0;
                let truth: HashSet<&str> = s.iter().take_while(|x| x.0 >= tenth).map(|x| x.1).collect();
                got += hits.iter().filter(|h| truth.contains(h.id.as_str())).count();
                want += k;
            }
            let row = serde_json::json!({"filter": expr, "selectivity": name, "matching": matching.len(), "recall_at_10": got as f64 / want.max(1) as f64, "qps": qps});
            println!("{row}");
        }
        // The same queries without a filter, as the anchor for both figures.
        let t = Instant::now();
        let mut results = Vec::new();
        for q in &qv {
            let mut query = db.query("").vector(q.clone()).mode(Mode::Vector).limit(10);
            if let Some(ef) = ef {
                query = query.ef(ef);
            }
            results.push(query.run().unwrap());
        }
        let qps = qv.len() as f64 / t.elapsed().as_secs_f64();
        let (mut got, mut want) = (0, 0);
        for (q, hits) in qv.iter().zip(&results) {
            let mut s: Vec<(f32, &str)> = stored.iter().map(|(id, _, v)| (duetdb::index::dot(q, v), id.as_str())).collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: HashSet<&str> = s.iter().take_while(|x| x.0 >= s[9].0).map(|x| x.1).collect();
            got += hits.iter().filter(|h| truth.contains(h.id.as_str())).count();
            want += 10;
        }
        println!("{}", serde_json::json!({"filter": null, "ef": ef.unwrap_or(64), "recall_at_10": got as f64 / want as f64, "qps": qps}));
    }
    db.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
