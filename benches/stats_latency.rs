//! `stats` and `len` latency from another thread while one thread ingests: they read what
//! the last commit published and never wait for the writer (issue 31's goal: `stats` p99
//! under 10 ms during a 20k-document ingest).
//!
//! Usage: `$(benches/driver.sh stats_latency) [N] [SPEC]` (defaults: 20000 documents of the
//! Debian sample in fixtures/, repeated under new ids, and the `hash` embedder).

use duetdb::{Db, Document};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a: Vec<String> = std::env::args().filter(|x| x != "--bench").collect();
    let n: usize = a.get(1).and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let spec = a.get(2).cloned().unwrap_or_else(|| "hash".into());
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/debian-sample.jsonl")).unwrap();
    let base: Vec<Document> = sample.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            let d = &base[i % base.len()];
            Document::new(format!("{}-{i}", d.id), format!("{} ({i})", d.text))
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("duetdb-stats-latency-{}", std::process::id()));
    let db = Arc::new(Db::options().embedder_spec(spec.as_str()).open(&dir).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            db.ingest(docs).unwrap();
            done.store(true, Ordering::SeqCst);
            t.elapsed()
        })
    };
    let (mut stats, mut len) = (Vec::new(), Vec::new());
    while !done.load(Ordering::SeqCst) {
        let t = Instant::now();
        let s = db.stats().unwrap();
        stats.push(t.elapsed());
        let t = Instant::now();
        let l = db.len();
        len.push(t.elapsed());
        assert!(l as u64 >= s.documents || l as u64 + 256 >= s.documents);
        std::thread::sleep(Duration::from_millis(2));
    }
    let ingest = writer.join().unwrap();
    stats.sort();
    len.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{n} documents ingested in {:.1} s with `{spec}`; during it, {} calls each: stats p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; len p50 {:.4} ms, p99 {:.4} ms",
        ingest.as_secs_f64(),
        stats.len(),
        ms(percentile(&stats, 0.5)),
        ms(percentile(&stats, 0.99)),
        ms(*stats.last().unwrap()),
        ms(percentile(&len, 0.5)),
        ms(percentile(&len, 0.99)),
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
