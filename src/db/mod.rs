//! The engine: open, ingest, query, get, delete, stats, close.
//!
//! `db/` is the only layer that knows embedders, storage and the graph together, and
//! it owns the commit protocol of a batch:
//!
//! 1. embed the batch (documents whose text and metadata are unchanged are skipped);
//! 2. append the vectors after the committed rows of the vector file and fsync them;
//! 3. commit documents, id map, tombstones and manifest (with the rows' new checksum)
//!    in one sled transaction and flush it. Only now does the batch exist: a crash
//!    before this point leaves rows past the committed count, which the next open cuts
//!    off. The commit record (`COMMIT`) is written next; the open checks the catalog
//!    against it before it touches anything (see `integrity/mod.rs`);
//! 4. insert the rows into the in-memory graph, then publish the new rows and the
//!    tombstones of replaced versions to readers in one step.
//!
//! The graph is persisted as snapshots at checkpoints (see [`Db::checkpoint`]); rows
//! after the snapshot's watermark are inserted again on open.
//!
//! Where things are: `commit.rs` holds the commit protocol (ingest, delete),
//! `ingest_stream.rs` the pipeline that embeds one batch while the previous commits,
//! `snapshot.rs` what readers see and the graph's snapshots (restore on open, rebuild,
//! checkpoint), `generations.rs` moving to another embedder (reindex, switch, rollback,
//! gc), `fulltext.rs` the BM25 index as derived state (catch-up, rebuild), `query.rs`
//! the query builder (vector, text, hybrid), `integrity/` the commit record check on
//! open, `check`, `dump` and `backup`, `gen_embedder.rs` a generation's lazily loaded
//! embedder, `export.rs` every live document with its vector, `filter.rs` and `filter_parse.rs` metadata filters, `meta_cache.rs` the metadata they read, `document.rs` the types users hold. ARCHITECTURE.md draws the whole map.

mod commit;
mod compact;
mod document;
mod export;
mod filter;
mod filter_parse;
mod fulltext;
mod gen_embedder;
mod generations;
mod ingest_stream;
mod integrity;
mod json_input;
mod meta_cache;
mod query;
mod snapshot;

pub use compact::{CompactReport, AUTO_COMPACT_MIN_DEAD, DEFAULT_AUTO_COMPACT};
pub use document::{Document, Hit, IngestReport, Stats};
pub use export::{Export, ExportAt, ExportInfo};
pub use filter::Filter;
pub use generations::{default_reindex_threads, GenerationStatus, ReindexJob, ReindexProgress, ReindexStep};
pub use integrity::{check_at, dump_at, CheckReport, DumpReport, Problem};
pub use json_input::{JsonFields, MetadataFields};
pub use query::{fuse, Fused, Fusion, Mode, Query, DEFAULT_CANDIDATES, DEFAULT_MODE, DEFAULT_RRF_K, DEFAULT_VECTOR_WEIGHT};

use crate::embed::{self, Embedder};
use crate::error::{Error, Result};
use crate::index::{Graph, GraphParams};
use crate::store::{Catalog, DirLock, Layout, Manifest, RecordFile, VectorFile, FORMAT_VERSION};
use gen_embedder::GenEmbedder;
use snapshot::ReadState;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Default limit on the text of one document (1 MiB).
pub const DEFAULT_MAX_TEXT_BYTES: usize = 1 << 20;

/// Options for opening or creating a database; see [`Db::options`].
#[derive(Clone)]
pub struct DbOptions {
    embedder: Option<Arc<dyn Embedder>>,
    embedder_spec: Option<String>,
    graph: GraphParams,
    max_text_bytes: usize,
    create: bool,
    full_text: bool,
    auto_compact: Option<f64>,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            embedder: None,
            embedder_spec: None,
            graph: GraphParams::default(),
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            create: true,
            full_text: true,
            auto_compact: Some(DEFAULT_AUTO_COMPACT),
        }
    }
}

impl std::fmt::Debug for DbOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbOptions")
            .field("embedder", &self.embedder.as_ref().map(|e| e.fingerprint()))
            .field("embedder_spec", &self.embedder_spec)
            .field("graph", &self.graph)
            .field("max_text_bytes", &self.max_text_bytes)
            .field("create", &self.create)
            .field("full_text", &self.full_text)
            .field("auto_compact", &self.auto_compact)
            .finish()
    }
}

impl DbOptions {
    /// Uses this embedder. A new database records it; an existing one must have been
    /// built with the same fingerprint.
    pub fn embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }
    /// Uses the built-in embedder named by `spec` (see [`embed::from_spec`]).
    pub fn embedder_spec(mut self, spec: impl Into<String>) -> Self {
        self.embedder_spec = Some(spec.into());
        self
    }
    /// The device of the model embedders loaded from now on (CPU, or a GPU with the
    /// `cuda` feature). Like the precision, a setting of the process
    /// ([`embed::set_device`]): it applies to every embedder loaded after this call.
    pub fn device(self, d: embed::DeviceChoice) -> Self {
        embed::set_device(d);
        self
    }
    /// HNSW parameters for a new database (an existing one keeps its own).
    pub fn graph_params(mut self, p: GraphParams) -> Self {
        self.graph = p;
        self
    }
    /// Largest accepted document text, in bytes.
    pub fn max_text_bytes(mut self, n: usize) -> Self {
        self.max_text_bytes = n;
        self
    }
    /// Whether a missing database is created (default) or is an error.
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }
    /// Whether to open (and keep up to date) the full-text index (default yes). Without
    /// it, `text` queries are an error and `hybrid` ones use the vectors alone; the index
    /// catches up on the next open that has it. For bulk loads and benchmarks.
    pub fn full_text(mut self, yes: bool) -> Self {
        self.full_text = yes;
        self
    }

    /// Compacts automatically (see [`Db::compact`]) after a write that leaves at least
    /// this fraction of the active vector file's rows dead, and at least
    /// [`AUTO_COMPACT_MIN_DEAD`] of them; `None` turns it off. Default
    /// [`DEFAULT_AUTO_COMPACT`]. The write that crosses the threshold returns once the
    /// compaction is done.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = duetdb::Db::options().embedder_spec("hash").auto_compact(None).open(dir.path().join("db")).unwrap();
    /// assert_eq!(db.stats().unwrap().auto_compact, None);
    /// ```
    pub fn auto_compact(mut self, ratio: Option<f64>) -> Self {
        self.auto_compact = ratio;
        self
    }

    fn resolve_embedder(&self) -> Result<Option<Arc<dyn Embedder>>> {
        match (&self.embedder, &self.embedder_spec) {
            (Some(e), _) => Ok(Some(e.clone())),
            (None, Some(s)) => embed::from_spec(s).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Opens the database at `path`, creating it if missing (unless disabled).
    pub fn open(self, path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path.as_ref(), self)
    }
}

struct Writer {
    /// The active generation's vector file.
    vectors: VectorFile,
    /// The reindex target's vector file, while one is pending.
    target: Option<VectorFile>,
    /// The reindex target's embedder, while a job for it exists in this process: with
    /// it, ingests write both generations once the job has caught up.
    target_embedder: Option<Arc<dyn Embedder>>,
    manifest: Manifest,
    closed: bool,
}

/// An open database. Cheap to share: `Db` is `Send + Sync`, any number of threads may
/// query while one ingests (writes are serialised internally).
///
/// ```
/// use duetdb::{Db, Document};
/// let dir = tempfile::tempdir().unwrap();
/// // `Db::open(path)` uses the built-in PromptEmbedder; here the lexical `hash` embedder.
/// let db = Db::options().embedder_spec("hash").open(dir.path().join("notes.duet")).unwrap();
/// db.ingest([Document::new("ripgrep", "ripgrep recursively searches directories for a regex pattern"),
///            Document::new("mpv", "mpv is a media player for the command line")]).unwrap();
/// let hits = db.query("search directories for a regex").limit(1).run().unwrap();
/// assert_eq!(hits[0].id, "ripgrep");
/// ```
pub struct Db {
    layout: Layout,
    max_text_bytes: usize,
    writer: Mutex<Writer>,
    read: RwLock<ReadState>,
    /// The background graph indexer after a crash (see `snapshot.rs`): its stop flag
    /// and thread.
    indexer: Mutex<Option<(Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>>,
    /// The manifest as last committed, for readers (`len`, `stats`): they never take the
    /// writer lock, which an ingest holds while it embeds a batch.
    published: RwLock<Arc<Manifest>>,
    /// The first row a failed full-text update missed, if any (see `fulltext.rs`).
    fulltext_lag: Mutex<Option<u64>>,
    /// The dead-row fraction that starts a compaction after a write (`None`: never).
    auto_compact: Option<f64>,
    /// Every row's metadata, for filters (`meta_cache.rs`).
    meta: RwLock<meta_cache::MetaCache>,
    _lock: DirLock,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.layout.root()).field("generation", &self.read_state().embedder.generation).finish()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Db>();
};

impl Db {
    /// Opens the database at `path`, creating it with the default embedder if missing.
    /// An existing database restores the embedder recorded at its creation.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        DbOptions::default().open(path)
    }

    /// Options for opening: embedder, HNSW parameters, limits.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = duetdb::Db::options().embedder_spec("hash:128").open(dir.path().join("x")).unwrap();
    /// assert_eq!(db.stats().unwrap().dimension, 128);
    /// ```
    pub fn options() -> DbOptions {
        DbOptions::default()
    }

    fn open_with(path: &Path, opts: DbOptions) -> Result<Db> {
        if let Some(r) = opts.auto_compact.filter(|r| !(r.is_finite() && *r > 0.0 && *r <= 1.0)) {
            return Err(Error::invalid(format!("auto-compaction ratio {r} is not a fraction of rows in (0, 1]")));
        }
        let layout = Layout::new(path);
        let mut requested = opts.resolve_embedder()?;
        if !layout.probe(FORMAT_VERSION)? {
            if !opts.create {
                return Err(Error::NotFound { path: path.to_path_buf() });
            }
            let e = match &requested {
                Some(e) => e.clone(),
                None => embed::from_spec(embed::DEFAULT_SPEC)?,
            };
            opts.graph.validate()?;
            layout.create_atomically(FORMAT_VERSION, |tmp| {
                let catalog = Catalog::open(&tmp.catalog())?;
                catalog.put_manifest(&Manifest {
                    format_version: FORMAT_VERSION,
                    dim: e.dim(),
                    embedder_fingerprint: e.fingerprint(),
                    embedder_spec: e.spec(),
                    generation: 1,
                    rows: 0,
                    rows_crc: Some(0),
                    next_iid: 0,
                    documents: 0,
                    hnsw_m: opts.graph.m,
                    hnsw_ef_construction: opts.graph.ef_construction,
                    graph: None,
                    reindex: None,
                    kept: Vec::new(),
                    compactions: 0,
                })?;
                VectorFile::create(&tmp.vectors(1), e.dim(), 1)?;
                let (state, _) = catalog.commit_state()?.ok_or_else(|| Error::corrupt(tmp.catalog(), "the new catalog has no manifest"))?;
                RecordFile::open(&tmp.record(), &state, true)?;
                Ok(())
            })?;
            requested = Some(e);
        }
        let lock = layout.lock()?;
        let mut catalog = Catalog::open(&layout.catalog())?;
        let (state, mut manifest) = catalog.commit_state()?.ok_or_else(|| Error::corrupt(layout.catalog(), "the catalog has no manifest"))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::FormatVersion { path: layout.catalog(), expected: FORMAT_VERSION, found: manifest.format_version });
        }
        // Before anything on disk is touched: did the catalog lose acknowledged writes?
        integrity::attach_record(&layout, &mut catalog, &state, &manifest)?;
        // A named embedder is checked now; the recorded one is loaded on first use, so
        // that `get`, `delete` and `stats` never load a model.
        if let Some(e) = &requested {
            gen_embedder::check(&manifest.embedder_fingerprint, manifest.dim, e.as_ref())?;
        } else if manifest.embedder_spec.is_none() {
            return Err(Error::UnknownEmbedder {
                spec: manifest.embedder_fingerprint.clone(),
                detail: "the database was built with a custom embedder: pass it with Db::options().embedder(..)".into(),
            });
        }
        let vectors = VectorFile::open(&layout.vectors(manifest.generation), manifest.dim, manifest.generation, manifest.rows, manifest.rows_crc)?;
        let target = match &manifest.reindex {
            Some(t) if t.rows > manifest.rows => {
                return Err(Error::corrupt(
                    layout.catalog(),
                    format!("the reindex target has {} rows, more than the {} rows of the active generation", t.rows, manifest.rows),
                ))
            }
            Some(t) => Some(VectorFile::open(&layout.vectors(t.generation), t.dim, t.generation, t.rows, t.rows_crc)?),
            None => None,
        };
        if manifest.rows_crc.is_none() || manifest.reindex.as_ref().is_some_and(|t| t.rows_crc.is_none()) {
            // Written before row checksums were kept: record them now.
            manifest.rows_crc = Some(vectors.crc());
            if let (Some(t), Some(f)) = (manifest.reindex.as_mut(), target.as_ref()) {
                t.rows_crc = Some(f.crc());
            }
            catalog.put_manifest(&manifest)?;
        }
        let view = vectors.view()?;
        let embedder = Arc::new(GenEmbedder::active(&manifest, requested));
        let dead_rows = catalog.tombstone_rows()?;
        if let Some(bad) = dead_rows.iter().find(|r| **r >= manifest.rows) {
            return Err(Error::corrupt(layout.catalog(), format!("tombstone for row {bad} beyond the {} committed rows", manifest.rows)));
        }
        let graph = Arc::new(Graph::new(GraphParams::default(), 0)?);
        let mut read = ReadState { view, graph, dead: Arc::new(Vec::new()), dead_count: 0, embedder, catalog: Arc::new(catalog), fulltext: None, epoch: 0 };
        read.mark_dead(dead_rows);
        if opts.full_text {
            read.fulltext = Some(Arc::new(fulltext::restore(&layout, &manifest, &read)?));
        }
        let db = Db {
            layout,
            max_text_bytes: opts.max_text_bytes,
            auto_compact: opts.auto_compact,
            published: RwLock::new(Arc::new(manifest.clone())),
            indexer: Mutex::new(None),
            writer: Mutex::new(Writer { vectors, target, target_embedder: None, manifest, closed: false }),
            read: RwLock::new(read),
            fulltext_lag: Mutex::new(None),
            meta: RwLock::default(),
            _lock: lock,
        };
        db.restore_graph()?;
        Ok(db)
    }

    /// Checks a document against this database's limits without ingesting it (the
    /// same check [`Db::ingest_batch`] makes), so a caller can skip bad documents.
    pub fn check_document(&self, doc: &Document) -> Result<()> {
        doc.validate(self.max_text_bytes)
    }

    /// The embedder of the active generation, loading the recorded one on first use.
    pub fn embedder(&self) -> Result<Arc<dyn Embedder>> {
        self.read_state().embedder.get()
    }

    /// The vector dimension of the active generation.
    pub fn dimension(&self) -> usize {
        self.read_state().embedder.dim
    }

    /// The stored vector of the document with this id, in the active generation.
    pub fn vector(&self, id: &str) -> Result<Option<Vec<f32>>> {
        // The catalog of the same snapshot: a compaction renumbers rows.
        let state = self.read_state();
        Ok(match state.catalog.doc_by_id(id)? {
            Some((_, rec)) if (rec.row as usize) < state.view.len() => Some(state.view.vector(rec.row as usize).to_vec()),
            _ => None,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        self.layout.root()
    }

    /// The stored document with this id.
    pub fn get(&self, id: &str) -> Result<Option<Document>> {
        Ok(self.catalog().doc_by_id(id)?.map(|(_, r)| Document { id: r.id, text: r.text, metadata: r.metadata }))
    }

    /// Number of live documents.
    pub fn len(&self) -> usize {
        self.published.read().unwrap().documents as usize
    }

    /// Whether the database holds no documents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A query for `text`; set options on the builder, then [`Query::run`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = duetdb::Db::options().embedder_spec("hash").open(dir.path().join("db")).unwrap();
    /// # db.ingest([duetdb::Document::new("a", "alpha").with_metadata(serde_json::json!({"lang": "en"}))]).unwrap();
    /// let hits = db.query("alpha").limit(5).ef(128).filter("lang", "en").run().unwrap();
    /// assert_eq!(hits.len(), 1);
    /// ```
    pub fn query<'a>(&'a self, text: &'a str) -> Query<'a> {
        Query::new(self, text)
    }

    /// Figures about the database.
    ///
    /// Answered from what the last commit published, without waiting for a writer.
    pub fn stats(&self) -> Result<Stats> {
        let m = self.published.read().unwrap().clone();
        let (dead_count, graph_points, fulltext) = {
            let r = self.read.read().unwrap();
            (r.dead_count, r.graph.len() as u64, r.fulltext.clone())
        };
        Ok(Stats {
            documents: m.documents,
            dimension: m.dim,
            embedder: m.embedder_fingerprint.clone(),
            generation: m.generation,
            tombstones: dead_count,
            vector_rows: m.rows,
            graph_points,
            snapshot_rows: m.graph.as_ref().map_or(0, |s| s.rows),
            fulltext_documents: fulltext.as_ref().map_or(0, |f| f.num_docs()),
            reindex: m.reindex.clone(),
            kept_generations: m.kept.clone(),
            compactions: m.compactions,
            auto_compact: self.auto_compact,
            bytes_on_disk: dir_size(self.layout.root()),
        })
    }

    /// Makes `m` the writer's manifest and publishes it to readers; called after the
    /// catalog write that holds it is durable.
    fn set_manifest(&self, w: &mut Writer, m: Manifest) {
        *self.published.write().unwrap() = Arc::new(m.clone());
        w.manifest = m;
    }

    /// Makes everything durable now: the catalog is fsynced (ingest and delete already
    /// do this before returning) and the graph is snapshotted (see [`Db::checkpoint`]).
    pub fn flush(&self) -> Result<()> {
        self.catalog().flush()?;
        self.checkpoint()
    }

    /// Flushes everything, writes a final graph snapshot and releases the database.
    /// Dropping a `Db` does the same on a best-effort basis.
    pub fn close(self) -> Result<()> {
        // A background indexer stops at its next chunk; the snapshot keeps what it did.
        self.stop_indexer();
        self.checkpoint()?;
        self.writer.lock().unwrap().closed = true;
        self.catalog().flush()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let closed = self.writer.lock().map(|w| w.closed).unwrap_or(true);
        if !closed {
            self.stop_indexer();
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "checkpoint on drop failed; the graph tail is re-inserted on next open");
            }
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
