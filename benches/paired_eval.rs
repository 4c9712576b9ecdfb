//! Compares two databases built by `duetdb eval --db` on the same pairs (documents with
//! ids `0..n`, the relevant one for query `i` being `i`) query by query, ranked as
//! `duetdb eval` ranks them (its default fusion and candidates): MRR@10 of each,
//! their difference, and a paired bootstrap 95% interval of the difference (10,000
//! resamples of the queries, fixed seed), so that "A beats B" comes with its spread.
//!
//! Usage: `paired_eval PAIRS.jsonl QUERY_FIELD DB_A DB_B [vector|text|hybrid]`; prints
//! one JSON object.

use duetdb::{Db, Mode};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: paired_eval PAIRS.jsonl QUERY_FIELD DB_A DB_B [vector|text|hybrid]");
        std::process::exit(2);
    }
    let mode = match a.get(5).map_or("vector", String::as_str) {
        "text" => Mode::Text,
        "hybrid" => Mode::Hybrid,
        _ => Mode::Vector,
    };
    let queries: Vec<String> = std::fs::read_to_string(&a[1])
        .expect("pairs file")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")[&a[2]].as_str().expect("query field").trim().to_string())
        .collect();
    // Reciprocal rank at 10 of each query, in one database.
    let ranks = |path: &str| -> Vec<f64> {
        let db = Db::options().create_if_missing(false).open(path).expect("database");
        queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                // 100 candidates per ranking in hybrid mode, as `duetdb eval` asks for.
                let hits = db.query(q).mode(mode).candidates(100).limit(10).run().expect("query");
                hits.iter().position(|h| h.id == i.to_string()).map_or(0.0, |p| 1.0 / (p + 1) as f64)
            })
            .collect()
    };
    let (x, y) = (ranks(&a[3]), ranks(&a[4]));
    let n = x.len() as f64;
    let d: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut boot: Vec<f64> = (0..10_000).map(|_| (0..d.len()).map(|_| d[rng.usize(..d.len())]).sum::<f64>() / n).collect();
    boot.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "queries": x.len(), "mrr10_a": mean(&x), "mrr10_b": mean(&y), "difference": mean(&d),
            "ci95": [boot[250], boot[9749]], "a_better": d.iter().filter(|&&v| v > 0.0).count(), "b_better": d.iter().filter(|&&v| v < 0.0).count(),
        })
    );
}
