//! Reader snapshots and the graph's persistence: what queries see (swapped whole by
//! writers), and the hnsw_rs snapshots referenced from the manifest, restored on open,
//! rebuilt when tombstones grow, written at checkpoints.

use super::{Db, Writer};
use crate::error::{Error, Result};
use crate::index::fulltext::FullText;
use crate::index::{Graph, GraphParams};
use crate::store::{Catalog, GraphSnapshot, Manifest, VectorView};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Above this many rows past the graph snapshot, an open defers them to the background
/// indexer instead of inserting them first (about a second of inserts on two cores).
/// `DUETDB_DEFER_ABOVE` overrides it, for `benches/recovery.py` to measure both ways.
fn defer_above() -> usize {
    std::env::var("DUETDB_DEFER_ABOVE").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

/// Rows the background indexer inserts at a time: a commit that arrives meanwhile waits
/// for at most one chunk.
const INDEX_CHUNK: usize = 256;

/// What readers see: an immutable snapshot swapped by writers.
#[derive(Clone)]
pub(super) struct ReadState {
    pub(super) view: VectorView,
    pub(super) graph: Arc<Graph>,
    /// One bit per row: set when the row's document was deleted or replaced.
    pub(super) dead: Arc<Vec<u64>>,
    pub(super) dead_count: u64,
    /// The embedder of the generation `view` belongs to: a query embeds with it, so it
    /// never mixes two embedders across a switch.
    pub(super) embedder: Arc<super::gen_embedder::GenEmbedder>,
    /// The catalog the rows of `view` are recorded in: a compaction renumbers rows and
    /// switches to a new catalog, and a reader keeps the pair it started with.
    pub(super) catalog: Arc<Catalog>,
    /// BM25 over document texts, keyed by the same rows (shared by every generation);
    /// `None` when the database was opened without it.
    pub(super) fulltext: Option<Arc<FullText>>,
    /// Which numbering of rows this state uses: raised by every compaction, so that
    /// row-keyed caches built for another numbering are never applied to it.
    pub(super) epoch: u64,
}

impl ReadState {
    pub(super) fn is_dead(&self, row: usize) -> bool {
        self.dead.get(row / 64).is_some_and(|w| w >> (row % 64) & 1 == 1)
    }
    /// Whether `row` is in this snapshot and its document version is live.
    pub(super) fn is_live(&self, row: usize) -> bool {
        row < self.view.len() && !self.is_dead(row)
    }
    /// The record of the live document version at `row`; `None` for a dead row (whose
    /// record may already be purged).
    ///
    /// A row live in this snapshot always has a record naming it, unless a writer has
    /// replaced or deleted (and purged) its document since: the catalog then holds a
    /// tombstone for the row. Anything else is a damaged catalog, and an error: the
    /// callers (full-text rebuild, export, reindex) would otherwise skip a live
    /// document without a word (found by `tests/damage.rs`'s stress hunt).
    pub(super) fn live_record(&self, row: u64) -> Result<Option<crate::store::DocRecord>> {
        if !self.is_live(row as usize) {
            return Ok(None);
        }
        let iid = self.view.iid(row as usize);
        match self.catalog.doc(iid)? {
            Some(d) if d.row == row => Ok(Some(d)),
            found => self.not_recorded(row, iid, found),
        }
    }

    /// The record of the document at `row`, a live row a query found: as
    /// [`ReadState::live_record`], except that a document replaced since this snapshot
    /// answers with its current version, so that a query racing an update still
    /// returns the document.
    pub(super) fn hit_record(&self, row: u64) -> Result<Option<crate::store::DocRecord>> {
        let iid = self.view.iid(row as usize);
        match self.catalog.doc(iid)? {
            Some(d) => Ok(Some(d)),
            None => self.not_recorded(row, iid, None),
        }
    }

    /// A live row whose record is absent (`found`: `None`) or names another row: `None`
    /// when the catalog holds a tombstone for the row, else the damage as an error.
    fn not_recorded(&self, row: u64, iid: u64, found: Option<crate::store::DocRecord>) -> Result<Option<crate::store::DocRecord>> {
        if self.catalog.has_tombstone(row)? {
            return Ok(None);
        }
        let what = match found {
            Some(d) => format!("names row {} instead", d.row),
            None => "is missing".to_string(),
        };
        Err(Error::corrupt(self.catalog.path(), format!("row {row} is live but the record of its document (internal id {iid}) {what}")))
    }
    pub(super) fn mark_dead(&mut self, rows: impl IntoIterator<Item = u64>) {
        let bits = Arc::make_mut(&mut self.dead);
        for r in rows {
            let (w, b) = (r as usize / 64, r % 64);
            if w >= bits.len() {
                bits.resize(w + 1, 0);
            }
            if bits[w] >> b & 1 == 0 {
                bits[w] |= 1 << b;
                self.dead_count += 1;
            }
        }
    }
}

impl Db {
    pub(super) fn graph_params(m: &Manifest) -> GraphParams {
        GraphParams { m: m.hnsw_m, ef_construction: m.hnsw_ef_construction }
    }

    /// Loads the newest graph snapshot (or rebuilds when there is none or it is
    /// damaged) and inserts the rows committed after its watermark.
    pub(super) fn restore_graph(&self) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        let params = Self::graph_params(&w.manifest);
        let gdir = self.layout.graph_dir();
        let loaded = match &w.manifest.graph {
            Some(s) if s.rows <= w.manifest.rows => match Graph::load(&gdir, &s.basename, &s.files, params) {
                Ok(g) => Some((g, s.rows)),
                Err(e) => {
                    tracing::warn!(error = %e, "graph snapshot unusable; rebuilding the graph from the vector file");
                    None
                }
            },
            _ => None,
        };
        self.remove_stray_snapshots(&w.manifest);
        let state = self.read.read().unwrap().clone();
        let (graph, from) = match loaded {
            Some(x) => x,
            None => (Graph::new(params, w.manifest.rows as usize)?, 0),
        };
        let tail: Vec<usize> = (from as usize..state.view.len()).filter(|r| !state.is_dead(*r)).collect();
        if tail.len() > defer_above() {
            // Recovery in time proportional to nothing: the rows past the snapshot (all of
            // them after a crash before the first one) are answered by exact scan at once
            // and inserted into the graph in the background.
            tracing::info!(rows = tail.len(), "rows committed after the graph snapshot are searched exactly while the graph takes them in");
            if from == 0 && w.manifest.graph.is_some() {
                // The snapshot the manifest names was unusable: forget it, so that the
                // next checkpoint writes one even if it covers as many rows.
                let mut m = w.manifest.clone();
                m.graph = None;
                self.catalog().put_manifest(&m)?;
                self.set_manifest(&mut w, m);
            }
            graph.insert_rows(&state.view, &[]);
            graph.defer_rows(&state.view, &tail);
            let graph = Arc::new(graph);
            self.read.write().unwrap().graph = graph.clone();
            self.start_indexer(graph);
            return Ok(());
        }
        let rebuilt_from_scratch = from == 0 && !state.view.is_empty();
        if !tail.is_empty() {
            tracing::info!(rows = tail.len(), "inserting rows committed after the graph snapshot");
        }
        // Also attaches the vectors to a loaded graph when the tail is empty.
        graph.insert_rows(&state.view, &tail);
        self.read.write().unwrap().graph = Arc::new(graph);
        if rebuilt_from_scratch {
            // Save the work for the next open.
            self.snapshot_locked(&mut w, Some(state.dead_count))?;
        }
        Ok(())
    }

    /// Inserts the graph's deferred rows on a thread of its own, a chunk at a time, until
    /// none remain or [`Db::stop_indexer`] asks it to stop.
    fn start_indexer(&self, graph: Arc<Graph>) {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("duetdb-graph".into()).spawn(move || {
            let start = std::time::Instant::now();
            while !flag.load(Ordering::Relaxed) && graph.index_deferred(INDEX_CHUNK) > 0 {
                // The insert lock is not fair: without a pause between chunks a commit
                // waiting for it could wait for the whole backlog.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            tracing::debug!(seconds = start.elapsed().as_secs_f64(), left = graph.deferred_len(), "graph indexer done");
        });
        match spawned {
            Ok(handle) => *self.indexer.lock().unwrap() = Some((stop, handle)),
            // Without a thread the rows stay searchable by exact scan; the next open retries.
            Err(e) => tracing::warn!(error = %e, "cannot start the graph indexer; deferred rows stay searchable by exact scan"),
        }
    }

    /// Stops the background indexer at its next chunk and waits for it: the graph is
    /// then quiescent (its deferred rows, if any, stay deferred).
    pub(super) fn stop_indexer(&self) {
        let running = self.indexer.lock().unwrap().take();
        if let Some((stop, handle)) = running {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }

    pub(super) fn remove_stray_snapshots(&self, m: &Manifest) {
        let keep = m.graph.as_ref().map(|s| s.basename.clone());
        if let Ok(entries) = std::fs::read_dir(self.layout.graph_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let base = name.split(".hnsw.").next().unwrap_or("");
                if Some(base) != keep.as_deref() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Writes a graph snapshot if rows were added since the last one, so that the next
    /// open does not re-insert them. Documents are durable without it.
    pub fn checkpoint(&self) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        // What a snapshot now would cover: every row, or those below the first one the
        // background indexer has not taken in yet. Nothing new to cover, nothing to write.
        let covered = self.read.read().unwrap().graph.first_deferred().map_or(w.manifest.rows, |r| r as u64);
        if w.manifest.graph.as_ref().map_or(0, |s| s.rows) != covered {
            self.snapshot_locked(&mut w, None)?;
        }
        Ok(())
    }

    /// Rebuilds the graph from the live rows, dropping deleted and replaced ones, and
    /// snapshots it. Runs on its own when tombstones pass a quarter of the graph.
    pub fn rebuild_graph(&self) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        self.rebuild_locked(&mut w)
    }

    pub(super) fn rebuild_locked(&self, w: &mut Writer) -> Result<()> {
        self.stop_indexer();
        let state = self.read.read().unwrap().clone();
        let live: Vec<usize> = (0..state.view.len()).filter(|r| !state.is_dead(*r)).collect();
        tracing::info!(live = live.len(), dead = state.dead_count, "rebuilding the graph without tombstones");
        let g = Graph::new(Self::graph_params(&w.manifest), live.len())?;
        g.insert_rows(&state.view, &live);
        self.read.write().unwrap().graph = Arc::new(g);
        self.snapshot_locked(w, Some(state.dead_count))?;
        let purged = self.catalog().purge_dead_records()?;
        tracing::debug!(purged, "dropped records of dead documents");
        Ok(())
    }

    /// Housekeeping after a write: compact when dead rows pass the auto-compaction
    /// threshold, rebuild when tombstones fill the graph, snapshot when many rows were
    /// added since the last snapshot.
    pub(super) fn maintain(&self, w: &mut Writer) -> Result<()> {
        if self.compaction_due(w) {
            // The write itself is durable already: a compaction that fails before its
            // switch leaves the database as it was, so it is logged, not returned (unless
            // it closed the database, which the caller must learn).
            return match self.compact_locked(w) {
                Ok(_) => Ok(()),
                Err(e) if w.closed => Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "automatic compaction failed; the database is unchanged");
                    Ok(())
                }
            };
        }
        let (points, dead) = {
            let r = self.read.read().unwrap();
            (r.graph.len() as u64, r.dead_count)
        };
        let dead_at_build = w.manifest.graph.as_ref().map_or(0, |s| s.dead_at_build);
        let dead_in_graph = dead.saturating_sub(dead_at_build);
        if dead_in_graph >= 64 && dead_in_graph * 4 > points {
            return self.rebuild_locked(w);
        }
        if self.read.read().unwrap().graph.deferred_len() > 0 {
            // The indexer is still taking rows in: a snapshot now would cover no more.
            return Ok(());
        }
        let snap = w.manifest.graph.as_ref().map_or(0, |s| s.rows);
        let tail = w.manifest.rows - snap;
        if tail >= 50_000.max(snap / 2) {
            self.snapshot_locked(w, None)?;
        }
        Ok(())
    }

    /// Dumps the current graph and records it in the manifest with the rows it covers:
    /// every committed row (the writer lock is held), or those below the first row the
    /// background indexer has not taken in yet.
    pub(super) fn snapshot_locked(&self, w: &mut Writer, rebuilt_with_dead: Option<u64>) -> Result<()> {
        let graph = self.read.read().unwrap().graph.clone();
        let dead_at_build = rebuilt_with_dead.unwrap_or_else(|| w.manifest.graph.as_ref().map_or(0, |s| s.dead_at_build));
        let basename = format!("g{:06}-r{:010}-{:08x}", w.manifest.generation, w.manifest.rows, fastrand_u32());
        let (files, first_deferred) = graph.dump_covering(&self.layout.graph_dir(), &basename)?;
        let mut m = w.manifest.clone();
        let rows = first_deferred.map_or(m.rows, |r| r as u64);
        m.graph = Some(GraphSnapshot { basename, rows, dead_at_build, files });
        self.catalog().put_manifest(&m)?;
        self.set_manifest(w, m);
        self.remove_stray_snapshots(&w.manifest);
        Ok(())
    }

    pub(super) fn read_state(&self) -> ReadState {
        self.read.read().unwrap().clone()
    }

    /// The current catalog (writers hold the writer lock, so it is the one they commit to).
    pub(super) fn catalog(&self) -> Arc<Catalog> {
        self.read.read().unwrap().catalog.clone()
    }
}

fn fastrand_u32() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u32) ^ std::process::id().rotate_left(16)
}
