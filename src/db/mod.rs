//! The engine: open, ingest, query, get, delete, stats, close.
//!
//! `db/` is the only layer that knows embedders, storage and the graph together, and
//! it owns the commit protocol of a batch:
//!
//! 1. embed the batch (documents whose text and metadata are unchanged are skipped);
//! 2. append the vectors after the committed rows of the vector file and fsync them;
//! 3. commit documents, id map, tombstones and manifest in one sled transaction and
//!    flush it. Only now does the batch exist: a crash before this point leaves rows
//!    past the committed count, which the next open cuts off;
//! 4. insert the rows into the in-memory graph, then publish the new rows and the
//!    tombstones of replaced versions to readers in one step.
//!
//! The graph is persisted as snapshots at checkpoints (see [`Db::checkpoint`]); rows
//! after the snapshot's watermark are inserted again on open.

mod document;
mod query;

pub use document::{Document, Hit, IngestReport, Stats};
pub use query::Query;

use crate::embed::{self, Embedder, Kind};
use crate::error::{Error, Result};
use crate::index::{Graph, GraphParams};
use crate::store::{Catalog, CatalogBatch, DirLock, DocRecord, GraphSnapshot, Layout, Manifest, VectorFile, VectorView, FORMAT_VERSION};
use std::collections::HashMap;
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
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { embedder: None, embedder_spec: None, graph: GraphParams::default(), max_text_bytes: DEFAULT_MAX_TEXT_BYTES, create: true }
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

/// What readers see: an immutable snapshot swapped by writers.
#[derive(Clone)]
struct ReadState {
    view: VectorView,
    graph: Arc<Graph>,
    /// One bit per row: set when the row's document was deleted or replaced.
    dead: Arc<Vec<u64>>,
    dead_count: u64,
}

impl ReadState {
    fn is_dead(&self, row: usize) -> bool {
        self.dead.get(row / 64).is_some_and(|w| w >> (row % 64) & 1 == 1)
    }
    fn mark_dead(&mut self, rows: impl IntoIterator<Item = u64>) {
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

struct Writer {
    vectors: VectorFile,
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
    catalog: Catalog,
    /// Loaded on first use from the manifest's spec, unless passed at open.
    embedder: std::sync::OnceLock<Arc<dyn Embedder>>,
    /// The manifest's embedder record (spec, fingerprint, dimension), fixed for the
    /// life of the handle: read without the writer lock, which ingest holds while it
    /// embeds.
    recorded: Manifest,
    max_text_bytes: usize,
    writer: Mutex<Writer>,
    read: RwLock<ReadState>,
    _lock: DirLock,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.layout.root()).field("embedder_loaded", &self.embedder.get().is_some()).finish()
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
                    next_iid: 0,
                    documents: 0,
                    hnsw_m: opts.graph.m,
                    hnsw_ef_construction: opts.graph.ef_construction,
                    graph: None,
                })?;
                VectorFile::create(&tmp.vectors(1), e.dim(), 1)?;
                Ok(())
            })?;
            requested = Some(e);
        }
        let lock = layout.lock()?;
        let catalog = Catalog::open(&layout.catalog())?;
        let manifest = catalog.manifest()?.ok_or_else(|| Error::corrupt(layout.catalog(), "the catalog has no manifest"))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::FormatVersion { path: layout.catalog(), expected: FORMAT_VERSION, found: manifest.format_version });
        }
        // A named embedder is checked now; the recorded one is loaded on first use, so
        // that `get`, `delete` and `stats` never load a model.
        let embedder = std::sync::OnceLock::new();
        if let Some(e) = requested {
            check_embedder(&manifest, e.as_ref())?;
            let _ = embedder.set(e);
        } else if manifest.embedder_spec.is_none() {
            return Err(Error::UnknownEmbedder {
                spec: manifest.embedder_fingerprint.clone(),
                detail: "the database was built with a custom embedder: pass it with Db::options().embedder(..)".into(),
            });
        }
        let vectors = VectorFile::open(&layout.vectors(manifest.generation), manifest.dim, manifest.generation, manifest.rows)?;
        let view = vectors.view()?;
        let mut read = ReadState { view, graph: Arc::new(Graph::new(GraphParams::default(), 0)?), dead: Arc::new(Vec::new()), dead_count: 0 };
        let dead_rows = catalog.tombstone_rows()?;
        if let Some(bad) = dead_rows.iter().find(|r| **r >= manifest.rows) {
            return Err(Error::corrupt(layout.catalog(), format!("tombstone for row {bad} beyond the {} committed rows", manifest.rows)));
        }
        read.mark_dead(dead_rows);
        let db = Db {
            layout,
            catalog,
            embedder,
            max_text_bytes: opts.max_text_bytes,
            recorded: manifest.clone(),
            writer: Mutex::new(Writer { vectors, manifest, closed: false }),
            read: RwLock::new(read),
            _lock: lock,
        };
        db.restore_graph()?;
        Ok(db)
    }

    fn graph_params(m: &Manifest) -> GraphParams {
        GraphParams { m: m.hnsw_m, ef_construction: m.hnsw_ef_construction }
    }

    /// Loads the newest graph snapshot (or rebuilds when there is none or it is
    /// damaged) and inserts the rows committed after its watermark.
    fn restore_graph(&self) -> Result<()> {
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

    fn remove_stray_snapshots(&self, m: &Manifest) {
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

    /// Checks a document against this database's limits without ingesting it (the
    /// same check [`Db::ingest_batch`] makes), so a caller can skip bad documents.
    pub fn check(&self, doc: &Document) -> Result<()> {
        doc.validate(self.max_text_bytes)
    }

    /// The embedder of this database, loading the recorded one on first use.
    pub fn embedder(&self) -> Result<&Arc<dyn Embedder>> {
        if let Some(e) = self.embedder.get() {
            return Ok(e);
        }
        let spec = self.recorded.embedder_spec.as_deref().expect("checked at open");
        let e = embed::from_record(spec, &self.recorded.embedder_fingerprint)?;
        check_embedder(&self.recorded, e.as_ref())?;
        Ok(self.embedder.get_or_init(|| e))
    }

    /// The vector dimension of this database.
    pub fn dimension(&self) -> usize {
        self.recorded.dim
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        self.layout.root()
    }

    /// Ingests documents in batches of 256, each committed atomically; returns once
    /// all are durable. See [`Db::ingest_batch`] for the unit of atomicity.
    pub fn ingest(&self, docs: impl IntoIterator<Item = Document>) -> Result<IngestReport> {
        let mut report = IngestReport::default();
        let mut batch = Vec::with_capacity(256);
        for d in docs {
            batch.push(d);
            if batch.len() == 256 {
                report += self.ingest_batch(&batch)?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            report += self.ingest_batch(&batch)?;
        }
        Ok(report)
    }

    /// Ingests one batch atomically: when this returns `Ok` every document of the
    /// batch is durable (it survives `kill -9` and power loss as far as fsync
    /// guarantees); when it fails or the process dies first, none of it is visible.
    ///
    /// Upsert: a document whose id exists replaces it; one whose text and metadata are
    /// unchanged is skipped without re-embedding. Within a batch, the last document
    /// with a given id wins. An invalid document fails the whole batch and names itself.
    pub fn ingest_batch(&self, docs: &[Document]) -> Result<IngestReport> {
        for d in docs {
            d.validate(self.max_text_bytes)?;
        }
        let last: HashMap<&str, usize> = docs.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
        let docs: Vec<&Document> = docs.iter().enumerate().filter(|(i, d)| last[d.id.as_str()] == *i).map(|(_, d)| d).collect();

        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        let mut todo = Vec::new();
        let mut report = IngestReport::default();
        for d in docs {
            let hash = d.content_hash();
            let old = self.catalog.doc_by_id(&d.id)?;
            match old {
                Some((_, rec)) if rec.hash == hash => report.unchanged += 1,
                old => todo.push((d, hash, old.map(|(iid, rec)| (iid, rec.row)))),
            }
        }
        if todo.is_empty() {
            return Ok(report);
        }
        let texts: Vec<&str> = todo.iter().map(|(d, ..)| d.text.as_str()).collect();
        let mut vecs = self.embedder()?.embed(&texts, Kind::Passage)?;
        if vecs.len() != texts.len() {
            return Err(Error::Embed(format!("embedder returned {} vectors for {} texts", vecs.len(), texts.len())));
        }
        for (v, (d, ..)) in vecs.iter_mut().zip(&todo) {
            if v.len() != w.manifest.dim {
                return Err(Error::Dimension { expected: w.manifest.dim, found: v.len() });
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Embed(format!("embedder produced a non-finite vector for document `{}`", d.id)));
            }
            embed::normalize(v);
        }

        let (first_iid, first_row) = (w.manifest.next_iid, w.manifest.rows);
        let rows: Vec<(u64, &[f32])> = vecs.iter().enumerate().map(|(i, v)| (first_iid + i as u64, v.as_slice())).collect();
        w.vectors.write_pending(&rows)?;

        let mut batch = CatalogBatch::default();
        let mut replaced_rows = Vec::new();
        let mut new_docs = 0;
        for (i, (d, hash, old)) in todo.iter().enumerate() {
            let rec = DocRecord { id: d.id.clone(), text: d.text.clone(), metadata: d.metadata.clone(), hash: hash.clone(), row: first_row + i as u64 };
            batch.put.push((first_iid + i as u64, rec));
            match old {
                Some((iid, row)) => {
                    batch.superseded.push((*iid, *row));
                    replaced_rows.push(*row);
                }
                None => new_docs += 1,
            }
        }
        let n = todo.len() as u64;
        let mut m = w.manifest.clone();
        m.rows += n;
        m.next_iid += n;
        m.documents += new_docs;
        self.catalog.commit(&batch, &m)?;
        // The batch is durable from here on.
        w.manifest = m;
        w.vectors.commit(n);
        let view = w.vectors.view()?;
        let graph = self.read.read().unwrap().graph.clone();
        graph.insert_rows(&view, &(first_row as usize..(first_row + n) as usize).collect::<Vec<_>>());
        {
            let mut r = self.read.write().unwrap();
            r.view = view;
            r.mark_dead(replaced_rows);
        }
        report.written = todo.len();
        self.maintain(&mut w)?;
        Ok(report)
    }

    /// Deletes documents by id; returns how many existed. Durable on return.
    pub fn delete<S: AsRef<str>>(&self, ids: &[S]) -> Result<usize> {
        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        let mut batch = CatalogBatch::default();
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let id = id.as_ref();
            if !seen.insert(id) {
                continue;
            }
            if let Some((iid, rec)) = self.catalog.doc_by_id(id)? {
                batch.deleted.push((iid, rec.id, rec.row));
            }
        }
        if batch.deleted.is_empty() {
            return Ok(0);
        }
        let mut m = w.manifest.clone();
        m.documents -= batch.deleted.len() as u64;
        self.catalog.commit(&batch, &m)?;
        w.manifest = m;
        self.read.write().unwrap().mark_dead(batch.deleted.iter().map(|d| d.2));
        self.maintain(&mut w)?;
        Ok(batch.deleted.len())
    }

    /// The stored document with this id.
    pub fn get(&self, id: &str) -> Result<Option<Document>> {
        Ok(self.catalog.doc_by_id(id)?.map(|(_, r)| Document { id: r.id, text: r.text, metadata: r.metadata }))
    }

    /// Number of live documents.
    pub fn len(&self) -> usize {
        self.writer.lock().unwrap().manifest.documents as usize
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
    pub fn stats(&self) -> Result<Stats> {
        let w = self.writer.lock().unwrap();
        let r = self.read.read().unwrap();
        Ok(Stats {
            documents: w.manifest.documents,
            dimension: w.manifest.dim,
            embedder: w.manifest.embedder_fingerprint.clone(),
            generation: w.manifest.generation,
            tombstones: r.dead_count,
            vector_rows: w.manifest.rows,
            graph_points: r.graph.len() as u64,
            snapshot_rows: w.manifest.graph.as_ref().map_or(0, |s| s.rows),
            bytes_on_disk: dir_size(self.layout.root()),
        })
    }

    /// Makes everything durable now: the catalog is fsynced (ingest and delete already
    /// do this before returning) and the graph is snapshotted (see [`Db::checkpoint`]).
    pub fn flush(&self) -> Result<()> {
        self.catalog.flush()?;
        self.checkpoint()
    }

    /// Writes a graph snapshot if rows were added since the last one, so that the next
    /// open does not re-insert them. Documents are durable without it.
    pub fn checkpoint(&self) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        if w.manifest.graph.as_ref().map_or(0, |s| s.rows) != w.manifest.rows {
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

    /// Flushes everything, writes a final graph snapshot and releases the database.
    /// Dropping a `Db` does the same on a best-effort basis.
    pub fn close(self) -> Result<()> {
        self.checkpoint()?;
        self.writer.lock().unwrap().closed = true;
        self.catalog.flush()
    }

    fn rebuild_locked(&self, w: &mut Writer) -> Result<()> {
        let state = self.read.read().unwrap().clone();
        let live: Vec<usize> = (0..state.view.len()).filter(|r| !state.is_dead(*r)).collect();
        tracing::info!(live = live.len(), dead = state.dead_count, "rebuilding the graph without tombstones");
        let g = Graph::new(Self::graph_params(&w.manifest), live.len())?;
        g.insert_rows(&state.view, &live);
        self.read.write().unwrap().graph = Arc::new(g);
        self.snapshot_locked(w, Some(state.dead_count))?;
        let purged = self.catalog.purge_dead_records()?;
        tracing::debug!(purged, "dropped records of dead documents");
        Ok(())
    }

    /// Housekeeping after a write: rebuild when tombstones fill the graph, snapshot
    /// when many rows were added since the last snapshot.
    fn maintain(&self, w: &mut Writer) -> Result<()> {
        let (points, dead) = {
            let r = self.read.read().unwrap();
            (r.graph.len() as u64, r.dead_count)
        };
        let dead_at_build = w.manifest.graph.as_ref().map_or(0, |s| s.dead_at_build);
        let dead_in_graph = dead.saturating_sub(dead_at_build);
        if dead_in_graph >= 64 && dead_in_graph * 4 > points {
            return self.rebuild_locked(w);
        }
        let snap = w.manifest.graph.as_ref().map_or(0, |s| s.rows);
        let tail = w.manifest.rows - snap;
        if tail >= 50_000.max(snap / 2) {
            self.snapshot_locked(w, None)?;
        }
        Ok(())
    }

    /// Dumps the current graph (which covers every committed row: the writer lock is
    /// held) and records it in the manifest.
    fn snapshot_locked(&self, w: &mut Writer, rebuilt_with_dead: Option<u64>) -> Result<()> {
        let graph = self.read.read().unwrap().graph.clone();
        let dead_at_build = rebuilt_with_dead.unwrap_or_else(|| w.manifest.graph.as_ref().map_or(0, |s| s.dead_at_build));
        let basename = format!("g{:06}-r{:010}-{:08x}", w.manifest.generation, w.manifest.rows, fastrand_u32());
        let files = graph.dump(&self.layout.graph_dir(), &basename)?;
        let mut m = w.manifest.clone();
        m.graph = Some(GraphSnapshot { basename, rows: m.rows, dead_at_build, files });
        self.catalog.put_manifest(&m)?;
        w.manifest = m;
        self.remove_stray_snapshots(&w.manifest);
        Ok(())
    }

    fn read_state(&self) -> ReadState {
        self.read.read().unwrap().clone()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let closed = self.writer.lock().map(|w| w.closed).unwrap_or(true);
        if !closed {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "checkpoint on drop failed; the graph tail is re-inserted on next open");
            }
        }
    }
}

/// An embedder may serve a database only if it computes the same function.
fn check_embedder(m: &Manifest, e: &dyn Embedder) -> Result<()> {
    if e.fingerprint() != m.embedder_fingerprint {
        return Err(Error::EmbedderMismatch { stored: m.embedder_fingerprint.clone(), requested: e.fingerprint() });
    }
    if e.dim() != m.dim {
        return Err(Error::Dimension { expected: m.dim, found: e.dim() });
    }
    Ok(())
}

fn fastrand_u32() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u32) ^ std::process::id().rotate_left(16)
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
