//! Reindex throughput against plain ingest, and query latency during a reindex against
//! an idle database, in one run; driven by `benches/reindex.sh`.
//!
//! Usage: `reindex_bench DOCS.jsonl QUERIES.jsonl N FROM TO THREADS OUT_DIR` (JSON Lines
//! with a `text` field). Prints one JSON object:
//! 1. plain ingest: N documents into a fresh database with TO, batches of 64;
//! 2. a database of the same documents with FROM; idle query latency over the queries;
//! 3. reindex FROM -> TO on THREADS threads (batches of 64), while the main thread sends
//!    a query every 100 ms (an interactive load) and times each.

use duetdb::{Db, Document};
use std::time::{Duration, Instant};

fn texts(p: &str) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect()
}

fn percentile(ms: &mut [f64], p: f64) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (docs, queries, n) = (texts(&a[1]), texts(&a[2]), a[3].parse::<usize>().unwrap());
    let (from, to, threads, out) = (&a[4], &a[5], a[6].parse::<usize>().unwrap(), std::path::Path::new(&a[7]));
    let docs: Vec<Document> = docs.into_iter().take(n).enumerate().map(|(i, t)| Document::new(i.to_string(), t)).collect();
    let time_query = |db: &Db, q: &str| {
        let t = Instant::now();
        db.query(q).limit(10).run().unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };

    // 1. Plain ingest with the target embedder.
    let path = out.join("ingest.duet");
    let _ = std::fs::remove_dir_all(&path);
    let db = Db::options().embedder_spec(to.as_str()).open(&path).unwrap();
    db.ingest_batch(&docs[..1]).unwrap(); // loads the model outside the timing
    let t = Instant::now();
    for chunk in docs[1..].chunks(64) {
        db.ingest_batch(chunk).unwrap();
    }
    let ingest_per_s = (docs.len() - 1) as f64 / t.elapsed().as_secs_f64();
    drop(db);
    eprintln!("ingest with {to}: {ingest_per_s:.2} documents/s");

    // 2. The database to move, and its idle latency.
    let path = out.join("reindex.duet");
    let _ = std::fs::remove_dir_all(&path);
    let db = Db::options().embedder_spec(from.as_str()).open(&path).unwrap();
    db.ingest(docs.clone()).unwrap();
    time_query(&db, &queries[0]);
    let mut idle: Vec<f64> = queries.iter().map(|q| time_query(&db, q)).collect();

    // 3. Reindex while queries keep coming.
    let target = duetdb::embed::from_spec(to).unwrap();
    target.embed(&["warm-up"], duetdb::Kind::Passage).unwrap();
    let (reindex_s, mut busy) = std::thread::scope(|s| {
        let job = s.spawn(|| {
            let t = Instant::now();
            db.reindex(target.clone()).unwrap().threads(threads).batch_size(64).run_to_completion().unwrap();
            t.elapsed().as_secs_f64()
        });
        let mut busy = Vec::new();
        let mut i = 0;
        while !job.is_finished() {
            let t = Instant::now();
            busy.push(time_query(&db, &queries[i % queries.len()]));
            i += 1;
            std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
        }
        (job.join().unwrap(), busy)
    });
    let reindex_per_s = docs.len() as f64 / reindex_s;
    let (idle50, idle99, busy50, busy99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99), percentile(&mut busy, 0.5), percentile(&mut busy, 0.99));
    println!(
        "{}",
        serde_json::json!({
            "docs": docs.len(), "from": from, "to": to, "threads": threads,
            "ingest_docs_per_s": ingest_per_s, "reindex_docs_per_s": reindex_per_s, "throughput_ratio": reindex_per_s / ingest_per_s,
            "idle_p50_ms": idle50, "idle_p99_ms": idle99, "busy_p50_ms": busy50, "busy_p99_ms": busy99,
            "busy_queries": busy.len(), "p99_ratio": busy99 / idle99,
        })
    );
}
