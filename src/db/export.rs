//! Reading every live document out with its stored vector, for `duetdb export` and for
//! anyone moving a database into another engine: the vectors stay in the embedder's
//! space, so queries embedded by this database's embedder still find them there.

use super::snapshot::ReadState;
use super::{integrity, Db, Document};
use crate::error::{Error, Result};
use crate::store::{Catalog, DirLock, GenerationRecord, Layout, Manifest, VectorFile, VectorView, FORMAT_VERSION};
use std::path::Path;

/// What an [`Export`] holds: the generation its vectors come from and the embedder that
/// computed them, which an importer must match (or re-embed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportInfo {
    /// The generation whose vectors are exported.
    pub generation: u64,
    /// Components of every vector.
    pub dim: usize,
    /// The embedder's fingerprint ([`crate::Embedder::fingerprint`]).
    pub fingerprint: String,
    /// The embedder's spec, when it has one ([`crate::Embedder::spec`]).
    pub spec: Option<String>,
    /// Live documents when the export started.
    pub documents: u64,
}

/// A stream of every live document with its vector, in row order; see [`Db::export`].
///
/// It reads the snapshot published when it was created: documents committed later are
/// not in it, and one deleted or replaced meanwhile is skipped. Memory stays flat: one
/// document is read at a time.
pub struct Export<'a> {
    /// Borrowed so that the database stays open while the export reads its files.
    _db: &'a Db,
    state: ReadState,
    vectors: VectorView,
    row: usize,
    info: ExportInfo,
}

impl std::fmt::Debug for Export<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").field("info", &self.info).field("row", &self.row).finish()
    }
}

impl Export<'_> {
    /// The generation and embedder of the exported vectors.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }
}

impl Iterator for Export<'_> {
    type Item = Result<(Document, Vec<f32>)>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.row < self.state.view.len() {
            let row = self.row;
            self.row += 1;
            let rec = match self.state.live_record(row as u64) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            };
            if row >= self.vectors.len() {
                return Some(Err(no_vector(self.info.generation, &rec.id)));
            }
            let v = self.vectors.vector(row).to_vec();
            return Some(Ok((Document { id: rec.id, text: rec.text, metadata: rec.metadata }, v)));
        }
        None
    }
}

/// The generation record an export reads: the active one, or a kept one by number.
fn pick_generation(m: &Manifest, generation: Option<u64>) -> Result<GenerationRecord> {
    let active = m.active_generation();
    let g = match generation {
        None => return Ok(active),
        Some(g) if g == active.generation => return Ok(active),
        Some(g) => g,
    };
    if m.reindex.as_ref().is_some_and(|t| t.generation == g) {
        return Err(Error::invalid(format!("generation {g} is an unfinished reindex target: finish the reindex before exporting it")));
    }
    m.kept.iter().find(|k| k.generation == g).cloned().ok_or_else(|| {
        let kept: Vec<String> = m.kept.iter().map(|k| k.generation.to_string()).collect();
        Error::invalid(format!(
            "no generation {g} in this database (active: {}, kept: {})",
            active.generation,
            if kept.is_empty() { "none".to_string() } else { kept.join(", ") }
        ))
    })
}

/// A kept generation lacks the rows ingested after the database left it.
fn no_vector(generation: u64, id: &str) -> Error {
    Error::invalid(format!(
        "generation {generation} has no vector for document `{id}` (ingested after the database left that generation): roll back to it first"
    ))
}

fn info_of(record: GenerationRecord, documents: u64) -> ExportInfo {
    ExportInfo { generation: record.generation, dim: record.dim, fingerprint: record.embedder_fingerprint, spec: record.embedder_spec, documents }
}

/// sled's cache during an export, which reads every document once.
const EXPORT_CACHE_BYTES: u64 = 16 << 20;

/// An export of a database that is not open: see [`ExportAt::open`].
#[derive(Debug)]
pub struct ExportAt {
    _lock: DirLock,
    catalog: Catalog,
    catalog_path: std::path::PathBuf,
    vectors: VectorFile,
    info: ExportInfo,
}

impl ExportAt {
    /// Opens the database at `path` for export only: the catalog (checked against the
    /// commit record, as an open does) and one generation's vector file (its rows'
    /// checksum verified), but neither the graph nor the full-text index. Memory stays
    /// flat whatever the database's size: documents are read one at a time and vectors
    /// with `pread`, not mapped. Takes the process lock.
    ///
    /// ```
    /// use duetdb::{db::ExportAt, Db, Document};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("db");
    /// Db::options().embedder_spec("hash:64").open(&path).unwrap().ingest([Document::new("a", "alpha beta")]).unwrap();
    /// let export = ExportAt::open(&path, None).unwrap();
    /// let mut ids = Vec::new();
    /// export.for_each(&mut |d, v| { assert_eq!(v.len(), 64); ids.push(d.id); Ok(()) }).unwrap();
    /// assert_eq!(ids, ["a"]);
    /// ```
    pub fn open(path: &Path, generation: Option<u64>) -> Result<Self> {
        let layout = Layout::new(path);
        if !layout.probe(FORMAT_VERSION)? {
            return Err(Error::NotFound { path: path.to_path_buf() });
        }
        let lock = layout.lock()?;
        let mut catalog = Catalog::open_with_cache(&layout.catalog(), Some(EXPORT_CACHE_BYTES))?;
        let (state, m) = catalog.commit_state()?.ok_or_else(|| Error::corrupt(layout.catalog(), "the catalog has no manifest"))?;
        if m.format_version != FORMAT_VERSION {
            return Err(Error::FormatVersion { path: layout.catalog(), expected: FORMAT_VERSION, found: m.format_version });
        }
        integrity::attach_record(&layout, &mut catalog, &state, &m)?;
        let record = pick_generation(&m, generation)?;
        let vectors = VectorFile::open(&layout.vectors(record.generation), record.dim, record.generation, record.rows, record.rows_crc)?;
        Ok(Self { _lock: lock, catalog, catalog_path: layout.catalog(), vectors, info: info_of(record, m.documents) })
    }

    /// The generation and embedder of the exported vectors.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Calls `each` with every live document and its vector, in id order; stops at the
    /// first error, its own or `each`'s.
    pub fn for_each(&self, each: &mut dyn FnMut(Document, &[f32]) -> Result<()>) -> Result<()> {
        let mut v = Vec::with_capacity(self.info.dim);
        for entry in self.catalog.ids() {
            let (id, iid) = entry?;
            let rec = self.catalog.doc(iid)?.ok_or_else(|| Error::corrupt(&self.catalog_path, format!("document `{id}` has no record")))?;
            if rec.row >= self.vectors.rows() {
                return Err(no_vector(self.info.generation, &id));
            }
            self.vectors.read_vector(rec.row, &mut v)?;
            each(Document { id: rec.id, text: rec.text, metadata: rec.metadata }, &v)?;
        }
        Ok(())
    }
}

impl Db {
    /// Every live document with its stored vector: of the active generation, or of a
    /// kept one (`Some(g)`, see [`Db::generations`]), whose vectors stay on disk until
    /// [`Db::gc`].
    ///
    /// ```
    /// use duetdb::{Db, Document};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Db::options().embedder_spec("hash:64").open(dir.path().join("db")).unwrap();
    /// db.ingest([Document::new("a", "alpha beta"), Document::new("b", "gamma delta")]).unwrap();
    /// let export = db.export(None).unwrap();
    /// assert_eq!(export.info().dim, 64);
    /// let rows: Vec<_> = export.collect::<Result<_, _>>().unwrap();
    /// assert_eq!(rows.len(), 2);
    /// assert_eq!(rows[0].1, db.vector(&rows[0].0.id).unwrap().unwrap());
    /// ```
    pub fn export(&self, generation: Option<u64>) -> Result<Export<'_>> {
        let state = self.read_state();
        let m = self.published.read().unwrap().clone();
        let record = pick_generation(&m, generation)?;
        let vectors = if record.generation == m.generation {
            state.view.clone()
        } else {
            VectorFile::open(&self.layout.vectors(record.generation), record.dim, record.generation, record.rows, record.rows_crc)?.view()?
        };
        let info = info_of(record, m.documents);
        Ok(Export { _db: self, state, vectors, row: 0, info })
    }
}
