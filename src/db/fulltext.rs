//! The full-text index as derived state: restored (caught up or rebuilt from the
//! catalog) on open, and fed by each commit after the catalog commit.

use super::snapshot::ReadState;
use super::Db;
use crate::error::Result;
use crate::index::fulltext::{Coverage, FullText};
use crate::store::{Layout, Manifest};

/// Rows indexed per full-text commit while catching up, so that a long first build
/// keeps its progress if it is interrupted.
const CATCH_UP_CHUNK: usize = 10_000;

/// Opens the full-text index and brings it to the catalog: rebuilt from scratch when it
/// is missing, unreadable or ahead of the catalog; rows committed after its coverage
/// indexed; tombstones recorded since applied.
pub(super) fn restore(layout: &Layout, m: &Manifest, state: &ReadState) -> Result<FullText> {
    let catalog = &state.catalog;
    let dir = layout.fulltext_dir();
    let existed = dir.exists();
    let (ft, mut cov) = match FullText::open(&dir) {
        Ok((ft, cov)) if cov.rows <= m.rows => (ft, cov),
        Ok((_, cov)) => {
            tracing::warn!(path = %dir.display(), covered = cov.rows, committed = m.rows, "full-text index is ahead of the catalog; rebuilding it from the catalog");
            (FullText::recreate(&dir)?, Coverage::default())
        }
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "full-text index unusable; rebuilding it from the catalog");
            (FullText::recreate(&dir)?, Coverage::default())
        }
    };
    if !existed && m.rows > 0 {
        tracing::warn!(path = %dir.display(), rows = m.rows, "full-text index missing; building it from the catalog");
    }
    let dead_now = state.dead_count;
    if cov.dead < dead_now && cov.rows > 0 {
        // Deletes committed in the catalog but not yet here: apply every tombstone
        // (deleting an absent row is a no-op).
        let dead: Vec<u64> = catalog.tombstone_rows()?.into_iter().filter(|r| *r < cov.rows).collect();
        cov.dead = dead_now;
        ft.apply(&[], &dead, cov, false)?;
    }
    let mut chunk: Vec<(u64, String)> = Vec::new();
    for r in cov.rows..m.rows {
        if let Some(d) = state.live_record(r)? {
            chunk.push((r, d.text));
        }
        if chunk.len() == CATCH_UP_CHUNK || r + 1 == m.rows {
            let docs: Vec<(u64, &str)> = chunk.iter().map(|(r, t)| (*r, t.as_str())).collect();
            ft.apply(&docs, &[], Coverage { rows: r + 1, dead: dead_now }, true)?;
            tracing::info!(indexed = r + 1, of = m.rows, "full-text index catching up");
            chunk.clear();
        }
    }
    Ok(ft)
}

impl Db {
    /// Feeds a committed change to the full-text index. The catalog commit is already
    /// durable: a failure here only leaves the index behind, and the next open catches
    /// it up, so it is logged rather than returned.
    pub(super) fn fulltext_apply(&self, docs: &[(u64, &str)], dead: &[u64], rows: u64) {
        let (fulltext, dead_count) = {
            let r = self.read.read().unwrap();
            (r.fulltext.clone(), r.dead_count)
        };
        let Some(ft) = fulltext else { return };
        let mut lag = self.fulltext_lag.lock().unwrap();
        // After a failure the recorded coverage stays before the first row missed, so the
        // next open indexes again from there.
        let cov = match *lag {
            Some(from) => Coverage { rows: from, dead: 0 },
            None => Coverage { rows, dead: dead_count },
        };
        if let Err(e) = ft.apply(docs, dead, cov, false) {
            tracing::error!(error = %e, "full-text index update failed; it is caught up on the next open");
            let first = docs.iter().map(|d| d.0).min().unwrap_or(rows);
            *lag = Some(lag.map_or(first, |l| l.min(first)));
        }
    }
}
