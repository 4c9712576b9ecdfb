//! The query builder: vector, text (BM25) and hybrid (fused) ranking.

use super::{Db, Filter, Hit};
use crate::embed::{normalize, Kind};
use crate::error::{Error, Result};
use crate::index::dot;
use crate::store::DocRecord;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

/// How a query ranks documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nearest neighbours of the query's embedding.
    Vector,
    /// BM25 over the documents' words; needs no model.
    Text,
    /// Both rankings, fused (see [`Fusion`]).
    Hybrid,
}

/// The mode of a query that does not choose one (docs/hybrid.md says why).
pub const DEFAULT_MODE: Mode = Mode::Hybrid;

impl Mode {
    /// Every mode, as named on the command line.
    pub const ALL: [Mode; 3] = [Mode::Vector, Mode::Text, Mode::Hybrid];

    /// The mode's name (`vector`, `text`, `hybrid`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vector => "vector",
            Mode::Text => "text",
            Mode::Hybrid => "hybrid",
        }
    }

    /// Parses [`Mode::name`].
    pub fn parse(s: &str) -> Result<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| Error::invalid(format!("unknown query mode `{s}`: expected vector, text or hybrid")))
    }
}

/// How hybrid mode fuses the vector and the BM25 rankings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal rank fusion: a document scores `1 / (k + vector rank) + text_weight /
    /// (k + text rank)`, counting only the rankings that returned it.
    Rrf {
        /// The rank constant (60 in the RRF paper); smaller favours the top ranks.
        k: f32,
        /// Weight of the BM25 ranking against the vector ranking's 1.
        text_weight: f32,
    },
    /// A weighted sum of scores, each ranking's scores min-max normalised over its
    /// candidates: `vector_weight * vector + (1 - vector_weight) * text`.
    Weighted {
        /// Weight of the vector ranking, in 0..=1.
        vector_weight: f32,
    },
}

impl Default for Fusion {
    /// The weighted fusion chosen on a sample of the Debian `train` split (1995 pairs,
    /// every 29th) with the default embedder (`benches/fusion_tune.rs`): it beat the best
    /// RRF setting there (MRR@10 0.904 against 0.896; BM25 alone 0.856, vectors alone
    /// 0.854); see the README, hybrid search.
    fn default() -> Self {
        Fusion::Weighted { vector_weight: DEFAULT_VECTOR_WEIGHT }
    }
}

/// The vector ranking's weight in the default (weighted) fusion: the best on the train
/// sample with the Gemma3 default embedder (0.35 was the best with the SmolLM2 one,
/// whose vectors were much weaker than BM25).
pub const DEFAULT_VECTOR_WEIGHT: f32 = 0.55;

/// RRF's textbook constant, the CLI's default for `--rrf-k`.
pub const DEFAULT_RRF_K: f32 = 60.0;

/// Candidates each ranking contributes to a hybrid query (at least the limit); chosen
/// with the fusion.
pub const DEFAULT_CANDIDATES: usize = 100;

/// A fused ranking entry: row, fused score, rank in each ranking (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fused {
    /// The vector row of the document version.
    pub row: usize,
    /// Fused score, higher is better.
    pub score: f32,
    /// Rank in the vector ranking.
    pub vector_rank: Option<usize>,
    /// Rank in the BM25 ranking.
    pub text_rank: Option<usize>,
}

/// Fuses two rankings (rows with scores, best first) into one, best first.
pub fn fuse(vector: &[(usize, f32)], text: &[(usize, f32)], fusion: Fusion) -> Vec<Fused> {
    let mut by_row: HashMap<usize, Fused> = HashMap::new();
    let norm = |list: &[(usize, f32)]| -> Vec<f32> {
        let (lo, hi) = list.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, s)| (lo.min(*s), hi.max(*s)));
        list.iter().map(|(_, s)| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }).collect()
    };
    let (vn, tn) = (norm(vector), norm(text));
    for (side, list) in [(0, vector), (1, text)] {
        for (i, (row, _)) in list.iter().enumerate() {
            let part = match fusion {
                Fusion::Rrf { k, text_weight } => (if side == 0 { 1.0 } else { text_weight }) / (k + (i + 1) as f32),
                Fusion::Weighted { vector_weight } => {
                    if side == 0 {
                        vector_weight * vn[i]
                    } else {
                        (1.0 - vector_weight) * tn[i]
                    }
                }
            };
            let e = by_row.entry(*row).or_insert(Fused { row: *row, score: 0.0, vector_rank: None, text_rank: None });
            e.score += part;
            if side == 0 {
                e.vector_rank = Some(i + 1);
            } else {
                e.text_rank = Some(i + 1);
            }
        }
    }
    let mut out: Vec<Fused> = by_row.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
    out
}

/// Rows a filtered query samples to estimate how many match.
const SELECTIVITY_SAMPLE: usize = 1024;
/// Estimated matching rows at or below which a filtered query scores every match
/// exactly instead of walking the graph.
const EXACT_BELOW: usize = 5000;

/// A query under construction; see [`Db::query`].
#[must_use = "a query does nothing until `run` is called"]
pub struct Query<'a> {
    db: &'a Db,
    text: &'a str,
    vector: Option<Vec<f32>>,
    limit: usize,
    ef: Option<usize>,
    filters: Vec<Filter>,
    mode: Mode,
    fusion: Fusion,
    candidates: usize,
}

impl<'a> Query<'a> {
    pub(super) fn new(db: &'a Db, text: &'a str) -> Self {
        Self { db, text, vector: None, limit: 10, ef: None, filters: Vec::new(), mode: DEFAULT_MODE, fusion: Fusion::default(), candidates: DEFAULT_CANDIDATES }
    }

    /// How documents are ranked (default [`DEFAULT_MODE`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How hybrid mode fuses its rankings (default: [`Fusion::default`]).
    pub fn fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Candidates each ranking contributes in hybrid mode (default [`DEFAULT_CANDIDATES`];
    /// 1 to [`crate::limits::MAX_CANDIDATES`]).
    pub fn candidates(mut self, n: usize) -> Self {
        self.candidates = n;
        self
    }

    /// At most this many hits (default 10; 1 to [`crate::limits::MAX_K`]).
    pub fn limit(mut self, k: usize) -> Self {
        self.limit = k;
        self
    }

    /// HNSW search beam width (default `max(64, limit)`; at most
    /// [`crate::limits::MAX_EF`]): higher finds more of the true nearest neighbours and
    /// costs more time.
    pub fn ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Only documents whose metadata has `key` equal to `value` ([`Filter::eq`]; several
    /// filters must all hold).
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.filters.push(Filter::eq(key, value));
        self
    }

    /// Only documents whose metadata satisfies `filter` (ranges, `in`, `exists`, `and`,
    /// `or`, `not`: see [`Filter`]); with [`Query::filter`], all must hold. The graph
    /// walk skips what does not match, and a filter too selective for the walk is
    /// answered by an exact scan of the matching documents.
    ///
    /// ```
    /// use duetdb::{Db, Document, Filter};
    /// use serde_json::json;
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Db::options().embedder_spec("hash:64").open(dir.path().join("db")).unwrap();
    /// db.ingest([
    ///     Document::new("old", "a text editor").with_metadata(json!({"year": 1991})),
    ///     Document::new("new", "a text editor").with_metadata(json!({"year": 2024})),
    /// ]).unwrap();
    /// let hits = db.query("text editor").matching(Filter::ge("year", 2000)).run().unwrap();
    /// assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["new"]);
    /// ```
    pub fn matching(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Searches with this vector instead of embedding the text (it is L2-normalised).
    pub fn vector(mut self, v: Vec<f32>) -> Self {
        self.vector = Some(v);
        self
    }

    fn matches(&self, doc: &DocRecord) -> bool {
        self.filters.iter().all(|f| f.matches(&doc.metadata))
    }

    /// Runs the query: hits, best first.
    pub fn run(mut self) -> Result<Vec<Hit>> {
        use crate::limits::{check, MAX_CANDIDATES, MAX_EF, MAX_K};
        check("k (hits per query)", self.limit, 1, MAX_K)?;
        check("the hybrid candidates", self.candidates, 1, MAX_CANDIDATES)?;
        if let Some(ef) = self.ef {
            check("ef (the search beam)", ef, 1, MAX_EF)?;
        }
        let state = self.db.read_state();
        let mode = self.mode;
        if self.text.trim().is_empty() && (self.vector.is_none() || mode == Mode::Text) {
            return Err(Error::invalid("query text is empty"));
        }
        let q = match mode {
            Mode::Text => None,
            _ => Some(self.query_vector(&state)?),
        };
        // Documents read while filtering are kept for building the hits. A record that
        // cannot be read, or is missing for a live row, is damage: the first such error
        // ends the query (after the search, whose filter callbacks cannot return one),
        // never a silently shorter list. A row whose document a writer deleted after this
        // snapshot was taken is skipped (`ReadState::hit_record`).
        let fetched: RefCell<HashMap<usize, Option<DocRecord>>> = RefCell::default();
        let unreadable: RefCell<Option<Error>> = RefCell::default();
        let fetch = |row: usize| -> Option<DocRecord> {
            fetched
                .borrow_mut()
                .entry(row)
                .or_insert_with(|| match state.hit_record(row as u64) {
                    Ok(d) => d,
                    Err(e) => {
                        unreadable.borrow_mut().get_or_insert(e);
                        None
                    }
                })
                .clone()
        };
        let visible = |row: usize| state.is_live(row);
        // Filters read the metadata cache (taken after `state`, so it has every row
        // `state` has); a row past it is read from the catalog.
        let meta = if self.filters.is_empty() { None } else { self.db.metadata_rows(state.epoch)? };
        let keep_filtered = |row: usize| {
            state.is_live(row)
                && match meta.as_ref().and_then(|m| m.get(row)) {
                    Some(m) => self.filters.iter().all(|f| f.matches(m.as_deref().unwrap_or(&serde_json::Value::Null))),
                    None => fetch(row).is_some_and(|d| self.matches(&d)),
                }
        };
        let keep: &dyn Fn(usize) -> bool = if self.filters.is_empty() { &visible } else { &keep_filtered };
        let depth = if mode == Mode::Hybrid { self.limit.max(self.candidates) } else { self.limit };
        let vector = match &q {
            Some(q) => self.vector_ranking(q, &state, depth, keep),
            None => Vec::new(),
        };
        let text = match mode {
            Mode::Vector => Vec::new(),
            _ => match (&state.fulltext, mode) {
                (Some(ft), _) => ft.search(self.text, depth, keep)?,
                (None, Mode::Text) => return Err(Error::invalid("this database was opened without its full-text index (DbOptions::full_text)")),
                (None, _) => Vec::new(),
            },
        };
        let fused: Vec<Fused> = match mode {
            Mode::Vector => vector.iter().enumerate().map(|(i, &(row, score))| Fused { row, score, vector_rank: Some(i + 1), text_rank: None }).collect(),
            Mode::Text => text.iter().enumerate().map(|(i, &(row, score))| Fused { row, score, vector_rank: None, text_rank: Some(i + 1) }).collect(),
            Mode::Hybrid => fuse(&vector, &text, self.fusion),
        };
        let hits: Vec<Hit> = fused
            .into_iter()
            .filter_map(|f| {
                let d = fetch(f.row)?;
                let found_by = [("vector", f.vector_rank), ("text", f.text_rank)].iter().filter(|(_, r)| r.is_some()).map(|(n, _)| n.to_string()).collect();
                Some(Hit { id: d.id, score: f.score, text: d.text, metadata: d.metadata, found_by, vector_rank: f.vector_rank, text_rank: f.text_rank })
            })
            .take(self.limit)
            .collect();
        if let Some(e) = unreadable.into_inner() {
            return Err(Error::corrupt_from(
                self.db.layout.catalog(),
                "a matching document's record cannot be read; `duetdb check` lists the damage and `duetdb dump` saves every document that can still be read",
                e,
            ));
        }
        Ok(hits)
    }

    /// The query's embedding (or the vector given), checked and normalised.
    fn query_vector(&mut self, state: &super::snapshot::ReadState) -> Result<Vec<f32>> {
        let dim = state.embedder.dim;
        let mut q = match self.vector.take() {
            Some(v) => v,
            None => {
                let mut v = state.embedder.get()?.embed(&[self.text], Kind::Query)?;
                v.pop().ok_or_else(|| Error::embed("embedder returned no vector for the query"))?
            }
        };
        if q.len() != dim {
            return Err(Error::Dimension { expected: dim, found: q.len() });
        }
        if q.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("query vector has a NaN or infinite component"));
        }
        normalize(&mut q);
        Ok(q)
    }

    /// The `depth` nearest live (and matching) rows, best first.
    fn vector_ranking(&self, q: &[f32], state: &super::snapshot::ReadState, depth: usize, keep: &dyn Fn(usize) -> bool) -> Vec<(usize, f32)> {
        // The graph needs no filter when every row it holds is live.
        let filter: Option<&dyn Fn(usize) -> bool> = if self.filters.is_empty() && state.dead_count == 0 { None } else { Some(keep) };
        let ef = self.ef.unwrap_or(64).max(depth);
        let n = state.view.len();
        // Every matching row, scored exactly.
        let exact = || {
            let mut exact: Vec<(usize, f32)> = (0..n).filter(|&r| keep(r)).map(|r| (r, dot(q, state.view.vector(r)))).collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            exact.truncate(depth);
            exact
        };
        if !self.filters.is_empty() {
            // A selective filter: estimate how many rows match from a sample, and when
            // few do, score exactly the ones that match instead of walking the graph
            // (a walk wide enough to find them costs more, and misses some).
            let step = (n / SELECTIVITY_SAMPLE).max(1);
            let sampled = n.div_ceil(step);
            let expect = (0..n).step_by(step).filter(|&r| keep(r)).count() * n / sampled.max(1);
            if expect <= EXACT_BELOW {
                return exact();
            }
        }
        let scored: Vec<(usize, f32)> =
            state.graph.search(q, depth, ef, filter).into_iter().filter(|h| state.is_live(h.row)).map(|h| (h.row, h.score)).collect();
        if !self.filters.is_empty() && scored.len() < depth {
            // The sample overestimated the matches and the walk came back short.
            return exact();
        }
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_orders_a_hand_made_case() {
        // Row 7 is 2nd in both rankings, row 1 first in vector only, row 9 first in text only.
        let vector = [(1, 0.9), (7, 0.8), (3, 0.7)];
        let text = [(9, 12.0), (7, 11.0), (4, 3.0)];
        let f = fuse(&vector, &text, Fusion::Rrf { k: 60.0, text_weight: 1.0 });
        let rows: Vec<usize> = f.iter().map(|x| x.row).collect();
        // 7: 2/62; 1 and 9: 1/61 each (tie broken by row); 3 and 4: 1/63.
        assert_eq!(rows, vec![7, 1, 9, 3, 4]);
        assert!((f[0].score - 2.0 / 62.0).abs() < 1e-7);
        assert_eq!((f[0].vector_rank, f[0].text_rank), (Some(2), Some(2)));
        assert_eq!((f[2].vector_rank, f[2].text_rank), (None, Some(1)));
        // Weighting the text side lifts its top hit above the vector side's.
        let rows: Vec<usize> = fuse(&vector, &text, Fusion::Rrf { k: 60.0, text_weight: 2.0 }).iter().map(|x| x.row).collect();
        assert_eq!(rows[..2], [7, 9]);
        // Weighted fusion of normalised scores: row 9 (text 1.0) against row 1 (vector 1.0).
        let w = fuse(&vector, &text, Fusion::Weighted { vector_weight: 0.7 });
        let rows: Vec<usize> = w.iter().map(|x| x.row).collect();
        // 1: 0.7 * 1.0; 7: 0.7 * 0.5 + 0.3 * 0.889; 9: 0.3 * 1.0; 3 and 4: 0.
        assert_eq!(rows, vec![1, 7, 9, 3, 4]);
        assert!(fuse(&[], &[], Fusion::default()).is_empty());
    }
}
