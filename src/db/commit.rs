//! The commit protocol of a batch (see the module docs of `db`): embed, fsync the rows,
//! one catalog transaction, then the graph and the readers' snapshot. Deletes follow
//! the same order without the first two steps.

use super::{Db, Document, IngestReport};
use crate::embed::{self, Kind};
use crate::error::{Error, Result};
use crate::store::{CatalogBatch, DocRecord};
use std::collections::HashMap;

/// Where the vectors of a batch being committed come from.
#[derive(Clone, Copy)]
pub(super) enum Vectors<'a> {
    /// Embedded under the writer lock, by the active generation's embedder.
    Embed,
    /// Computed elsewhere by the embedder with this fingerprint, one per document
    /// ([`Db::ingest_embedded`]); another fingerprint than the active one is an error.
    Given(&'a [Vec<f32>], &'a str),
    /// Embedded ahead by [`Db::ingest_stream`] with the embedder of this fingerprint:
    /// `None` for documents that were unchanged then. Whatever is missing or stale when
    /// the batch commits is embedded then, so this is only ever a shortcut.
    Ahead(&'a [Option<Vec<f32>>], &'a str),
}

impl Db {
    /// Ingests documents in batches of 256, each committed atomically; returns once
    /// all are durable. See [`Db::ingest_batch`] for the unit of atomicity.
    ///
    /// Batch `n + 1` is embedded while batch `n` commits ([`Db::ingest_stream`]); an
    /// error names the documents of its batch (`documents 256 to 511`).
    pub fn ingest(&self, docs: impl IntoIterator<Item = Document>) -> Result<IngestReport> {
        let mut docs = docs.into_iter().peekable();
        let mut first = 0usize;
        let batches = std::iter::from_fn(|| {
            docs.peek()?;
            let batch: Vec<Document> = docs.by_ref().take(256).collect();
            let tag = format!("documents {first} to {}", first + batch.len() - 1);
            first += batch.len();
            Some(Ok((tag, batch)))
        });
        self.ingest_stream(batches, |_, _, _| Ok(()))
    }

    /// Ingests one batch atomically: when this returns `Ok` every document of the
    /// batch is durable (it survives `kill -9` and power loss as far as fsync
    /// guarantees); when it fails or the process dies first, none of it is visible.
    ///
    /// Upsert: a document whose id exists replaces it; one whose text and metadata are
    /// unchanged is skipped without re-embedding. Within a batch, the last document
    /// with a given id wins. An invalid document fails the whole batch and names itself.
    pub fn ingest_batch(&self, docs: &[Document]) -> Result<IngestReport> {
        self.commit_documents(docs, Vectors::Embed)
    }

    /// Ingests one batch with vectors computed elsewhere, atomically like
    /// [`Db::ingest_batch`]: `vectors[i]` belongs to `docs[i]`. `fingerprint` names the
    /// embedder that computed them ([`Embedder::fingerprint`](crate::Embedder::fingerprint)),
    /// and it must be the active generation's: vectors of two embedders are never mixed.
    /// The vectors are stored bit for bit, so they must already be unit length (within
    /// 1e-3), as every embedder's are. This is how `duetdb import` restores an export
    /// and how `duetdb serve` commits what its shared batches embedded.
    ///
    /// ```
    /// use duetdb::{Db, Document, Kind};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Db::options().embedder_spec("hash:64").open(dir.path().join("db")).unwrap();
    /// let e = db.embedder().unwrap();
    /// let v = e.embed(&["alpha beta"], Kind::Passage).unwrap();
    /// db.ingest_embedded(&[Document::new("a", "alpha beta")], &v, &e.fingerprint()).unwrap();
    /// assert_eq!(db.vector("a").unwrap().unwrap(), v[0]);
    /// ```
    pub fn ingest_embedded(&self, docs: &[Document], vectors: &[Vec<f32>], fingerprint: &str) -> Result<IngestReport> {
        if vectors.len() != docs.len() {
            return Err(Error::invalid(format!("{} vectors for {} documents", vectors.len(), docs.len())));
        }
        self.commit_documents(docs, Vectors::Given(vectors, fingerprint))
    }

    /// Commits one batch; `vectors` says where its vectors come from.
    pub(super) fn commit_documents(&self, docs: &[Document], vectors: Vectors<'_>) -> Result<IngestReport> {
        crate::limits::check("the documents in one batch", docs.len(), 0, crate::limits::MAX_BATCH)?;
        for d in docs {
            d.validate(self.max_text_bytes)?;
        }
        let last: HashMap<&str, usize> = docs.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
        let docs: Vec<(usize, &Document)> = docs.iter().enumerate().filter(|(i, d)| last[d.id.as_str()] == *i).collect();

        let mut w = self.writer.lock().unwrap();
        if w.closed {
            return Err(Error::Closed);
        }
        if let Vectors::Given(_, fp) = vectors {
            if fp != w.manifest.embedder_fingerprint {
                return Err(Error::invalid(format!(
                    "the vectors come from embedder {fp}, but this database's active generation uses {}: import them with re-embedding instead",
                    w.manifest.embedder_fingerprint
                )));
            }
        }
        let mut todo = Vec::new();
        let mut report = IngestReport::default();
        for (i, d) in docs {
            let hash = d.content_hash();
            let old = self.catalog().doc_by_id(&d.id)?;
            match old {
                Some((_, rec)) if rec.hash == hash => report.unchanged += 1,
                old => todo.push((d, hash, old.map(|(iid, rec)| (iid, rec.row)), i)),
            }
        }
        if todo.is_empty() {
            return Ok(report);
        }
        let texts: Vec<&str> = todo.iter().map(|(d, ..)| d.text.as_str()).collect();
        let vecs = match vectors {
            Vectors::Embed => checked_vectors(self.embedder()?.embed(&texts, Kind::Passage)?, texts.len(), w.manifest.dim)?,
            Vectors::Given(vectors, _) => todo.iter().map(|(d, _, _, i)| given_vector(&d.id, &vectors[*i], w.manifest.dim)).collect::<Result<_>>()?,
            Vectors::Ahead(ahead, fp) => {
                // What the stream embedded before taking the lock, for the documents it
                // found changed then; the rest (changed since, or another embedder
                // active since) is embedded now.
                let usable = |i: usize| ahead[i].as_ref().filter(|v| fp == w.manifest.embedder_fingerprint && v.len() == w.manifest.dim);
                let missing: Vec<&str> = todo.iter().filter(|(.., i)| usable(*i).is_none()).map(|(d, ..)| d.text.as_str()).collect();
                let mut fresh = match missing.is_empty() {
                    true => Vec::new(),
                    false => checked_vectors(self.embedder()?.embed(&missing, Kind::Passage)?, missing.len(), w.manifest.dim)?,
                }
                .into_iter();
                todo.iter().map(|(.., i)| usable(*i).cloned().or_else(|| fresh.next()).expect("one fresh vector per missing one")).collect()
            }
        };
        // A reindex that has caught up gets the batch too, so its switch never lags.
        let both = match (&w.target_embedder, &w.manifest.reindex) {
            (Some(e), Some(t)) if t.rows == w.manifest.rows => Some(checked_vectors(e.embed(&texts, Kind::Passage)?, texts.len(), t.dim)?),
            _ => None,
        };

        let (first_iid, first_row) = (w.manifest.next_iid, w.manifest.rows);
        fn rows(first_iid: u64, vs: &[Vec<f32>]) -> Vec<(u64, &[f32])> {
            vs.iter().enumerate().map(|(i, v)| (first_iid + i as u64, v.as_slice())).collect()
        }
        w.vectors.write_pending(&rows(first_iid, &vecs))?;
        if let Some(tv) = &both {
            w.target.as_mut().expect("a reindex target has its file open").write_pending(&rows(first_iid, tv))?;
        }

        let mut batch = CatalogBatch::default();
        let mut replaced_rows = Vec::new();
        let mut new_docs = 0;
        for (i, (d, hash, old, _)) in todo.iter().enumerate() {
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
        m.rows_crc = Some(w.vectors.pending_crc());
        if both.is_some() {
            let t = m.reindex.as_mut().expect("checked");
            t.rows += n;
            t.rows_crc = Some(w.target.as_ref().expect("checked").pending_crc());
        }
        self.catalog().commit(&batch, &m)?;
        // The batch is durable from here on.
        crash_point("after-catalog-commit");
        self.cache_metadata(todo.iter().enumerate().map(|(i, (d, ..))| (first_row + i as u64, &d.metadata)));
        self.set_manifest(&mut w, m);
        w.vectors.commit(n);
        if both.is_some() {
            w.target.as_mut().expect("checked").commit(n);
        }
        let view = w.vectors.view()?;
        let graph = self.read.read().unwrap().graph.clone();
        graph.insert_rows(&view, &(first_row as usize..(first_row + n) as usize).collect::<Vec<_>>());
        {
            let mut r = self.read.write().unwrap();
            r.view = view;
            r.mark_dead(replaced_rows.iter().copied());
        }
        let texts: Vec<(u64, &str)> = todo.iter().enumerate().map(|(i, (d, ..))| (first_row + i as u64, d.text.as_str())).collect();
        self.fulltext_apply(&texts, &replaced_rows, w.manifest.rows);
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
            if let Some((iid, rec)) = self.catalog().doc_by_id(id)? {
                batch.deleted.push((iid, rec.id, rec.row));
            }
        }
        if batch.deleted.is_empty() {
            return Ok(0);
        }
        let mut m = w.manifest.clone();
        m.documents -= batch.deleted.len() as u64;
        self.catalog().commit(&batch, &m)?;
        crash_point("after-catalog-commit");
        self.set_manifest(&mut w, m);
        self.read.write().unwrap().mark_dead(batch.deleted.iter().map(|d| d.2));
        let rows: Vec<u64> = batch.deleted.iter().map(|d| d.2).collect();
        self.fulltext_apply(&[], &rows, w.manifest.rows);
        self.maintain(&mut w)?;
        Ok(batch.deleted.len())
    }
}

/// Checks a vector computed elsewhere (dimension, finite, unit length) and copies it.
fn given_vector(id: &str, v: &[f32], dim: usize) -> Result<Vec<f32>> {
    if v.len() != dim {
        return Err(Error::invalid(format!("the vector of document `{id}` has {} components, the database's embedder {dim}", v.len())));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(format!("the vector of document `{id}` has a non-finite component")));
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if (norm - 1.0).abs() > 1e-3 {
        return Err(Error::invalid(format!("the vector of document `{id}` has length {norm}, not 1: embedders return unit vectors")));
    }
    Ok(v.to_vec())
}

/// Checks an embedder's output (count, dimension, finite values) and L2-normalises it.
pub(super) fn checked_vectors(mut vecs: Vec<Vec<f32>>, texts: usize, dim: usize) -> Result<Vec<Vec<f32>>> {
    if vecs.len() != texts {
        return Err(Error::embed(format!("embedder returned {} vectors for {texts} texts", vecs.len())));
    }
    for (i, v) in vecs.iter_mut().enumerate() {
        if v.len() != dim {
            return Err(Error::Dimension { expected: dim, found: v.len() });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::embed(format!("embedder produced a non-finite vector for text {i} of the batch")));
        }
        embed::normalize(v);
    }
    Ok(vecs)
}

/// Test hook for crash safety: when `DUETDB_CRASH_AT` names this point, the process
/// SIGKILLs itself here, as `kill -9` would at the worst moment. Tests of the real binary
/// use it to stop between two commits; unset, it costs one cached lookup.
pub(super) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var("DUETDB_CRASH_AT").ok()).as_deref() == Some(name) {
        tracing::warn!(point = name, "DUETDB_CRASH_AT: killing this process");
        let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
        std::process::abort();
    }
}
