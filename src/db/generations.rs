//! Generations: moving a live database to another embedder.
//!
//! A generation is one embedder's vector file (and, while active, its graph). Every
//! generation keeps the active file's row order: row `r` of each file holds the same
//! document version, so the id map and the tombstones serve all of them, a rollback can
//! reuse a kept file, and the switch is one manifest write. Dead rows are written as
//! zeros instead of being embedded.
//!
//! A reindex ([`Db::reindex`]) records its target generation in the manifest; the
//! target's committed row count is the durable cursor. Each batch is embedded outside
//! the writer lock (on the job's own thread pool, so queries keep a core), then its rows
//! are fsynced and the cursor is advanced in one manifest write, like an ingest. A kill
//! at any point resumes from the cursor; rows past it are cut off on open. Once the
//! cursor has reached the end of the active file, ingests write both generations, so the
//! switch never has to catch up on more than the graph.

use super::gen_embedder::{check, GenEmbedder};
use super::snapshot::ReadState;
use super::Db;
use crate::embed::{Embedder, Kind};
use crate::error::{Error, Result};
use crate::index::Graph;
use crate::store::{GenerationRecord, Manifest, VectorFile};
use std::sync::Arc;

fn record_of(e: &dyn Embedder, generation: u64) -> GenerationRecord {
    GenerationRecord { generation, dim: e.dim(), embedder_fingerprint: e.fingerprint(), embedder_spec: e.spec(), rows: 0, rows_crc: Some(0) }
}

/// Where a reindex stands: target rows written out of the active generation's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReindexProgress {
    /// Rows of the target generation committed (the durable cursor).
    pub done: u64,
    /// Rows of the active generation (grows while documents are ingested).
    pub total: u64,
}

/// What one [`ReindexJob::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReindexStep {
    /// One batch became durable; more remain, or the switch is next.
    Batch(ReindexProgress),
    /// The target generation is now the active one.
    Switched {
        /// The generation now active.
        generation: u64,
    },
    /// The embedder was already the active one: nothing to do.
    AlreadyActive,
}

/// A reindex of a database into a new generation; see [`Db::reindex`].
///
/// Run it with [`ReindexJob::run_to_completion`], or [`ReindexJob::step`] by step to
/// report progress. Each step commits one batch durably; a job that is dropped, or a
/// process that dies, leaves a target that the next `reindex` with the same embedder
/// resumes.
pub struct ReindexJob<'a> {
    db: &'a Db,
    embedder: Arc<dyn Embedder>,
    generation: u64,
    batch: usize,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    noop: bool,
}

impl std::fmt::Debug for ReindexJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReindexJob").field("generation", &self.generation).field("batch", &self.batch).field("threads", &self.threads).finish()
    }
}

/// Threads a reindex embeds with unless told otherwise: half the cores, so that queries
/// keep the rest.
pub fn default_reindex_threads() -> usize {
    (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1)
}

impl<'a> ReindexJob<'a> {
    /// Checks a batch size and a thread count against [`crate::limits`]: what
    /// [`ReindexJob::step`] checks, for a caller that wants to refuse them before
    /// [`Db::reindex`] records a target.
    pub fn check_settings(batch: usize, threads: usize) -> Result<()> {
        crate::limits::check("the reindex batch size", batch, 1, crate::limits::MAX_BATCH)?;
        crate::limits::check("the reindex threads", threads, 1, crate::limits::max_threads())?;
        Ok(())
    }

    /// Documents embedded per durable batch (default 64; 1 to
    /// [`crate::limits::MAX_BATCH`], checked when the job runs).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n;
        self
    }

    /// Threads the job embeds with (default: half the cores, at least one; at most
    /// [`crate::limits::max_threads`], checked when the job runs).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self.pool = None;
        self
    }

    /// The generation being filled.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the embedder was already active (the job has nothing to do).
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// Durable progress now.
    pub fn progress(&self) -> ReindexProgress {
        let w = self.db.writer.lock().unwrap();
        let done = w.manifest.reindex.as_ref().map_or(w.manifest.rows, |t| t.rows);
        ReindexProgress { done, total: w.manifest.rows }
    }

    /// Runs every batch and the switch; `each` sees every step.
    pub fn run(&mut self, each: &mut dyn FnMut(ReindexStep)) -> Result<ReindexStep> {
        loop {
            let s = self.step()?;
            each(s);
            if !matches!(s, ReindexStep::Batch(_)) {
                return Ok(s);
            }
        }
    }

    /// Runs the job to its switch.
    pub fn run_to_completion(&mut self) -> Result<ReindexStep> {
        self.run(&mut |_| {})
    }

    /// Embeds and commits the next batch, or switches when every row is done.
    pub fn step(&mut self) -> Result<ReindexStep> {
        if self.noop {
            return Ok(ReindexStep::AlreadyActive);
        }
        Self::check_settings(self.batch, self.threads)?;
        let (start, total) = {
            let w = self.db.writer.lock().unwrap();
            if w.closed {
                return Err(Error::Closed);
            }
            let t = self.target_of(&w.manifest)?;
            (t.rows, w.manifest.rows)
        };
        if start >= total {
            return self.switch();
        }
        let end = (start + self.batch as u64).min(total);
        // Committed rows never change, and the read state already covers `total`.
        let state = self.db.read_state();
        let mut texts = Vec::new();
        let mut slots = Vec::new();
        for r in start..end {
            let text = state.live_record(r)?.map(|d| d.text);
            slots.push((state.view.iid(r as usize), text.as_ref().map(|_| texts.len())));
            if let Some(t) = text {
                texts.push(t);
            }
        }
        let vecs = self.embed(&texts)?;
        let zeros = vec![0.0f32; self.embedder.dim()];
        let rows: Vec<(u64, &[f32])> = slots.iter().map(|(iid, i)| (*iid, i.map_or(zeros.as_slice(), |i| vecs[i].as_slice()))).collect();

        let mut w = self.db.writer.lock().unwrap();
        let t = self.target_of(&w.manifest)?;
        if t.rows != start {
            // Ingests wrote this range meanwhile (they do once the cursor is at the end).
            return Ok(ReindexStep::Batch(ReindexProgress { done: t.rows, total: w.manifest.rows }));
        }
        let target = w.target.as_mut().expect("a reindex target has its file open");
        target.write_pending(&rows)?;
        let crc = target.pending_crc();
        let mut m = w.manifest.clone();
        let t = m.reindex.as_mut().expect("checked");
        t.rows = end;
        t.rows_crc = Some(crc);
        self.db.catalog().put_manifest(&m)?;
        w.target.as_mut().expect("checked").commit(end - start);
        let progress = ReindexProgress { done: end, total: m.rows };
        self.db.set_manifest(&mut w, m);
        Ok(ReindexStep::Batch(progress))
    }

    fn target_of<'m>(&self, m: &'m Manifest) -> Result<&'m GenerationRecord> {
        m.reindex
            .as_ref()
            .filter(|t| t.generation == self.generation)
            .ok_or_else(|| Error::invalid(format!("the reindex into generation {} is no longer pending (it was switched or replaced)", self.generation)))
    }

    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if self.pool.is_none() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(|i| format!("duetdb-reindex-{i}"))
                .build()
                .map_err(|e| Error::invalid(format!("cannot start the reindex thread pool: {e}")))?;
            self.pool = Some(pool);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let e = &self.embedder;
        let vecs = self.pool.as_ref().expect("built").install(|| e.embed(&refs, Kind::Passage))?;
        super::commit::checked_vectors(vecs, texts.len(), e.dim())
    }

    /// Builds the target's graph (outside the writer lock), then makes the target the
    /// active generation in one manifest write and keeps the old one for rollback.
    fn switch(&mut self) -> Result<ReindexStep> {
        let (view, params, covered) = {
            let w = self.db.writer.lock().unwrap();
            self.target_of(&w.manifest)?;
            let view = w.target.as_ref().expect("target open").view()?;
            (view, Db::graph_params(&w.manifest), w.manifest.rows)
        };
        let state = self.db.read_state();
        let live: Vec<usize> = (0..view.len()).filter(|r| !state.is_dead(*r)).collect();
        tracing::info!(generation = self.generation, live = live.len(), "building the new generation's graph");
        let graph = Graph::new(params, view.len())?;
        graph.insert_rows(&view, &live);

        let mut w = self.db.writer.lock().unwrap();
        let t = self.target_of(&w.manifest)?.clone();
        if t.rows < w.manifest.rows {
            // Rows arrived before ingests started writing both generations.
            return Ok(ReindexStep::Batch(ReindexProgress { done: t.rows, total: w.manifest.rows }));
        }
        // The old generation's graph is about to be replaced: its indexer, if any, stops.
        self.db.stop_indexer();
        let view = w.target.as_ref().expect("target open").view()?;
        let tail: Vec<usize> = (covered as usize..view.len()).filter(|r| !state.is_dead(*r)).collect();
        graph.insert_rows(&view, &tail);

        let mut m = w.manifest.clone();
        let old = m.active_generation();
        m.kept.retain(|k| k.generation != t.generation && k.embedder_fingerprint != old.embedder_fingerprint);
        m.kept.insert(0, old);
        m.generation = t.generation;
        m.dim = t.dim;
        m.embedder_fingerprint = t.embedder_fingerprint.clone();
        m.embedder_spec = t.embedder_spec.clone();
        m.rows_crc = t.rows_crc;
        m.reindex = None;
        m.graph = None;
        self.db.catalog().put_manifest(&m)?;
        // The switch is durable: the next open serves the new generation.
        let target = w.target.take().expect("target open");
        w.target_embedder = None;
        w.vectors = target;
        self.db.set_manifest(&mut w, m);
        let embedder = Arc::new(GenEmbedder::active(&w.manifest, Some(self.embedder.clone())));
        let dead_count = {
            let mut r = self.db.read.write().unwrap();
            let dead_count = r.dead_count;
            *r = ReadState { view, graph: Arc::new(graph), embedder, ..r.clone() };
            dead_count
        };
        let built_with = state.dead_count.min(dead_count);
        self.db.snapshot_locked(&mut w, Some(built_with))?;
        tracing::info!(generation = self.generation, "switched to the new generation");
        Ok(ReindexStep::Switched { generation: self.generation })
    }
}

/// Where the database stands on generations, as `duetdb reindex --status` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationStatus {
    /// The active generation.
    pub active: GenerationRecord,
    /// The generation a reindex is filling, with its cursor in `rows`.
    pub reindex: Option<GenerationRecord>,
    /// Generations kept for rollback, newest first.
    pub kept: Vec<GenerationRecord>,
}

impl Db {
    /// Starts (or resumes) re-embedding every document with `embedder` into a new
    /// generation. Queries keep using the active generation until the job's last step
    /// switches to the new one in one manifest write; the old generation is kept for
    /// [`Db::rollback`] until [`Db::gc`].
    ///
    /// Incremental: a kept generation of the same embedder is reused from where it
    /// stopped, and an unfinished reindex with the same embedder resumes from its durable
    /// cursor. Reindexing to the active embedder is a no-op job; asking for another
    /// embedder while a reindex is unfinished is an error that names it.
    ///
    /// ```
    /// use duetdb::{Db, Document};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Db::options().embedder_spec("hash:64").open(dir.path().join("db")).unwrap();
    /// db.ingest([Document::new("a", "alpha beta"), Document::new("b", "gamma delta")]).unwrap();
    /// let next = duetdb::embed::from_spec("hash:128").unwrap();
    /// db.reindex(next).unwrap().batch_size(1).run_to_completion().unwrap();
    /// assert_eq!(db.dimension(), 128);
    /// db.rollback().unwrap().run_to_completion().unwrap();   // back to hash:64, nothing re-embedded
    /// assert_eq!(db.dimension(), 64);
    /// ```
    pub fn reindex(&self, embedder: Arc<dyn Embedder>) -> Result<ReindexJob<'_>> {
        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        let fp = embedder.fingerprint();
        let job =
            |generation, noop| ReindexJob { db: self, embedder: embedder.clone(), generation, batch: 64, pool: None, threads: default_reindex_threads(), noop };
        if fp == w.manifest.embedder_fingerprint {
            return Ok(job(w.manifest.generation, true));
        }
        if let Some(t) = &w.manifest.reindex {
            if t.embedder_fingerprint != fp {
                return Err(Error::invalid(format!(
                    "a reindex into generation {} with embedder `{}` ({}) is unfinished: resume it with that embedder before starting another",
                    t.generation,
                    t.embedder_spec.as_deref().unwrap_or("custom"),
                    t.embedder_fingerprint
                )));
            }
            check(&t.embedder_fingerprint, t.dim, embedder.as_ref())?;
            let g = t.generation;
            w.target_embedder = Some(embedder.clone());
            return Ok(job(g, false));
        }
        let mut m = w.manifest.clone();
        let target = match m.kept.iter().position(|k| k.embedder_fingerprint == fp) {
            Some(i) => {
                let k = m.kept.remove(i);
                check(&k.embedder_fingerprint, k.dim, embedder.as_ref())?;
                let rows = k.rows.min(m.rows);
                let crc = if rows == k.rows { k.rows_crc } else { None };
                let file = VectorFile::open(&self.layout.vectors(k.generation), k.dim, k.generation, rows, crc)?;
                let k = GenerationRecord { rows, rows_crc: Some(file.crc()), ..k };
                tracing::info!(generation = k.generation, reused = k.rows, "reusing a kept generation");
                (k, file)
            }
            None => {
                let g = 1 + m.kept.iter().map(|k| k.generation).chain([m.generation]).max().unwrap_or(0);
                let path = self.layout.vectors(g);
                // No record names this file: it is left over from a reindex that died
                // before recording it.
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
                (record_of(embedder.as_ref(), g), VectorFile::create(&path, embedder.dim(), g)?)
            }
        };
        let g = target.0.generation;
        m.reindex = Some(target.0);
        self.catalog().put_manifest(&m)?;
        self.set_manifest(&mut w, m);
        w.target = Some(target.1);
        w.target_embedder = Some(embedder.clone());
        Ok(job(g, false))
    }

    /// Starts the switch back to the newest kept generation (see [`Db::reindex`]): only
    /// rows ingested since the switch away from it are embedded.
    pub fn rollback(&self) -> Result<ReindexJob<'_>> {
        let kept = {
            let w = self.writer.lock().unwrap();
            if let Some(t) = &w.manifest.reindex {
                return Err(Error::invalid(format!("a reindex into generation {} is unfinished: finish it before rolling back", t.generation)));
            }
            w.manifest.kept.first().cloned().ok_or_else(|| Error::invalid("no earlier generation is kept: nothing to roll back to"))?
        };
        let e = GenEmbedder::of(&kept, None).get()?;
        self.reindex(e)
    }

    /// Deletes the kept generations (their vector files); returns their numbers. After
    /// it, a rollback is no longer possible.
    pub fn gc(&self) -> Result<Vec<u64>> {
        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        let mut m = w.manifest.clone();
        let gone: Vec<u64> = m.kept.drain(..).map(|k| k.generation).collect();
        self.catalog().put_manifest(&m)?;
        self.set_manifest(&mut w, m);
        // Files after the manifest: no record ever names a missing file.
        let live: Vec<u64> = w.manifest.reindex.iter().map(|t| t.generation).chain([w.manifest.generation]).collect();
        let dir = self.layout.vectors_dir();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
            let keep = live.iter().any(|g| entry.path() == self.layout.vectors(*g));
            if !keep {
                std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        crate::durable::sync_dir(&dir)?;
        Ok(gone)
    }

    /// The active generation, any reindex target and the kept generations.
    pub fn generations(&self) -> GenerationStatus {
        let w = self.writer.lock().unwrap();
        let m = &w.manifest;
        GenerationStatus { active: m.active_generation(), reindex: m.reindex.clone(), kept: m.kept.clone() }
    }
}
