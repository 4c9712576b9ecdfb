//! ANN benchmark of duetdb's graph on real vectors of real text; driven by
//! `benches/ann.sh`, which runs hnswlib on the same vectors in the same run.
//!
//! Usage: `ann_bench BASE.jsonl QUERIES.jsonl OUT_DIR [M] [EF_CONSTRUCTION]`
//! (JSON Lines of `{"id", "text"}`). Embeds both with the `hash` embedder, writes the
//! vectors and the exact top-10 as raw files for the anchor, then measures: graph
//! build, recall@10 and single-thread QPS at several ef, and the same data through the
//! database (ingest, close, open time, and whether open rebuilt the graph).

use duetdb::embed::{Embedder, HashEmbedder, Kind};
use duetdb::index::{dot, Graph, GraphParams};
use duetdb::store::VectorFile;
use duetdb::{Db, Document};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn read_jsonl(p: &str) -> Vec<Document> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for r in rows {
        for x in r {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (base_p, query_p, out) = (&args[1], &args[2], Path::new(&args[3]));
    let m: usize = args.get(4).map_or(16, |s| s.parse().unwrap());
    let efc: usize = args.get(5).map_or(200, |s| s.parse().unwrap());
    let efs = [10usize, 16, 32, 64, 128, 256, 512, 1024];
    std::fs::create_dir_all(out).unwrap();
    let base_docs = read_jsonl(base_p);
    let queries_docs = read_jsonl(query_p);
    let e = HashEmbedder::default();
    let t = Instant::now();
    let texts: Vec<&str> = base_docs.iter().map(|d| d.text.as_str()).collect();
    let base = e.embed(&texts, Kind::Passage).unwrap();
    let qtexts: Vec<&str> = queries_docs.iter().map(|d| d.text.as_str()).collect();
    let queries = e.embed(&qtexts, Kind::Query).unwrap();
    eprintln!("embedded {} + {} texts in {:.1}s", base.len(), queries.len(), t.elapsed().as_secs_f64());
    write_f32(&out.join("base.f32"), &base);
    write_f32(&out.join("queries.f32"), &queries);

    // Exact top-10 by brute force.
    let gt: Vec<Vec<usize>> = queries
        .par_iter()
        .map(|q| {
            let mut s: Vec<(f32, usize)> = base.iter().enumerate().map(|(i, b)| (dot(q, b), i)).collect();
            s.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
            let mut top: Vec<(f32, usize)> = s[..10].to_vec();
            top.sort_by(|a, b| b.0.total_cmp(&a.0));
            top.into_iter().map(|x| x.1).collect()
        })
        .collect();
    let mut f = std::fs::File::create(out.join("gt.i32")).unwrap();
    for g in &gt {
        for &i in g {
            f.write_all(&(i as i32).to_le_bytes()).unwrap();
        }
    }

    // The index layer alone, on the same vectors hnswlib gets.
    let vpath = out.join("graph-bench.vec");
    let _ = std::fs::remove_file(&vpath);
    let mut vf = VectorFile::create(&vpath, e.dim(), 1).unwrap();
    let rows: Vec<(u64, &[f32])> = base.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())).collect();
    vf.write_pending(&rows).unwrap();
    vf.commit(base.len() as u64);
    let view = vf.view().unwrap();
    let t = Instant::now();
    let g = Graph::new(GraphParams { m, ef_construction: efc }, base.len()).unwrap();
    g.insert_rows(&view, &(0..base.len()).collect::<Vec<_>>());
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("graph build {build_s:.1}s");
    let mut curve = Vec::new();
    for &ef in &efs {
        let mut recall = 0.0;
        let times: Vec<f64> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let mut found = 0;
                for (q, truth) in queries.iter().zip(&gt) {
                    let hits = g.search(q, 10, ef, None);
                    found += hits.iter().filter(|h| truth.contains(&h.row)).count();
                }
                recall = found as f64 / (10 * queries.len()) as f64;
                t.elapsed().as_secs_f64()
            })
            .collect();
        let qps = queries.len() as f64 / median(times);
        eprintln!("ef {ef:4}: recall@10 {recall:.4}  QPS {qps:.0}");
        curve.push(serde_json::json!({"ef": ef, "recall10": recall, "qps": qps}));
    }
    drop(g);

    // The same rows through the database: ingest, close, open.
    let dbp = out.join("bench.duet");
    let _ = std::fs::remove_dir_all(&dbp);
    let t = Instant::now();
    let db = Db::options().embedder_spec("hash").graph_params(GraphParams { m, ef_construction: efc }).open(&dbp).unwrap();
    for chunk in base_docs.chunks(1000) {
        db.ingest_batch(chunk).unwrap();
    }
    let ingest_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    db.close().unwrap();
    let close_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let db = Db::open(&dbp).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let st = db.stats().unwrap();
    let rebuilt = st.snapshot_rows != st.vector_rows;
    let t = Instant::now();
    for q in &queries {
        let _ = db.query("").vector(q.clone()).limit(10).ef(64).run().unwrap();
    }
    let db_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
    eprintln!("db: ingest {ingest_s:.1}s, close {close_s:.1}s, open {open_s:.2}s (graph rebuilt on open: {rebuilt}), query QPS at ef 64 {db_qps:.0}");
    println!(
        "{}",
        serde_json::json!({
            "n": base.len(), "queries": queries.len(), "dim": e.dim(), "m": m, "ef_construction": efc,
            "build_s": build_s, "curve": curve,
            "db": {"ingest_s": ingest_s, "close_s": close_s, "open_s": open_s, "open_rebuilt_graph": rebuilt,
                   "graph_points": st.graph_points, "bytes_on_disk": st.bytes_on_disk, "query_qps_ef64": db_qps}
        })
    );
}
