//! Reachability and recall on duplicate-heavy data (issue 31): a database of Debian
//! descriptions (from fixtures/) plus `D` exact duplicates (one text under `D` ids) and
//! `D` near duplicates (a shared 56-word text with one differing word inserted). Reports,
//! at the default ef:
//! - exact duplicates returned for their text with k = D (k covers the ties);
//! - near duplicates that are their own first hit for their exact text;
//! - recall@10 against exact (brute-force) search for 500 queries: texts of the
//!   duplicates and of the other documents, embedded as queries.
//!
//! Usage: `$(benches/driver.sh reachability) [SPEC] [D] [FILLER]` (defaults: hash, 1000,
//! 4000). The database is reopened before measuring, so every row is in the graph.

use duetdb::{Db, Document, Kind, Mode};
use std::collections::HashSet;

fn main() {
    let a: Vec<String> = std::env::args().filter(|x| x != "--bench").collect();
    let spec = a.get(1).cloned().unwrap_or_else(|| "hash".into());
    let d: usize = a.get(2).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let filler: usize = a.get(3).and_then(|v| v.parse().ok()).unwrap_or(4000);
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/debian-sample.jsonl")).unwrap();
    let base: Vec<Document> = sample.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut rng = fastrand::Rng::with_seed(31);
    let exact_text = base[0].text.clone();
    let shared: Vec<String> = base[1].text.split_whitespace().take(56).map(String::from).collect();
    let mut docs: Vec<Document> = (0..d).map(|i| Document::new(format!("dup{i}"), exact_text.clone())).collect();
    let near: Vec<Document> = (0..d)
        .map(|i| {
            let mut w = shared.clone();
            w.insert(rng.usize(..w.len()), format!("variant{i}"));
            Document::new(format!("near{i}"), w.join(" "))
        })
        .collect();
    docs.extend(near.iter().cloned());
    docs.extend((0..filler).map(|i| {
        // base[0] and base[1] made the duplicates: the filler starts after them.
        let b = &base[2 + i % (base.len() - 2)];
        Document::new(format!("f{i}"), if i < base.len() - 2 { b.text.clone() } else { format!("{} ({i})", b.text) })
    }));
    rng.shuffle(&mut docs);
    let dir = std::env::temp_dir().join(format!("duetdb-reach-{}", std::process::id()));
    let t = std::time::Instant::now();
    let db = Db::options().embedder_spec(spec.as_str()).open(&dir).unwrap();
    db.ingest(docs.clone()).unwrap();
    db.close().unwrap();
    let db = Db::options().create_if_missing(false).open(&dir).unwrap();
    eprintln!("{} documents ingested with {spec} in {:.1} s", docs.len(), t.elapsed().as_secs_f64());

    let hits = db.query(&exact_text).mode(Mode::Vector).limit(d).run().unwrap();
    let dups = hits.iter().filter(|h| h.id.starts_with("dup")).count();

    let e = db.embedder().unwrap();
    let near_texts: Vec<&str> = near.iter().map(|n| n.text.as_str()).collect();
    let near_q = e.embed(&near_texts, Kind::Query).unwrap();
    let own_first =
        near.iter().zip(&near_q).filter(|(n, q)| db.query("").vector((*q).clone()).mode(Mode::Vector).limit(1).run().unwrap()[0].id == n.id).count();

    // Recall@10 against brute force over the stored vectors.
    let stored: Vec<(String, Vec<f32>)> = db.export(None).unwrap().map(|r| r.unwrap()).map(|(doc, v)| (doc.id, v)).collect();
    let mut picks: Vec<&Document> = near.iter().step_by((d / 100).max(1)).take(100).collect();
    picks.extend(docs.iter().filter(|x| x.id.starts_with('f')).step_by((filler / 400).max(1)).take(400));
    let q_texts: Vec<&str> = picks.iter().map(|p| p.text.as_str()).collect();
    let qs = e.embed(&q_texts, Kind::Query).unwrap();
    let (mut got, mut want) = (0usize, 0usize);
    for q in &qs {
        let mut scored: Vec<(f32, &str)> = stored.iter().map(|(id, v)| (duetdb::index::dot(q, v), id.as_str())).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Ties at the 10th score: any of them is a right answer.
        let tenth = scored[9.min(scored.len() - 1)].0;
        let truth: HashSet<&str> = scored.iter().take_while(|s| s.0 >= tenth).map(|s| s.1).collect();
        let found = db.query("").vector(q.clone()).mode(Mode::Vector).limit(10).run().unwrap();
        got += found.iter().filter(|h| truth.contains(h.id.as_str())).count();
        want += 10;
    }
    println!(
        "{}",
        serde_json::json!({
            "embedder": spec, "documents": docs.len(),
            "exact_duplicates": d, "exact_duplicates_returned_at_k": dups,
            "near_duplicates": d, "near_duplicates_own_first_hit": own_first,
            "recall_at_10_vs_exact": got as f64 / want as f64, "queries": qs.len(),
        })
    );
    db.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
