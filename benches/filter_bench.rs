//! Filtered vector search (issue 31): recall@10 against exact filtered search, and
//! queries per second, for filters that match 50%, 10% and 1% of the documents.
//!
//! Documents: `bench-out/ann/base.jsonl` (written by benches/ann.sh: Debian descriptions
//! and summaries), each with `{"bucket": i % 100, "parity": "even"|"odd"}` as metadata;
//! queries: `bench-out/ann/queries.jsonl`. `hash` embedder, default ef.
//!
//! Usage: `$(benches/driver.sh filter_bench) [N] [QUERIES]` (defaults 100000, 200).

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
        ("1% (or of ranges)", "bucket < 1 or (bucket >= 50 and bucket < 50.5)"),
        ("0.1% of the graph, compound", "bucket in (7, 8) and parity = odd and not bucket = 7"),
    ];
    let mut rows = Vec::new();
    for (name, expr) in cases {
        let f = Filter::parse(expr).unwrap();
        let matching: Vec<&(String, serde_json::Value, Vec<f32>)> = stored.iter().filter(|(_, m, _)| f.matches(m)).collect();
        let (mut got, mut want) = (0, 0);
        let t = Instant::now();
        let mut results = Vec::new();
        for q in &qv {
            results.push(db.query("").vector(q.clone()).mode(Mode::Vector).limit(10).matching(f.clone()).run().unwrap());
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
        let row =
            serde_json::json!({"filter": expr, "selectivity": name, "matching": matching.len(), "recall_at_10": got as f64 / want.max(1) as f64, "qps": qps});
        println!("{row}");
        rows.push(row);
    }
    let t = Instant::now();
    for q in &qv {
        db.query("").vector(q.clone()).mode(Mode::Vector).limit(10).run().unwrap();
    }
    println!("{}", serde_json::json!({"filter": null, "qps": qv.len() as f64 / t.elapsed().as_secs_f64()}));
    db.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
