//! Retrieval evaluation shared by `duetdb eval` and the trainer: (query, document) pairs
//! read from JSON Lines, and the rank metrics reported everywhere (MRR@10, nDCG@10,
//! Recall@1, Recall@10) for a corpus in which query `i`'s relevant document is document `i`.
//!
//! ```
//! use duetdb::eval::RankMetrics;
//! // The relevant documents ranked first, third and not in the top 10.
//! let m = RankMetrics::from_ranks([Some(0), Some(2), None]);
//! assert!((m.mrr10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
//! assert!((m.recall10 - 2.0 / 3.0).abs() < 1e-12);
//! ```

use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The query text.
    pub query: String,
    /// Its relevant document.
    pub doc: String,
    /// Pairs of one group (a Debian source package) are near-duplicates: never each
    /// other's negatives.
    pub group: String,
    /// The pair's source (`Fields::domain`; empty without one): the trainer draws each
    /// batch from one source and evaluates each source on its own.
    pub domain: String,
}

/// Which fields of each JSON line to read.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Field holding the query.
    pub query: String,
    /// Field holding the document.
    pub doc: String,
    /// Field naming the pair's group; `None`: every pair is its own group.
    pub group: Option<String>,
    /// Field naming the pair's source (domain); `None`: one source.
    pub domain: Option<String>,
}

/// Reads the pairs of a JSON Lines file; lines without both texts are skipped (their
/// count is returned), a line that is not JSON is an error naming it.
pub fn read_pairs(path: &Path, fields: &Fields) -> Result<(Vec<Pair>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut pairs = Vec::new();
    let mut skipped = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| Error::invalid(format!("{} line {}: {e}", path.display(), n + 1)))?;
        let field = |f: &str| v.get(f).and_then(Value::as_str).map(str::trim).unwrap_or("").to_string();
        let (query, doc) = (field(&fields.query), field(&fields.doc));
        if query.is_empty() || doc.is_empty() {
            skipped += 1;
            continue;
        }
        let group = match &fields.group {
            Some(g) => field(g),
            None => format!("#{}", pairs.len()),
        };
        let domain = fields.domain.as_deref().map(field).unwrap_or_default();
        pairs.push(Pair { query, doc, group, domain });
    }
    if pairs.is_empty() {
        return Err(Error::invalid(format!("no line of {} has both `{}` and `{}`", path.display(), fields.query, fields.doc)));
    }
    Ok((pairs, skipped))
}

/// Retrieval quality over a set of queries, each with one relevant document.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RankMetrics {
    /// Mean reciprocal rank of the relevant document, 0 past rank 10.
    pub mrr10: f64,
    /// Mean nDCG@10 (one relevant document: `1 / log2(rank + 1)`).
    pub ndcg10: f64,
    /// Share of queries whose relevant document is first.
    pub recall1: f64,
    /// Share of queries whose relevant document is in the top 10.
    pub recall10: f64,
    /// Number of queries.
    pub queries: usize,
}

impl RankMetrics {
    /// Metrics from each query's 0-based rank of its relevant document (`None`: not
    /// among the results).
    pub fn from_ranks(ranks: impl IntoIterator<Item = Option<usize>>) -> Self {
        let (mut mrr, mut ndcg, mut r1, mut r10, mut n) = (0f64, 0f64, 0f64, 0f64, 0usize);
        for rank in ranks {
            n += 1;
            if let Some(r) = rank.filter(|&r| r < 10) {
                mrr += 1.0 / (r + 1) as f64;
                ndcg += 1.0 / ((r + 2) as f64).log2();
                r1 += (r == 0) as u8 as f64;
                r10 += 1.0;
            }
        }
        let d = n.max(1) as f64;
        Self { mrr10: mrr / d, ndcg10: ndcg / d, recall1: r1 / d, recall10: r10 / d, queries: n }
    }

    /// Metrics of a score matrix whose relevant document for row `i` is column `i`
    /// (exact search; ties go to the lower column).
    pub fn from_scores(scores: &[Vec<f32>]) -> Self {
        Self::from_ranks(scores.iter().enumerate().map(|(i, row)| Some(row.iter().enumerate().filter(|&(j, &s)| s > row[i] || (s == row[i] && j < i)).count())))
    }
}

/// MRR@10 of a score matrix whose relevant document for row `i` is column `i`.
pub fn mrr_at_10(scores: &[Vec<f32>]) -> f64 {
    RankMetrics::from_scores(scores).mrr10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrr_counts_rank_within_ten() {
        let s = vec![vec![0.9, 0.1, 0.2], vec![0.9, 0.5, 0.1], vec![0.3, 0.2, 0.1]];
        // Ranks: 1, 2, 3.
        let expect = (1.0 + 0.5 + 1.0 / 3.0) / 3.0;
        assert!((mrr_at_10(&s) - expect).abs() < 1e-12);
    }

    #[test]
    fn ranks_past_ten_count_as_misses() {
        let m = RankMetrics::from_ranks([Some(0), Some(10), None, Some(1)]);
        assert_eq!(m.queries, 4);
        assert!((m.recall1 - 0.25).abs() < 1e-12 && (m.recall10 - 0.5).abs() < 1e-12);
        assert!((m.ndcg10 - (1.0 + 1.0 / 3f64.log2()) / 4.0).abs() < 1e-12);
    }
}
