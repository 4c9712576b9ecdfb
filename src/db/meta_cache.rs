//! Every row's metadata in memory, for filters: evaluating a filter on a graph walk's
//! candidates would otherwise read and decode each one's whole record from the catalog.
//! Built by the first filtered query (one scan of the catalog), then kept current by
//! every commit before it publishes its rows, so a query never sees a live row whose
//! metadata is missing here. Readers take a snapshot (an `Arc`) and never hold the lock.

use super::Db;
use crate::error::Result;
use serde_json::Value;
use std::sync::Arc;

/// Metadata by row; `None` for a document without any (or a row never filled).
pub(super) type MetaRows = Arc<Vec<Option<Arc<Value>>>>;

/// The cache: empty and unbuilt until a filtered query needs it.
#[derive(Default)]
pub(super) struct MetaCache {
    built: bool,
    /// The row numbering it was built for (`ReadState::epoch`).
    epoch: u64,
    rows: MetaRows,
}

impl MetaCache {
    /// An empty cache for a new numbering of rows (after a compaction).
    pub(super) fn reset(&mut self, epoch: u64) {
        *self = MetaCache { built: false, epoch, rows: MetaRows::default() };
    }
}

fn set(rows: &mut MetaRows, row: u64, metadata: &Value) {
    let v = Arc::make_mut(rows);
    let row = row as usize;
    if v.len() <= row {
        v.resize(row + 1, None);
    }
    v[row] = (!metadata.is_null()).then(|| Arc::new(metadata.clone()));
}

impl Db {
    /// The metadata of every row of `epoch`'s numbering, building the cache on first
    /// use; `None` for a reader still on a numbering a compaction replaced (it reads
    /// each candidate's record instead).
    pub(super) fn metadata_rows(&self, epoch: u64) -> Result<Option<MetaRows>> {
        {
            let c = self.meta.read().unwrap_or_else(|e| e.into_inner());
            if c.epoch != epoch {
                return Ok(None);
            }
            if c.built {
                return Ok(Some(c.rows.clone()));
            }
        }
        let mut c = self.meta.write().unwrap_or_else(|e| e.into_inner());
        if c.epoch != epoch {
            return Ok(None);
        }
        if !c.built {
            let t = std::time::Instant::now();
            // The writer lock is not held: take the catalog of this numbering.
            let catalog = self.catalog();
            for item in catalog.docs() {
                let (_, rec) = item?;
                set(&mut c.rows, rec.row, &rec.metadata);
            }
            c.built = true;
            tracing::debug!(rows = c.rows.len(), ms = t.elapsed().as_millis() as u64, "metadata cache built");
        }
        Ok(Some(c.rows.clone()))
    }

    /// Records the metadata of rows a commit wrote, if the cache is built.
    pub(super) fn cache_metadata<'a>(&self, rows: impl IntoIterator<Item = (u64, &'a Value)>) {
        let mut c = self.meta.write().unwrap_or_else(|e| e.into_inner());
        if c.built {
            for (row, m) in rows {
                set(&mut c.rows, row, m);
            }
        }
    }
}
