//! `duetdb eval`: retrieval quality of an embedder (and a ranking mode) on (query,
//! document) pairs, through a real database: every document ingested, every query run as
//! `duetdb query` runs it. Pairs and metrics are the library's (`duetdb::eval`), the same
//! the trainer reports.

use crate::args::RankArgs;
use crate::{out, progress};
use duetdb::eval::{read_pairs, Fields, RankMetrics};
use duetdb::{Document, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

/// What `eval` measures and where: the pairs file and its fields, the embedder, and a
/// directory to keep the database in (a temporary one otherwise).
pub(crate) struct EvalArgs {
    pub(crate) file: PathBuf,
    pub(crate) query_field: String,
    pub(crate) doc_field: String,
    pub(crate) embedder: Option<String>,
    pub(crate) keep: Option<PathBuf>,
    pub(crate) limit: Option<usize>,
}

/// Runs one evaluation and prints its metrics and speeds.
pub(crate) fn eval_cmd(a: EvalArgs, rank: RankArgs, json: bool) -> Result<()> {
    if let Some(l) = a.limit {
        // `--limit 0` evaluated one pair once; no pairs is no measurement.
        duetdb::limits::check("--limit", l, 1, usize::MAX)?;
    }
    let fields = Fields { query: a.query_field.clone(), doc: a.doc_field.clone(), group: None };
    let (mut pairs, skipped) = read_pairs(&a.file, &fields)?;
    if let Some(l) = a.limit {
        pairs.truncate(l);
    }
    let dir = a.keep.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("duetdb-eval-{}", std::process::id())));
    if a.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let result = (|| -> Result<Value> {
        let mut opts = crate::db_options()?;
        match &a.embedder {
            Some(s) => opts = opts.embedder_spec(s.as_str()),
            None if a.keep.is_none() || !dir.exists() => opts = opts.embedder_spec(duetdb::embed::DEFAULT_SPEC),
            None => {}
        }
        let db = opts.open(&dir)?;
        let embedder = db.embedder()?;
        let bar = progress::counter(pairs.len() as u64, "documents");
        let t = std::time::Instant::now();
        for (i, chunk) in pairs.chunks(64).enumerate() {
            let docs: Vec<Document> = chunk.iter().enumerate().map(|(j, p)| Document::new((i * 64 + j).to_string(), p.doc.clone())).collect();
            db.ingest_batch(&docs)?;
            bar.inc(chunk.len() as u64);
        }
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
        let m = RankMetrics::from_ranks(ranks);
        Ok(json!({"mrr10": m.mrr10, "ndcg10": m.ndcg10, "recall1": m.recall1, "recall10": m.recall10,
                  "docs_per_s": docs_per_s, "queries_per_s": queries_per_s, "pairs": pairs.len(), "skipped": skipped,
                  "embedder": embedder.fingerprint(), "mode": rank.mode}))
    })();
    if a.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = result?;
    if json {
        out(r);
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
    Ok(())
}
