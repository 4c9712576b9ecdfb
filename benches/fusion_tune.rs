//! Chooses hybrid fusion parameters on a database built by `duetdb eval --db` (documents
//! with ids `0..n`, the relevant one for query `i` being `i`): each query's vector and
//! BM25 rankings are computed once, then every fusion setting is scored offline.
//!
//! Usage: `fusion_tune PAIRS.jsonl QUERY_FIELD DB [N]`. Prints MRR@10 of each ranking
//! alone and of the best settings of RRF (k, text weight, candidates) and of weighted
//! fusion, one JSON object per line. With `FUSION_DUMP=FILE` it also writes each query's
//! two rankings (`LIMIT`, default 100, of each, as `[id, score]` pairs) as JSON Lines, for
//! trying other fusions offline.

use duetdb::db::{fuse, Fusion};
use duetdb::{Db, Mode};

fn mrr(ranked: &[Vec<usize>]) -> f64 {
    ranked.iter().enumerate().map(|(i, r)| r.iter().take(10).position(|&d| d == i).map_or(0.0, |p| 1.0 / (p + 1) as f64)).sum::<f64>() / ranked.len() as f64
}

/// One ranking: (document id, score), best first.
type Ranking = Vec<(usize, f32)>;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(4).map_or(usize::MAX, |s| s.parse().unwrap());
    let queries: Vec<String> = std::fs::read_to_string(&a[1])
        .unwrap()
        .lines()
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[&a[2]].as_str().unwrap().trim().to_string())
        .collect();
    let db = Db::options().create_if_missing(false).open(&a[3]).unwrap();
    let limit: usize = std::env::var("LIMIT").map_or(100, |s| s.parse().unwrap());
    let ranking = |q: &str, mode| -> Ranking {
        db.query(q).mode(mode).limit(limit).run().unwrap().into_iter().map(|h| (h.id.parse::<usize>().unwrap(), h.score)).collect()
    };
    let t = std::time::Instant::now();
    let mut lists: Vec<(Ranking, Ranking)> = queries.iter().map(|q| (ranking(q, Mode::Vector), ranking(q, Mode::Text))).collect();
    eprintln!("{} queries ranked in {:.0} s", lists.len(), t.elapsed().as_secs_f64());
    if let Ok(path) = std::env::var("FUSION_DUMP") {
        let lines: Vec<String> = lists.iter().map(|(v, t)| serde_json::json!({"v": v, "t": t}).to_string()).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    // The grid below (and the engine's default) fuses at most 100 candidates a ranking.
    for (v, t) in &mut lists {
        v.truncate(100);
        t.truncate(100);
    }
    let ids = |l: &[(usize, f32)]| l.iter().map(|x| x.0).collect::<Vec<_>>();
    println!(
        "{}",
        serde_json::json!({"vector": mrr(&lists.iter().map(|l| ids(&l.0)).collect::<Vec<_>>()), "text": mrr(&lists.iter().map(|l| ids(&l.1)).collect::<Vec<_>>())})
    );
    let score = |f: Fusion, c: usize| {
        mrr(&lists.iter().map(|(v, t)| fuse(&v[..c.min(v.len())], &t[..c.min(t.len())], f).iter().map(|x| x.row).collect()).collect::<Vec<_>>())
    };
    let mut best_rrf = (0.0, Fusion::default(), 0);
    for c in [10, 20, 50, 100] {
        for k in [1.0, 3.0, 10.0, 20.0, 40.0, 60.0, 100.0] {
            for tw in [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0] {
                let f = Fusion::Rrf { k, text_weight: tw };
                let m = score(f, c);
                if m > best_rrf.0 {
                    best_rrf = (m, f, c);
                }
            }
        }
    }
    let textbook = score(Fusion::Rrf { k: 60.0, text_weight: 1.0 }, 50);
    println!("{}", serde_json::json!({"rrf_textbook_k60_c50": textbook, "best_rrf": best_rrf.0, "fusion": best_rrf.1, "candidates": best_rrf.2}));
    let mut best_w = (0.0, 0.0, 0);
    for c in [10, 20, 50, 100] {
        for w in 0..=20 {
            let vw = w as f32 / 20.0;
            let m = score(Fusion::Weighted { vector_weight: vw }, c);
            if m > best_w.0 {
                best_w = (m, vw, c);
            }
        }
    }
    println!("{}", serde_json::json!({"best_weighted": best_w.0, "vector_weight": best_w.1, "candidates": best_w.2}));
}
