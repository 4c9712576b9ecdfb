//! Measures pseudo-relevance feedback for hybrid search on a database built by `duetdb
//! eval --db` (documents with ids `0..n`, the relevant one for query `i` being `i`): the
//! first fused ranking's top documents move the query vector towards them (Rocchio) and
//! add their most distinctive words to the BM25 query, then both rankings run again and
//! are fused. Every setting of a grid is scored by MRR@10, beside plain weighted fusion.
//!
//! Usage: `feedback_tune PAIRS.jsonl QUERY_FIELD DOC_FIELD DB [N]`. Query vectors are
//! embedded once and kept in `DB/../feedback-queries.f32` (delete it after changing the
//! embedder). Vector rankings here are exact (dot products over every stored vector), so
//! the figures are the fusion's own, not the graph's. With `FEATURE_DUMP=FILE` it writes
//! each query's candidates (`[id, cosine, BM25 score or null]`) instead, for
//! `benches/fusion_learned.py`.

use duetdb::db::{fuse, Fusion};
use duetdb::embed::Kind;
use duetdb::{Db, Mode};
use std::collections::{HashMap, HashSet};

const STOP: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the",
    "their", "then", "there", "these", "they", "this", "to", "was", "will", "with", "can", "from", "which", "you", "your", "its", "also", "has", "have",
    "package", "contains", "provides", "this", "used", "using", "use", "support", "files", "file",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 1).map(|w| w.to_lowercase()).filter(|w| !STOP.contains(&w.as_str())).collect()
}

fn rr(ranked: &[usize], want: usize) -> f64 {
    ranked.iter().take(10).position(|&d| d == want).map_or(0.0, |p| 1.0 / (p + 1) as f64)
}

/// One ranking: (document id, score), best first.
type Ranking = Vec<(usize, f32)>;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(5).map_or(usize::MAX, |s| s.parse().unwrap());
    let pairs: Vec<(String, String)> = std::fs::read_to_string(&a[1])
        .unwrap()
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v[&a[2]].as_str().unwrap().trim().to_string(), v[&a[3]].as_str().unwrap().trim().to_string())
        })
        .collect();
    let n = pairs.len();
    let db = Db::options().create_if_missing(false).open(&a[4]).unwrap();
    let dim = db.dimension();
    let docs: Vec<Vec<f32>> = (0..n).map(|i| db.vector(&i.to_string()).unwrap().expect("document i")).collect();
    let cache = std::path::Path::new(&a[4]).with_extension("feedback-queries.f32");
    let queries: Vec<Vec<f32>> = match std::fs::read(&cache) {
        Ok(b) if b.len() == n * dim * 4 => {
            b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>().chunks(dim).map(|c| c.to_vec()).collect()
        }
        _ => {
            let e = db.embedder().unwrap();
            let t = std::time::Instant::now();
            let mut out = Vec::with_capacity(n);
            for chunk in pairs.chunks(32) {
                let texts: Vec<&str> = chunk.iter().map(|p| p.0.as_str()).collect();
                out.extend(e.embed(&texts, Kind::Query).unwrap());
            }
            eprintln!("{n} queries embedded in {:.0} s", t.elapsed().as_secs_f64());
            std::fs::write(&cache, out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
            out
        }
    };
    let exact = |q: &[f32]| -> Vec<(usize, f32)> {
        let mut s: Vec<(usize, f32)> = docs.iter().enumerate().map(|(i, d)| (i, d.iter().zip(q).map(|(a, b)| a * b).sum())).collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.truncate(100);
        s
    };
    let text = |q: &str| -> Vec<(usize, f32)> {
        match db.query(q).mode(Mode::Text).limit(100).run() {
            Ok(h) => h.into_iter().map(|h| (h.id.parse::<usize>().unwrap(), h.score)).collect(),
            Err(_) => Vec::new(),
        }
    };
    // Document frequencies and each document's words, for choosing expansion terms.
    let doc_words: Vec<Vec<String>> = pairs.iter().map(|p| words(&p.1)).collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for w in &doc_words {
        for t in w.iter().map(String::as_str).collect::<HashSet<_>>() {
            *df.entry(t).or_default() += 1;
        }
    }
    let idf = |t: &str| ((n as f64 + 1.0) / (*df.get(t).unwrap_or(&0) as f64 + 0.5)).ln();
    let t0 = std::time::Instant::now();
    let base: Vec<(Ranking, Ranking)> = pairs.iter().zip(&queries).map(|(p, q)| (exact(q), text(&p.0))).collect();
    eprintln!("first rankings in {:.0} s", t0.elapsed().as_secs_f64());
    if let Ok(path) = std::env::var("FEATURE_DUMP") {
        // Every candidate of either ranking with its exact cosine and its BM25 score (null
        // when BM25 did not return it), for trying learned fusions offline.
        let lines: Vec<String> = base
            .iter()
            .zip(&queries)
            .map(|((v, t), q)| {
                let bm: HashMap<usize, f32> = t.iter().copied().collect();
                let mut ids: Vec<usize> = v.iter().map(|x| x.0).chain(t.iter().map(|x| x.0)).collect();
                ids.sort();
                ids.dedup();
                let c: Vec<serde_json::Value> =
                    ids.iter().map(|&d| serde_json::json!([d, docs[d].iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), bm.get(&d)])).collect();
                serde_json::json!({ "c": c }).to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        return;
    }
    let ids = |f: Vec<duetdb::db::Fused>| f.into_iter().map(|x| x.row).collect::<Vec<_>>();
    let mrr_of = |ranked: &[Vec<usize>]| ranked.iter().enumerate().map(|(i, r)| rr(r, i)).sum::<f64>() / n as f64;
    let vmrr = mrr_of(&base.iter().map(|b| b.0.iter().map(|x| x.0).collect()).collect::<Vec<_>>());
    let tmrr = mrr_of(&base.iter().map(|b| b.1.iter().map(|x| x.0).collect()).collect::<Vec<_>>());
    println!("{}", serde_json::json!({"vector": vmrr, "text": tmrr}));
    for vw in [0.45, 0.5, 0.55, 0.6] {
        let m = mrr_of(&base.iter().map(|(v, t)| ids(fuse(v, t, Fusion::Weighted { vector_weight: vw }))).collect::<Vec<_>>());
        println!("{}", serde_json::json!({"plain_weighted": vw, "mrr10": m}));
    }
    let first: Vec<Vec<usize>> = base.iter().map(|(v, t)| ids(fuse(v, t, Fusion::Weighted { vector_weight: 0.55 }))).collect();
    let mut best = (0.0, String::new());
    for m in [1usize, 2, 3, 5] {
        for terms in [0usize, 5, 10, 20] {
            for repeat in [1usize, 2, 4] {
                if terms == 0 && repeat > 1 {
                    continue;
                }
                // Expanded BM25 rankings for this (m, terms, repeat).
                let texts: Vec<Vec<(usize, f32)>> = pairs
                    .iter()
                    .zip(&first)
                    .zip(&base)
                    .map(|((p, f), b)| {
                        if terms == 0 {
                            return b.1.clone();
                        }
                        let have: HashSet<String> = words(&p.0).into_iter().collect();
                        let mut score: HashMap<&str, f64> = HashMap::new();
                        for &d in f.iter().take(m) {
                            let len = doc_words[d].len().max(1) as f64;
                            for w in &doc_words[d] {
                                if !have.contains(w) {
                                    *score.entry(w.as_str()).or_default() += idf(w) / len;
                                }
                            }
                        }
                        let mut s: Vec<(&str, f64)> = score.into_iter().collect();
                        s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
                        let mut q = vec![p.0.as_str(); repeat].join(" ");
                        for (w, _) in s.iter().take(terms) {
                            q.push(' ');
                            q.push_str(w);
                        }
                        text(&q)
                    })
                    .collect();
                for gamma in [0.0f32, 0.25, 0.5, 1.0] {
                    let vecs: Vec<Vec<(usize, f32)>> = queries
                        .iter()
                        .zip(&first)
                        .zip(&base)
                        .map(|((q, f), b)| {
                            if gamma == 0.0 {
                                return b.0.clone();
                            }
                            let mut v = q.clone();
                            for &d in f.iter().take(m) {
                                v.iter_mut().zip(&docs[d]).for_each(|(x, y)| *x += gamma / m as f32 * y);
                            }
                            duetdb::embed::normalize(&mut v);
                            exact(&v)
                        })
                        .collect();
                    for vw in [0.4, 0.5, 0.55, 0.6, 0.7] {
                        let ranked: Vec<Vec<usize>> = vecs.iter().zip(&texts).map(|(v, t)| ids(fuse(v, t, Fusion::Weighted { vector_weight: vw }))).collect();
                        let r = mrr_of(&ranked);
                        let tag = format!("m={m} terms={terms} repeat={repeat} gamma={gamma} vw={vw}");
                        if r > best.0 {
                            best = (r, tag.clone());
                        }
                        println!("{}", serde_json::json!({"feedback": tag, "mrr10": r}));
                    }
                }
            }
        }
    }
    println!("{}", serde_json::json!({"best": best.1, "mrr10": best.0}));
}
