//! Ingest as a pipeline: the caller's thread reads and embeds batch `n + 1` while a
//! second thread commits batch `n` (fsyncs, the catalog transaction, the graph). The
//! commit protocol itself is unchanged (`commit.rs`): a batch embedded ahead carries its
//! vectors into [`Db::commit_documents`], which re-checks under the writer lock what
//! the stream checked without it.

use super::commit::{checked_vectors, Vectors};
use super::{Db, Document, IngestReport};
use crate::embed::Kind;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::mpsc::sync_channel;

/// A batch embedded ahead of its commit.
struct Ahead<T> {
    tag: T,
    docs: Vec<Document>,
    vectors: Vec<Option<Vec<f32>>>,
    fingerprint: String,
}

impl Db {
    /// Ingests a stream of batches, each committed atomically as by
    /// [`Db::ingest_batch`], embedding the next batch while the previous one commits.
    ///
    /// Each item is a batch with a tag that names it (a line number, a range); an `Err`
    /// item stops the stream after the batches before it are committed, and is returned.
    /// After each commit, `committed` gets the batch's tag, documents and report (it runs
    /// on the committing thread); its error stops the stream too. A batch that fails
    /// returns its error with the tag in front. Returns the sum of the reports.
    ///
    /// ```
    /// use duetdb::{Db, Document};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = Db::options().embedder_spec("hash:64").open(dir.path().join("db")).unwrap();
    /// let batches = (0..3).map(|b| Ok((format!("batch {b}"), vec![Document::new(format!("d{b}"), format!("text number {b}"))])));
    /// let mut seen = Vec::new();
    /// let report = db.ingest_stream(batches, |tag, _, r| Ok(seen.push((tag, r.written)))).unwrap();
    /// assert_eq!(report.written, 3);
    /// assert_eq!(seen, [("batch 0".to_string(), 1), ("batch 1".to_string(), 1), ("batch 2".to_string(), 1)]);
    /// ```
    pub fn ingest_stream<T, I, F>(&self, batches: I, mut committed: F) -> Result<IngestReport>
    where
        T: std::fmt::Display + Send,
        I: IntoIterator<Item = Result<(T, Vec<Document>)>>,
        F: FnMut(T, &[Document], IngestReport) -> Result<()> + Send,
    {
        std::thread::scope(|s| {
            // One batch waits while one commits: embedding never runs more than one
            // batch ahead, so memory stays at two batches.
            let (tx, rx) = sync_channel::<Ahead<T>>(1);
            let committer = std::thread::Builder::new()
                .name("duetdb-commit".into())
                .spawn_scoped(s, move || -> Result<IngestReport> {
                    let mut total = IngestReport::default();
                    for a in rx {
                        let r = self.commit_documents(&a.docs, Vectors::Ahead(&a.vectors, &a.fingerprint)).map_err(|e| e.context(a.tag.to_string()))?;
                        total += r;
                        committed(a.tag, &a.docs, r)?;
                    }
                    Ok(total)
                })
                .map_err(|e| Error::io("the committing thread", e))?;
            let mut failed = None;
            for item in batches {
                let ahead = item.and_then(|(tag, docs)| match self.embed_ahead(&docs) {
                    Ok((vectors, fingerprint)) => Ok(Ahead { tag, docs, vectors, fingerprint }),
                    Err(e) => Err(e.context(tag.to_string())),
                });
                match ahead {
                    Ok(a) => {
                        // The committer stopped on an error: it is returned below.
                        if tx.send(a).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            // An earlier batch's failure comes first: it happened first.
            let total = committer.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            match failed {
                Some(e) => Err(e),
                None => Ok(total),
            }
        })
    }

    /// The vectors of the documents of `docs` that a commit now would write (the last
    /// of each id, when its text or metadata differs from the stored one), without the
    /// writer lock, and the fingerprint of the embedder that made them.
    fn embed_ahead(&self, docs: &[Document]) -> Result<(Vec<Option<Vec<f32>>>, String)> {
        for d in docs {
            d.validate(self.max_text_bytes)?;
        }
        let last: HashMap<&str, usize> = docs.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
        let mut todo = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            let unchanged = matches!(self.catalog().doc_by_id(&d.id)?, Some((_, rec)) if rec.hash == d.content_hash());
            if last[d.id.as_str()] == i && !unchanged {
                todo.push(i);
            }
        }
        let e = self.embedder()?;
        let mut vectors = vec![None; docs.len()];
        if !todo.is_empty() {
            let texts: Vec<&str> = todo.iter().map(|&i| docs[i].text.as_str()).collect();
            let vecs = checked_vectors(e.embed(&texts, Kind::Passage)?, texts.len(), e.dim())?;
            for (i, v) in todo.into_iter().zip(vecs) {
                vectors[i] = Some(v);
            }
        }
        Ok((vectors, e.fingerprint()))
    }
}
