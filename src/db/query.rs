//! The query builder.

use super::{Db, Hit};
use crate::embed::{normalize, Kind};
use crate::error::{Error, Result};
use crate::index::dot;
use crate::store::DocRecord;
use std::cell::RefCell;
use std::collections::HashMap;

/// A semantic query under construction; see [`Db::query`].
#[must_use = "a query does nothing until `run` is called"]
pub struct Query<'a> {
    db: &'a Db,
    text: &'a str,
    vector: Option<Vec<f32>>,
    limit: usize,
    ef: Option<usize>,
    filters: Vec<(String, serde_json::Value)>,
}

impl<'a> Query<'a> {
    pub(super) fn new(db: &'a Db, text: &'a str) -> Self {
        Self { db, text, vector: None, limit: 10, ef: None, filters: Vec::new() }
    }

    /// At most this many hits (default 10).
    pub fn limit(mut self, k: usize) -> Self {
        self.limit = k;
        self
    }

    /// HNSW search beam width (default `max(64, limit)`): higher finds more of the true
    /// nearest neighbours and costs more time.
    pub fn ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Only documents whose metadata has `key` equal to `value` (JSON equality; several
    /// filters must all hold).
    pub fn filter(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.filters.push((key.into(), value.into()));
        self
    }

    /// Searches with this vector instead of embedding the text (it is L2-normalised).
    pub fn vector(mut self, v: Vec<f32>) -> Self {
        self.vector = Some(v);
        self
    }

    fn matches(&self, doc: &DocRecord) -> bool {
        self.filters.iter().all(|(k, v)| doc.metadata.get(k) == Some(v))
    }

    /// Runs the query: hits, best first.
    pub fn run(mut self) -> Result<Vec<Hit>> {
        let state = self.db.read_state();
        let dim = state.embedder.dim;
        let mut q = match self.vector.take() {
            Some(v) => v,
            None => {
                if self.text.trim().is_empty() {
                    return Err(Error::invalid("query text is empty"));
                }
                let mut v = state.embedder.get()?.embed(&[self.text], Kind::Query)?;
                v.pop().ok_or_else(|| Error::Embed("embedder returned no vector for the query".into()))?
            }
        };
        if q.len() != dim {
            return Err(Error::Dimension { expected: dim, found: q.len() });
        }
        if q.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("query vector has a NaN or infinite component"));
        }
        normalize(&mut q);
        if self.limit == 0 {
            return Ok(Vec::new());
        }
        let catalog = &self.db.catalog;
        // Documents read while filtering are kept for building the hits.
        let fetched: RefCell<HashMap<usize, Option<DocRecord>>> = RefCell::default();
        let fetch = |row: usize| -> Option<DocRecord> {
            fetched.borrow_mut().entry(row).or_insert_with(|| catalog.doc(state.view.iid(row)).ok().flatten()).clone()
        };
        let visible = |row: usize| row < state.view.len() && !state.is_dead(row);
        let keep_filtered = |row: usize| visible(row) && fetch(row).is_some_and(|d| self.matches(&d));
        let keep_live = |row: usize| visible(row);
        let any_dead = state.dead_count > 0;
        let keep: Option<&dyn Fn(usize) -> bool> = if !self.filters.is_empty() {
            Some(&keep_filtered)
        } else if any_dead {
            Some(&keep_live)
        } else {
            None
        };
        let ef = self.ef.unwrap_or(64).max(self.limit);
        let mut scored: Vec<(usize, f32)> = state
            .graph
            .search(&q, self.limit, ef, keep)
            .into_iter()
            .filter(|h| visible(h.row))
            .map(|h| (h.row, h.score))
            .collect();
        if !self.filters.is_empty() && scored.len() < self.limit {
            // A selective filter can leave the graph walk short of `limit` hits: fall back
            // to an exact scan over the matching documents.
            let mut exact = Vec::new();
            for item in catalog.docs() {
                let (_, doc) = item?;
                let row = doc.row as usize;
                if visible(row) && self.matches(&doc) {
                    exact.push((row, dot(&q, state.view.vector(row))));
                    fetched.borrow_mut().insert(row, Some(doc));
                }
            }
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            exact.truncate(self.limit);
            scored = exact;
        }
        Ok(scored
            .into_iter()
            .filter_map(|(row, score)| fetch(row).map(|d| Hit { id: d.id, score, text: d.text, metadata: d.metadata }))
            .collect())
    }
}
