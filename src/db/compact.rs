//! Compaction: the database rewritten without its dead rows.
//!
//! Every update appends a row and leaves the old one dead; deletes leave dead rows too.
//! A compaction keeps the live rows, in their order, renumbered from 0: the vector files
//! (the active generation's and every kept one's), a fresh sled catalog (sled keeps its
//! garbage until it is rewritten), the graph and the full-text index. Internal document
//! ids do not change, so the id map is the same and a reader that still holds the old
//! snapshot reads the same documents from either catalog.
//!
//! It runs under the writer lock (ingests wait; queries go on from their snapshot), builds
//! the whole compacted database in `DB/compact/`, and switches to it through an intent
//! file (`store/compaction.rs`): killed at any moment, the database opens as it was before
//! or as it is after, never between.

use super::snapshot::ReadState;
use super::{Db, Writer};
use crate::error::{Error, Result};
use crate::index::fulltext::{Coverage, FullText};
use crate::index::Graph;
use crate::store::compaction::{self, pause, SwitchPlan};
use crate::store::{Catalog, GraphSnapshot, Layout, Manifest, RecordFile, VectorFile};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Default of [`DbOptions::auto_compact`](super::DbOptions::auto_compact): compact when
/// half of the active vector file's rows are dead.
pub const DEFAULT_AUTO_COMPACT: f64 = 0.5;

/// Fewest dead rows that start an automatic compaction: below it the dead rows cost
/// less than rewriting the database would.
pub const AUTO_COMPACT_MIN_DEAD: u64 = 1000;

/// Rows copied, and texts indexed, per write while building the compacted files.
const CHUNK: usize = 4096;

/// What [`Db::compact`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactReport {
    /// Rows of the active vector file before (live and dead).
    pub rows_before: u64,
    /// Rows after: the live documents.
    pub rows_after: u64,
    /// Bytes of every file of the database before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Wall time of the whole compaction.
    pub seconds: f64,
}

impl Db {
    /// Rewrites the database without dead rows (replaced and deleted documents): vector
    /// files, catalog, graph and full-text index. Queries go on meanwhile and see the
    /// database as before until the switch, then as after; writes wait. A compaction
    /// killed at any moment leaves the database as before or as after it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = duetdb::Db::options().embedder_spec("hash").open(dir.path().join("db")).unwrap();
    /// for round in 0..3 {
    ///     db.ingest([duetdb::Document::new("a", format!("version {round}"))]).unwrap();
    /// }
    /// assert_eq!(db.stats().unwrap().vector_rows, 3);
    /// let report = db.compact().unwrap();
    /// assert_eq!((report.rows_before, report.rows_after), (3, 1));
    /// assert_eq!(db.get("a").unwrap().unwrap().text, "version 2");
    /// ```
    pub fn compact(&self) -> Result<CompactReport> {
        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        self.compact_locked(&mut w)
    }

    /// Whether an automatic compaction is due: the option is on, no reindex is pending,
    /// and dead rows pass both the ratio and [`AUTO_COMPACT_MIN_DEAD`].
    pub(super) fn compaction_due(&self, w: &Writer) -> bool {
        let Some(ratio) = self.auto_compact else { return false };
        let dead = self.read.read().unwrap().dead_count;
        w.manifest.reindex.is_none() && dead >= AUTO_COMPACT_MIN_DEAD && dead as f64 >= ratio * w.manifest.rows as f64
    }

    pub(super) fn compact_locked(&self, w: &mut Writer) -> Result<CompactReport> {
        if let Some(t) = &w.manifest.reindex {
            return Err(Error::invalid(format!(
                "a reindex into generation {} is in progress: finish it (`duetdb reindex`) or roll it back before compacting",
                t.generation
            )));
        }
        let start = Instant::now();
        let bytes_before = super::dir_size(self.layout.root());
        // The graph is rebuilt: rows the background indexer has not taken in yet go in too.
        self.stop_indexer();
        let state = self.read_state();
        let rows_before = w.manifest.rows;
        let staging = Layout::new(self.layout.compact_dir());
        // A staging directory of an earlier compaction of this process that failed.
        compaction::remove(staging.root())?;
        std::fs::create_dir_all(staging.vectors_dir()).map_err(|e| Error::io(staging.vectors_dir(), e))?;
        let built = self.build_compacted(&w.manifest, &state, &staging);
        let (manifest, active, graph, commit_state, plan) = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = compaction::remove(staging.root());
                return Err(e);
            }
        };
        pause();
        compaction::commit(&self.layout, &plan)?;
        // Past the commit point: the next open finishes the switch if this one fails.
        let switched = (|| {
            pause();
            compaction::finish(&self.layout, &plan)?;
            let mut catalog = Catalog::open(&self.layout.catalog())?;
            catalog.attach_record(RecordFile::open(&self.layout.record(), &commit_state, false)?);
            let fulltext = match state.fulltext {
                Some(_) => Some(Arc::new(FullText::open(&self.layout.fulltext_dir())?.0)),
                None => None,
            };
            Ok::<_, Error>((catalog, fulltext))
        })();
        let (catalog, fulltext) = match switched {
            Ok(x) => x,
            Err(e) => {
                w.closed = true;
                return Err(Error::invalid(format!(
                    "the compaction is committed but could not be switched to in this process ({e}); the database is closed: open it again to finish the switch"
                )));
            }
        };
        let view = active.view()?;
        let epoch = state.epoch + 1;
        self.meta.write().unwrap_or_else(|e| e.into_inner()).reset(epoch);
        *self.read.write().unwrap() = ReadState {
            view,
            graph: Arc::new(graph),
            dead: Arc::new(Vec::new()),
            dead_count: 0,
            embedder: state.embedder.clone(),
            catalog: Arc::new(catalog),
            fulltext,
            epoch,
        };
        *self.fulltext_lag.lock().unwrap() = None;
        w.vectors = active.renamed(self.layout.vectors(manifest.generation));
        let rows_after = manifest.rows;
        self.set_manifest(w, manifest);
        let report =
            CompactReport { rows_before, rows_after, bytes_before, bytes_after: super::dir_size(self.layout.root()), seconds: start.elapsed().as_secs_f64() };
        tracing::info!(rows_before, rows_after, bytes_before, bytes_after = report.bytes_after, seconds = report.seconds, "compacted");
        Ok(report)
    }

    /// Builds the compacted database in `staging`: vector files, graph snapshot, full-text
    /// index, catalog and commit record, and the plan that switches to them.
    #[allow(clippy::type_complexity)]
    fn build_compacted(
        &self,
        m: &Manifest,
        state: &ReadState,
        staging: &Layout,
    ) -> Result<(Manifest, VectorFile, Graph, crate::store::CommitState, SwitchPlan)> {
        let live: Vec<usize> = (0..state.view.len()).filter(|r| !state.is_dead(*r)).collect();
        let n = live.len() as u64;
        let mut plan = SwitchPlan::default();
        let mut manifest = m.clone();
        manifest.rows = n;
        manifest.compactions += 1;

        // Vectors: the live rows of the active file, then of each kept generation. Rows
        // share one order across generations, so a kept file's live rows (those below its
        // row count) are a prefix of the new numbering.
        pause();
        let mut active = VectorFile::create(&staging.vectors(m.generation), m.dim, m.generation)?;
        copy_rows(&mut active, &state.view, &live)?;
        manifest.rows_crc = Some(active.crc());
        plan.moves.push(format!("vectors/{}", file_name(&staging.vectors(m.generation))));
        for k in manifest.kept.iter_mut() {
            let old = VectorFile::open(&self.layout.vectors(k.generation), k.dim, k.generation, k.rows, k.rows_crc)?;
            let view = old.view()?;
            let rows: Vec<usize> = live.iter().copied().take_while(|r| (*r as u64) < k.rows).collect();
            let mut f = VectorFile::create(&staging.vectors(k.generation), k.dim, k.generation)?;
            copy_rows(&mut f, &view, &rows)?;
            (k.rows, k.rows_crc) = (rows.len() as u64, Some(f.crc()));
            plan.moves.push(format!("vectors/{}", file_name(&staging.vectors(k.generation))));
        }

        // The graph, built afresh on the compacted rows.
        pause();
        let view = active.view()?;
        let graph = Graph::new(Self::graph_params(m), live.len())?;
        graph.insert_rows(&view, &(0..live.len()).collect::<Vec<_>>());
        let basename = format!("g{:06}-r{:010}-c{:06}", m.generation, n, manifest.compactions);
        let files = graph.dump(&staging.graph_dir(), &basename)?;
        manifest.graph = Some(GraphSnapshot { basename, rows: n, dead_at_build: 0, files });
        plan.moves.push("graph".into());

        // The catalog: every live record with its new row, and the commit record that
        // matches it (its sequence number continues the old one's).
        pause();
        let old_seq = state.catalog.commit_state()?.map_or(0, |(s, _)| s.seq);
        let docs = live.iter().enumerate().map(|(new_row, &row)| {
            let iid = state.view.iid(row);
            // Under the writer lock nothing replaced a live row since `state`: a tombstone
            // without its dead mark is damage too (a missing record is live_record's error).
            let mut rec = state.live_record(row as u64)?.ok_or_else(|| {
                Error::corrupt(self.layout.catalog(), format!("live row {row} has no document record (internal id {iid}); run `duetdb check`"))
            })?;
            rec.row = new_row as u64;
            Ok((iid, rec))
        });
        let (catalog, commit_state) = Catalog::write_fresh(&staging.catalog(), docs, &manifest, old_seq + 1)?;
        RecordFile::open(&staging.record(), &commit_state, true)?;
        plan.moves.extend(["catalog".to_string(), "COMMIT".to_string()]);

        // The full-text index, from the new catalog; dropped if this process has none
        // (the next open that has one builds it).
        pause();
        if state.fulltext.is_some() {
            build_fulltext(&catalog, &staging.fulltext_dir(), n)?;
            plan.moves.push("fulltext".into());
        } else {
            plan.drops.push("fulltext".into());
        }
        Ok((manifest, active, graph, commit_state, plan))
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Appends `rows` of `view`, with their internal ids, to `f` and commits them.
fn copy_rows(f: &mut VectorFile, view: &crate::store::VectorView, rows: &[usize]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let batch: Vec<(u64, &[f32])> = chunk.iter().map(|&r| (view.iid(r), view.vector(r))).collect();
        f.write_pending(&batch)?;
        f.commit(batch.len() as u64);
    }
    Ok(())
}

/// Indexes every document of `catalog` into a new full-text index in `dir`, covering
/// `rows` rows with no tombstones.
fn build_fulltext(catalog: &Catalog, dir: &std::path::Path, rows: u64) -> Result<()> {
    let ft = FullText::recreate(dir)?;
    let cov = Coverage { rows, dead: 0 };
    let mut chunk: Vec<(u64, String)> = Vec::with_capacity(CHUNK);
    let mut docs = catalog.docs().peekable();
    while docs.peek().is_some() {
        chunk.clear();
        for item in docs.by_ref().take(CHUNK) {
            let (_, rec) = item?;
            chunk.push((rec.row, rec.text));
        }
        let texts: Vec<(u64, &str)> = chunk.iter().map(|(r, t)| (*r, t.as_str())).collect();
        ft.apply(&texts, &[], cov, false)?;
    }
    if rows == 0 {
        ft.apply(&[], &[], cov, false)?;
    }
    Ok(())
}
