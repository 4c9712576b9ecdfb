//! The sled catalog: the database of record.
//!
//! Trees: `meta` (the manifest), `docs` (internal id -> [`DocRecord`], dead versions
//! kept until the next graph rebuild), `ids`
//! (external id -> internal id) and `tombstones` (row of the active generation ->
//! internal id of the dead document). Every change is one sled transaction across
//! the trees followed by a `flush`, so a batch is durable whole or not at all.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{CommitState, RecordFile};

/// Version of the on-disk format written by this build.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST_KEY: &[u8] = b"manifest";
/// Sequence number of the last catalog write (u64 big-endian), in the same transaction
/// as the manifest: the commit record compares against it.
const SEQ_KEY: &[u8] = b"seq";
/// Digest of the id map (u64 big-endian), maintained by every commit.
const IDS_DIGEST_KEY: &[u8] = b"ids_digest";

/// The database-wide state, stored as one JSON value in the `meta` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// On-disk format version.
    pub format_version: u32,
    /// Vector dimension.
    pub dim: usize,
    /// Fingerprint of the embedder that produced the vectors.
    pub embedder_fingerprint: String,
    /// Spec that rebuilds the embedder on open (`None`: it must be passed in).
    pub embedder_spec: Option<String>,
    /// The generation whose vectors and graph answer queries.
    pub generation: u64,
    /// Rows committed in the active generation's vector file.
    pub rows: u64,
    /// CRC-32 of those rows' bytes (`None` in databases written before it was kept; it
    /// is computed on their next open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_crc: Option<u32>,
    /// Next internal document id.
    pub next_iid: u64,
    /// Live documents.
    pub documents: u64,
    /// HNSW parameter M (links per node).
    pub hnsw_m: usize,
    /// HNSW construction beam width.
    pub hnsw_ef_construction: usize,
    /// The newest durable graph snapshot, if any.
    pub graph: Option<GraphSnapshot>,
    /// The generation a reindex is filling, with its durable cursor (`rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reindex: Option<GenerationRecord>,
    /// Generations kept after a switch, newest first, for rollback (until `gc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<GenerationRecord>,
    /// Compactions done over the database's life (absent, and 0, before the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compactions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// The active generation, described as a [`GenerationRecord`].
    pub fn active_generation(&self) -> GenerationRecord {
        GenerationRecord {
            generation: self.generation,
            dim: self.dim,
            embedder_fingerprint: self.embedder_fingerprint.clone(),
            embedder_spec: self.embedder_spec.clone(),
            rows: self.rows,
            rows_crc: self.rows_crc,
        }
    }
}

/// A generation other than the active one: one embedder's vector file.
///
/// Generations share the row order: row `r` of every vector file holds the same
/// document version (a dead row may hold zeros), so the id map and the tombstones serve
/// them all, and a generation with `rows` committed rows lacks only the rows after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// Generation number (names its vector file).
    pub generation: u64,
    /// Vector dimension.
    pub dim: usize,
    /// Fingerprint of its embedder.
    pub embedder_fingerprint: String,
    /// Spec that rebuilds its embedder (`None`: a custom embedder, passed in by the caller).
    pub embedder_spec: Option<String>,
    /// Rows committed in its vector file: for a reindex target, its cursor.
    pub rows: u64,
    /// CRC-32 of those rows' bytes (`None`: not recorded yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_crc: Option<u32>,
}

/// A durable hnsw_rs dump and what it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSnapshot {
    /// hnsw_rs basename inside `graph/`.
    pub basename: String,
    /// Rows `0..rows` of the vector file were considered (live ones inserted).
    pub rows: u64,
    /// Tombstones that existed when the graph was last built from scratch; rows dead
    /// by then are not in the graph.
    pub dead_at_build: u64,
    /// Byte length and CRC-32 of the `.hnsw.graph` and `.hnsw.data` files.
    pub files: [(u64, u32); 2],
}

/// One stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// External id chosen by the user.
    pub id: String,
    /// The text that was embedded.
    pub text: String,
    /// User metadata (a JSON object) or null.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// SHA-256 of text and metadata: an unchanged upsert is a no-op.
    pub hash: String,
    /// Row of the document's vector in the active generation.
    pub row: u64,
}

/// A set of changes committed atomically by [`Catalog::commit`].
#[derive(Debug, Default)]
pub struct CatalogBatch {
    /// New documents (or new versions): internal id and record.
    pub put: Vec<(u64, DocRecord)>,
    /// Previous versions replaced by `put`: internal id and row.
    pub superseded: Vec<(u64, u64)>,
    /// Deleted documents: internal id, external id and row.
    pub deleted: Vec<(u64, String, u64)>,
}

/// Handle on the sled catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    docs: sled::Tree,
    ids: sled::Tree,
    tombstones: sled::Tree,
    /// The commit record, written after each flushed catalog write (absent in tests of
    /// this layer alone).
    record: Option<Arc<RecordFile>>,
}

/// One entry's share of the id map's digest: the digest is the wrapping sum over all
/// entries, so a commit updates it from the entries it adds and removes.
pub fn id_entry_digest(id: &[u8], iid: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((id.len() as u64).to_le_bytes());
    h.update(id);
    h.update(iid.to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(0)
}

fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn unkey(path: &Path, b: &[u8]) -> Result<u64> {
    b.try_into().map(u64::from_be_bytes).map_err(|_| Error::corrupt(path, format!("catalog key of {} bytes, expected 8", b.len())))
}

impl Catalog {
    /// Opens (or creates) the sled catalog at `path`.
    ///
    /// sled can panic on damaged files; that is turned into a `Corrupt` error.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, None)
    }

    /// [`Catalog::open`] with sled's cache capped at `cache_bytes` (sled's default is
    /// 1 GiB): a scan that reads every document once (an export) gains nothing from a
    /// cache and keeps its memory flat with a small one.
    pub fn open_with_cache(path: &Path, cache_bytes: Option<u64>) -> Result<Self> {
        let p = path.to_path_buf();
        let config = || {
            let c = sled::Config::new().path(&p).mode(sled::Mode::HighThroughput);
            match cache_bytes {
                Some(n) => c.cache_capacity(n),
                None => c,
            }
        };
        let open = || std::panic::catch_unwind(|| config().open());
        // Callers hold the directory lock, so sled's own file lock can only be held by a
        // handle of ours that is still shutting down (its flusher thread): wait for it.
        let mut opened = open();
        for _ in 0..40 {
            match &opened {
                Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    opened = open();
                }
                _ => break,
            }
        }
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => return Err(Error::Locked { path: p }),
            Ok(Err(e @ sled::Error::Io(_))) => return Err(Error::Catalog { path: p, source: e }),
            Ok(Err(e)) => return Err(Error::corrupt(&p, format!("sled could not read the catalog ({e}); neither duetdb nor `duetdb dump` can read it: restore a backup (`duetdb backup`) or ingest again from the source"))),
            Err(_) => return Err(Error::corrupt(&p, "sled panicked while reading the catalog (its files are damaged)")),
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| Error::Catalog { path: p.clone(), source: e });
        Ok(Self { meta: tree("meta")?, docs: tree("docs")?, ids: tree("ids")?, tombstones: tree("tombstones")?, db, path: p, record: None })
    }

    fn sled_err(&self, e: sled::Error) -> Error {
        match e {
            sled::Error::Corruption { .. } => Error::corrupt(&self.path, format!("sled found damaged data while reading it ({e})")),
            e => Error::Catalog { path: self.path.clone(), source: e },
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(&self.path, format!("{what} is not valid: {e}")))
    }

    /// The manifest, or `None` for a catalog that was never initialised.
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        match self.meta.get(MANIFEST_KEY).map_err(|e| self.sled_err(e))? {
            Some(b) => self.decode("manifest", &b).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the manifest alone and flushes (then the commit record).
    pub fn put_manifest(&self, m: &Manifest) -> Result<()> {
        let json = serde_json::to_vec(m).expect("manifest serialises");
        let res: Result<(u64, u64), TransactionError<()>> = self.meta.transaction(|meta| {
            let seq = read_u64(meta.get(SEQ_KEY)?) + 1;
            meta.insert(SEQ_KEY, &seq.to_be_bytes())?;
            meta.insert(MANIFEST_KEY, json.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>((seq, read_u64(meta.get(IDS_DIGEST_KEY)?)))
        });
        let (seq, digest) = self.finish(res)?;
        self.write_record(seq, digest, &json, m)
    }

    fn finish<T>(&self, res: Result<T, TransactionError<()>>) -> Result<T> {
        match res {
            Ok(v) => {
                self.flush()?;
                Ok(v)
            }
            Err(TransactionError::Storage(e)) => Err(self.sled_err(e)),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
        }
    }

    fn write_record(&self, seq: u64, ids_digest: u64, json: &[u8], m: &Manifest) -> Result<()> {
        match &self.record {
            Some(r) => {
                r.write(&CommitState { seq, manifest_crc: crc32fast::hash(json), rows: m.rows, documents: m.documents, ids_digest, generation: m.generation })
            }
            None => Ok(()),
        }
    }

    /// Attaches the commit record: from now on every catalog write updates it.
    pub fn attach_record(&mut self, r: RecordFile) {
        self.record = Some(Arc::new(r));
    }

    /// The state of the last catalog write, as the commit record would hold it, with the
    /// manifest (`None` for a catalog never initialised). A catalog written before the
    /// record existed has sequence number 0.
    pub fn commit_state(&self) -> Result<Option<(CommitState, Manifest)>> {
        let Some(bytes) = self.meta.get(MANIFEST_KEY).map_err(|e| self.sled_err(e))? else { return Ok(None) };
        let m: Manifest = self.decode("manifest", &bytes)?;
        let seq = read_u64(self.meta.get(SEQ_KEY).map_err(|e| self.sled_err(e))?);
        let ids_digest = read_u64(self.meta.get(IDS_DIGEST_KEY).map_err(|e| self.sled_err(e))?);
        let s = CommitState { seq, manifest_crc: crc32fast::hash(&bytes), rows: m.rows, documents: m.documents, ids_digest, generation: m.generation };
        Ok(Some((s, m)))
    }

    /// Counts the id map and computes its digest from its entries.
    pub fn scan_ids(&self) -> Result<(u64, u64)> {
        self.ids().try_fold((0u64, 0u64), |(n, digest), entry| {
            let (id, iid) = entry?;
            Ok((n + 1, digest.wrapping_add(id_entry_digest(id.as_bytes(), iid))))
        })
    }

    /// Sets the id map's digest (for a catalog written before digests existed) as one
    /// catalog write.
    pub fn set_ids_digest(&self, digest: u64) -> Result<()> {
        self.meta.insert(IDS_DIGEST_KEY, &digest.to_be_bytes()).map_err(|e| self.sled_err(e))?;
        self.flush()
    }

    /// Every entry of the id map: external id and internal id, in id order.
    pub fn ids(&self) -> impl Iterator<Item = Result<(String, u64)>> + '_ {
        self.ids.iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let id = String::from_utf8(k.to_vec()).map_err(|_| Error::corrupt(&self.path, "an id in the id map is not UTF-8"))?;
            Ok((id, unkey(&self.path, &v)?))
        })
    }

    /// Every tombstone: row and the internal id of the dead document.
    pub fn tombstones(&self) -> impl Iterator<Item = Result<(u64, u64)>> + '_ {
        self.tombstones.iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            Ok((unkey(&self.path, &k)?, unkey(&self.path, &v)?))
        })
    }

    /// Whether the catalog holds a tombstone for `row` (its document was deleted or
    /// replaced).
    pub fn has_tombstone(&self, row: u64) -> Result<bool> {
        self.tombstones.contains_key(key(row)).map_err(|e| self.sled_err(e))
    }

    /// The catalog's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies every tree into a new sled catalog at `dest` (which must not exist),
    /// flushes it and returns it. The copy is consistent if no write happens meanwhile.
    pub fn export_to(&self, dest: &Path) -> Result<Catalog> {
        let copy = Catalog::open(dest)?;
        copy.db.import(self.db.export());
        copy.flush()?;
        Ok(copy)
    }

    /// Writes a new catalog at `dest` (which must not exist) holding `docs` (internal id
    /// and record, every one live), the id map built from them, no tombstones, and
    /// `manifest`, as write number `seq`; flushes it and returns it with its commit state. For a
    /// compaction: nothing reads `dest` until its switch is committed, so no transaction
    /// is needed, only the final flush.
    pub fn write_fresh(dest: &Path, docs: impl Iterator<Item = Result<(u64, DocRecord)>>, manifest: &Manifest, seq: u64) -> Result<(Catalog, CommitState)> {
        const CHUNK: usize = 4096;
        let c = Catalog::open(dest)?;
        let (mut digest, mut n) = (0u64, 0u64);
        let (mut tdocs, mut tids, mut pending) = (sled::Batch::default(), sled::Batch::default(), 0);
        let apply = |tdocs: &mut sled::Batch, tids: &mut sled::Batch| -> Result<()> {
            c.docs.apply_batch(std::mem::take(tdocs)).map_err(|e| c.sled_err(e))?;
            c.ids.apply_batch(std::mem::take(tids)).map_err(|e| c.sled_err(e))
        };
        for item in docs {
            let (iid, rec) = item?;
            tdocs.insert(&key(iid), serde_json::to_vec(&rec).expect("record serialises"));
            tids.insert(rec.id.as_bytes(), &key(iid));
            digest = digest.wrapping_add(id_entry_digest(rec.id.as_bytes(), iid));
            n += 1;
            pending += 1;
            if pending == CHUNK {
                apply(&mut tdocs, &mut tids)?;
                pending = 0;
            }
        }
        apply(&mut tdocs, &mut tids)?;
        if n != manifest.documents {
            return Err(Error::corrupt(dest, format!("the compacted catalog holds {n} documents, the manifest counts {}", manifest.documents)));
        }
        let mjson = serde_json::to_vec(manifest).expect("manifest serialises");
        c.meta.insert(SEQ_KEY, &seq.to_be_bytes()).map_err(|e| c.sled_err(e))?;
        c.meta.insert(IDS_DIGEST_KEY, &digest.to_be_bytes()).map_err(|e| c.sled_err(e))?;
        c.meta.insert(MANIFEST_KEY, mjson.as_slice()).map_err(|e| c.sled_err(e))?;
        c.flush()?;
        let (state, _) = c.commit_state()?.expect("the manifest was just written");
        Ok((c, state))
    }

    /// The internal id of an external id.
    pub fn iid(&self, id: &str) -> Result<Option<u64>> {
        self.ids.get(id.as_bytes()).map_err(|e| self.sled_err(e))?.map(|b| unkey(&self.path, &b)).transpose()
    }

    /// A document by internal id.
    pub fn doc(&self, iid: u64) -> Result<Option<DocRecord>> {
        match self.docs.get(key(iid)).map_err(|e| self.sled_err(e))? {
            Some(b) => self.decode("document record", &b).map(Some),
            None => Ok(None),
        }
    }

    /// A document by external id, with its internal id.
    pub fn doc_by_id(&self, id: &str) -> Result<Option<(u64, DocRecord)>> {
        match self.iid(id)? {
            Some(iid) => Ok(self.doc(iid)?.map(|d| (iid, d))),
            None => Ok(None),
        }
    }

    /// Rows of the active generation that belong to dead documents.
    pub fn tombstone_rows(&self) -> Result<Vec<u64>> {
        self.tombstones().map(|t| t.map(|(row, _)| row)).collect()
    }

    /// Removes the records of dead documents (after the graph stopped returning their
    /// rows). Tombstones stay: they mark the rows dead in the vector file.
    pub fn purge_dead_records(&self) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.tombstones.iter() {
            let (_, iid) = kv.map_err(|e| self.sled_err(e))?;
            batch.remove(iid);
            n += 1;
        }
        self.docs.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        self.flush()?;
        Ok(n)
    }

    /// Every stored record, dead ones included, in internal-id order (the caller checks
    /// rows against its tombstones).
    pub fn docs(&self) -> impl Iterator<Item = Result<(u64, DocRecord)>> + '_ {
        self.docs.iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            Ok((unkey(&self.path, &k)?, self.decode("document record", &v)?))
        })
    }

    /// Applies `batch` and `manifest` in one transaction and flushes to disk (then the
    /// commit record).
    pub fn commit(&self, batch: &CatalogBatch, manifest: &Manifest) -> Result<()> {
        let mjson = serde_json::to_vec(manifest).expect("manifest serialises");
        let docs: Vec<(u64, Vec<u8>, &str)> =
            batch.put.iter().map(|(iid, d)| (*iid, serde_json::to_vec(d).expect("record serialises"), d.id.as_str())).collect();
        let res: Result<(u64, u64), TransactionError<()>> = (&self.meta, &self.docs, &self.ids, &self.tombstones).transaction(|(meta, tdocs, ids, tomb)| {
            let mut digest = read_u64(meta.get(IDS_DIGEST_KEY)?);
            for (iid, json, id) in &docs {
                tdocs.insert(&key(*iid), json.as_slice())?;
                if let Some(old) = ids.insert(id.as_bytes(), &key(*iid))? {
                    digest = digest.wrapping_sub(id_entry_digest(id.as_bytes(), read_u64(Some(old))));
                }
                digest = digest.wrapping_add(id_entry_digest(id.as_bytes(), *iid));
            }
            // Dead records stay readable: a query that took its snapshot before
            // this commit may still return them. `purge` drops them once the
            // graph no longer holds their rows.
            for (iid, row) in &batch.superseded {
                tomb.insert(&key(*row), &key(*iid))?;
            }
            for (iid, id, row) in &batch.deleted {
                if let Some(old) = ids.remove(id.as_bytes())? {
                    digest = digest.wrapping_sub(id_entry_digest(id.as_bytes(), read_u64(Some(old))));
                }
                tomb.insert(&key(*row), &key(*iid))?;
            }
            let seq = read_u64(meta.get(SEQ_KEY)?) + 1;
            meta.insert(SEQ_KEY, &seq.to_be_bytes())?;
            meta.insert(IDS_DIGEST_KEY, &digest.to_be_bytes())?;
            meta.insert(MANIFEST_KEY, mjson.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>((seq, digest))
        });
        let (seq, digest) = self.finish(res)?;
        self.write_record(seq, digest, &mjson, manifest)
    }

    /// fsyncs everything written so far.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.sled_err(e))
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            dim: 4,
            embedder_fingerprint: "test".into(),
            embedder_spec: None,
            generation: 1,
            rows: 0,
            rows_crc: None,
            next_iid: 0,
            documents: 0,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            graph: None,
            reindex: None,
            kept: Vec::new(),
            compactions: 0,
        }
    }

    fn rec(id: &str, row: u64) -> DocRecord {
        DocRecord { id: id.into(), text: format!("text of {id}"), metadata: serde_json::json!({"k": 1}), hash: "h".into(), row }
    }

    #[test]
    fn commit_supersede_delete_purge_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.manifest().unwrap(), None);
        let mut m = manifest();
        m.rows = 2;
        c.commit(&CatalogBatch { put: vec![(0, rec("a", 0)), (1, rec("b", 1))], ..Default::default() }, &m).unwrap();
        m.rows = 3;
        c.commit(&CatalogBatch { put: vec![(2, rec("a", 2))], superseded: vec![(0, 0)], ..Default::default() }, &m).unwrap();
        c.commit(&CatalogBatch { deleted: vec![(1, "b".into(), 1)], ..Default::default() }, &m).unwrap();
        assert_eq!(c.doc_by_id("a").unwrap().unwrap().0, 2);
        assert!(c.doc_by_id("b").unwrap().is_none());
        // dead records stay readable for readers of older snapshots until purged
        assert_eq!(c.doc(0).unwrap().unwrap().row, 0);
        assert_eq!(c.tombstone_rows().unwrap(), vec![0, 1]);
        assert_eq!(c.purge_dead_records().unwrap(), 2);
        assert!(c.doc(0).unwrap().is_none() && c.doc(1).unwrap().is_none());
        drop(c);
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.manifest().unwrap().unwrap(), m);
        assert_eq!(c.docs().map(|d| d.unwrap().1.id).collect::<Vec<_>>(), vec!["a".to_string()]);
        assert_eq!(c.tombstone_rows().unwrap(), vec![0, 1]);
    }
}
