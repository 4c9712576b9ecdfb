//! Reading every live document out with its stored vector, for `duetdb export` and for
//! anyone moving a database into another engine: the vectors stay in the embedder's
//! space, so queries embedded by this database's embedder still find them there.

use super::snapshot::ReadState;
use super::{Db, Document};
use crate::error::{Error, Result};
use crate::store::{VectorFile, VectorView};

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
    db: &'a Db,
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
            let rec = match self.state.live_record(&self.db.catalog, row as u64) {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            };
            if row >= self.vectors.len() {
                return Some(Err(Error::invalid(format!(
                    "generation {} has no vector for document `{}` (ingested after the database left that generation): roll back to it first",
                    self.info.generation, rec.id
                ))));
            }
            let v = self.vectors.vector(row).to_vec();
            return Some(Ok((Document { id: rec.id, text: rec.text, metadata: rec.metadata }, v)));
        }
        None
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
        let active = m.active_generation();
        let (record, vectors) = match generation {
            None => (active, state.view.clone()),
            Some(g) if g == active.generation => (active, state.view.clone()),
            Some(g) => {
                if m.reindex.as_ref().is_some_and(|t| t.generation == g) {
                    return Err(Error::invalid(format!("generation {g} is an unfinished reindex target: finish the reindex before exporting it")));
                }
                let Some(k) = m.kept.iter().find(|k| k.generation == g) else {
                    let kept: Vec<String> = m.kept.iter().map(|k| k.generation.to_string()).collect();
                    return Err(Error::invalid(format!(
                        "no generation {g} in this database (active: {}, kept: {})",
                        active.generation,
                        if kept.is_empty() { "none".to_string() } else { kept.join(", ") }
                    )));
                };
                let file = VectorFile::open(&self.layout.vectors(g), k.dim, g, k.rows, k.rows_crc)?;
                (k.clone(), file.view()?)
            }
        };
        let info = ExportInfo {
            generation: record.generation,
            dim: record.dim,
            fingerprint: record.embedder_fingerprint,
            spec: record.embedder_spec,
            documents: m.documents,
        };
        Ok(Export { db: self, state, vectors, row: 0, info })
    }
}
