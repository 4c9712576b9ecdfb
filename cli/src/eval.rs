//! `duetdb eval`: retrieval quality of an embedder (and a ranking mode) on (query,
//! document) pairs, through a real database: every document ingested, every query run as
//! `duetdb query` runs it. Pairs and metrics are the library's (`duetdb::eval`), the same
//! the trainer reports.

use crate::args::RankArgs;
use crate::{out, progress};
use duetdb::eval::{read_pairs, Fields, RankMetrics};
use duetdb::{Document, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What `eval` measures and where: the pairs files and their fields, the embedder, and a
/// directory to keep the database in (a temporary one otherwise).
pub(crate) struct EvalArgs {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) query_field: String,
    pub(crate) doc_field: String,
    pub(crate) embedder: Option<String>,
    pub(crate) keep: Option<PathBuf>,
    pub(crate) limit: Option<usize>,
}

/// Runs one evaluation per file and prints its metrics and speeds (and, with several
/// files, each file's and their macro-average: every source weighs the same).
pub(crate) fn eval_cmd(a: EvalArgs, rank: RankArgs, json: bool) -> Result<()> {
    if let Some(l) = a.limit {
        // `--limit 0` evaluated one pair once; no pairs is no measurement.
        duetdb::limits::check("--limit", l, 1, usize::MAX)?;
    }
    if a.files.len() == 1 {
        let r = eval_file(&a, &a.files[0], a.keep.clone(), &rank)?;
        print_one(&r, json);
        return Ok(());
    }
    let mut names: Vec<String> = Vec::new();
    let mut results = serde_json::Map::new();
    for f in &a.files {
        let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if names.contains(&name) {
            return Err(duetdb::Error::invalid(format!("two files named `{name}`: sources are reported by file name")));
        }
        let keep = a.keep.as_ref().map(|k| k.join(&name));
        let r = eval_file(&a, f, keep, &rank)?;
        if !json {
            print_one(&r, false);
            out(format!("  ({})", f.display()));
        }
        names.push(name.clone());
        results.insert(name, r);
    }
    let mean = |k: &str| results.values().map(|r| r[k].as_f64().unwrap_or(f64::NAN)).sum::<f64>() / results.len() as f64;
    let (mrr, ndcg, r1, r10) = (mean("mrr10"), mean("ndcg10"), mean("recall1"), mean("recall10"));
    match json {
        true => out(json!({"sources": results, "macro": {"mrr10": mrr, "ndcg10": ndcg, "recall1": r1, "recall10": r10, "sources": names.len()}})),
        false => out(format!("macro-average over {} sources: MRR@10 {mrr:.4}  nDCG@10 {ndcg:.4}  Recall@1 {r1:.4}  Recall@10 {r10:.4}", names.len())),
    }
    Ok(())
}

/// One file's evaluation in a database at `keep` (a temporary one if `None`).
fn eval_file(a: &EvalArgs, file: &Path, keep: Option<PathBuf>, rank: &RankArgs) -> Result<Value> {
    let fields = Fields { query: a.query_field.clone(), doc: a.doc_field.clone(), group: None, domain: None };
    let (mut pairs, skipped) = read_pairs(file, &fields)?;
    if let Some(l) = a.limit {
        pairs.truncate(l);
    }
    let dir = keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("duetdb-eval-{}", std::process::id())));
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let result = (|| -> Result<Value> {
        let mut opts = crate::db_options()?;
        match &a.embedder {
            Some(s) => opts = opts.embedder_spec(s.as_str()),
            None if keep.is_none() || !dir.exists() => opts = opts.embedder_spec(duetdb::embed::DEFAULT_SPEC),
            None => {}
        }
        let db = opts.open(&dir)?;
        let embedder = db.embedder()?;
        let bar = progress::counter(pairs.len() as u64, "documents");
        let t = std::time::Instant::now();
        // The same pipeline as `duetdb ingest`: one batch embeds while the previous commits.
        let batches = pairs.chunks(64).enumerate().map(|(i, chunk)| {
            let docs: Vec<Document> = chunk.iter().enumerate().map(|(j, p)| Document::new((i * 64 + j).to_string(), p.doc.clone())).collect();
            Ok((format!("pairs {} to {}", i * 64, i * 64 + chunk.len() - 1), docs))
        });
        db.ingest_stream(batches, |_, docs, _| {
            bar.inc(docs.len() as u64);
            Ok(())
        })?;
        let docs_per_s = pairs.len() as f64 / t.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let bar = progress::counter(pairs.len() as u64, "queries");
        let t = std::time::Instant::now();
        let mut ranks = Vec::with_capacity(pairs.len());
        for (i, p) in pairs.iter().enumerate() {
            let hits = rank.apply(db.query(&p.query).limit(10)).run()?;
            ranks.push(hits.iter().position(|h| h.id == i.to_string()));
            bar.inc(1);
        }
        let queries_per_s = pairs.len() as f64 / t.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let m = RankMetrics::from_ranks(ranks.iter().copied());
        // Each query's 0-based rank of its document (null past 10), in file order: what a
        // paired comparison of two rows needs (benches/paired_bootstrap.py).
        Ok(json!({"mrr10": m.mrr10, "ndcg10": m.ndcg10, "recall1": m.recall1, "recall10": m.recall10,
                  "docs_per_s": docs_per_s, "queries_per_s": queries_per_s, "pairs": pairs.len(), "skipped": skipped,
                  "embedder": embedder.fingerprint(), "mode": rank.mode, "ranks": ranks}))
    })();
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn print_one(r: &Value, json: bool) {
    if json {
        out(r.clone());
    } else {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        out(format!(
            "{} pairs ({} skipped), embedder {}, mode {}\nMRR@10 {:.4}  nDCG@10 {:.4}  Recall@1 {:.4}  Recall@10 {:.4}\n{:.1} documents/s, {:.1} queries/s",
            r["pairs"],
            r["skipped"],
            r["embedder"],
            r["mode"],
            f("mrr10"),
            f("ndcg10"),
            f("recall1"),
            f("recall10"),
            f("docs_per_s"),
            f("queries_per_s")
        ));
    }
}
