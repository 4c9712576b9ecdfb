//! The full-text index: BM25 over the text of every document version, in tantivy.
//!
//! Documents are keyed by their vector row, which is unique per document version and
//! shared by every generation, so this index serves all of them. Like the graph it is
//! derived state: each commit records in its payload the catalog rows it covers and the
//! tombstones it has applied ([`Coverage`]); the engine indexes what is missing on open
//! and rebuilds it from the catalog when it is damaged.
//!
//! Query text is never parsed as query syntax: it goes through the same analyzer as the
//! documents (words split on non-alphanumerics, ASCII-folded, lowercased, English stop
//! words dropped, Snowball-stemmed) and each term becomes one BM25 clause.

use crate::error::{BoxError, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED};
use tantivy::tokenizer::{AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

const ANALYZER: &str = "duet_en";
/// Memory budget of the single indexing thread.
const WRITER_BYTES: usize = 32 << 20;

/// What a committed full-text index covers, stored as its commit payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Rows `0..rows` of the catalog were considered (live ones indexed).
    pub rows: u64,
    /// Tombstones applied (their rows deleted from the index).
    pub dead: u64,
}

/// A BM25 index over document texts, keyed by row.
pub struct FullText {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    row: Field,
    text: Field,
}

impl std::fmt::Debug for FullText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FullText").field("dir", &self.dir).finish()
    }
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(AsciiFoldingFilter)
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

fn schema() -> (Schema, Field, Field) {
    let mut b = Schema::builder();
    let row = b.add_u64_field("row", INDEXED | FAST);
    let indexing = TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs);
    let text = b.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    (b.build(), row, text)
}

/// The segments the last commit of the index in `dir` names, as its files name them (the
/// id without dashes); empty when `meta.json` cannot be read (tantivy then says why).
fn live_segments(dir: &Path) -> std::collections::HashSet<String> {
    let meta: Option<serde_json::Value> = std::fs::read(dir.join("meta.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let segments = meta.as_ref().and_then(|m| m["segments"].as_array().cloned()).unwrap_or_default();
    segments.iter().filter_map(|s| s["segment_id"].as_str()).map(|id| id.replace('-', "")).collect()
}

impl FullText {
    /// Opens the index in `dir`, or creates an empty one when the directory is missing;
    /// returns it with what it covers (zero for a new index). A directory that tantivy
    /// cannot read, or whose schema or payload is not ours, is an error.
    pub fn open(dir: &Path) -> Result<(Self, Coverage)> {
        let err = |e: String| Error::corrupt(dir, e);
        let (schema, row, text) = schema();
        let index = if dir.join("meta.json").exists() {
            // Every segment file ends in an 8-byte footer trailer (length, magic); tantivy
            // 0.27 reads it out of bounds from a shorter file, so check lengths first. Only
            // the files of segments a commit names: a merge the process did not live to
            // finish leaves files of a segment no commit names (often empty), garbage that
            // tantivy collects, not damage (it had cost a rebuild on the next open).
            let live = live_segments(dir);
            for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let len = e.metadata().map_err(|x| Error::io(e.path(), x))?.len();
                let segment = name.split('.').next().unwrap_or_default();
                if live.contains(segment) && len < 8 {
                    return Err(err(format!("{name} is {len} bytes long, shorter than a tantivy file footer")));
                }
            }
            // tantivy asserts on some malformed files: a damaged index must end in an
            // error the engine can act on (rebuild), not in a panic.
            let opened = std::panic::catch_unwind(|| Index::open_in_dir(dir)).map_err(|_| err("tantivy panicked while opening it".into()))?;
            let index = opened.map_err(|e| unreadable(dir, e))?;
            if index.schema() != schema {
                return Err(err("not a duetdb full-text index (different schema)".into()));
            }
            // tantivy trusts its segment files (damaged ones make it index out of bounds
            // in queries); each ends in a checksummed footer: verify them all first.
            let damaged = index.validate_checksum().map_err(|e| err(format!("checking its files: {e}")))?;
            if let Some(f) = damaged.iter().next() {
                return Err(err(format!("{} of its files fail their checksum, {} among them", damaged.len(), f.display())));
            }
            index
        } else {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            Index::create_in_dir(dir, schema).map_err(|e| Error::index_from(format!("creating the full-text index in {}", dir.display()), e))?
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let meta = index.load_metas().map_err(|e| unreadable(dir, e))?;
        let coverage = match meta.payload.as_deref() {
            Some(p) => serde_json::from_str(p).map_err(|e| err(format!("commit payload {p:?} is not a coverage record: {e}")))?,
            None => Coverage::default(),
        };
        let writer = index.writer_with_num_threads(1, WRITER_BYTES).map_err(|e| unreadable(dir, e))?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| unreadable(dir, e))?;
        // Touch every segment once, so that damage shows now rather than in a query.
        let searcher = reader.searcher();
        for seg in searcher.segment_readers() {
            seg.fast_fields().u64("row").map_err(|e| unreadable(dir, e))?;
            seg.inverted_index(text).map_err(|e| unreadable(dir, e))?;
        }
        Ok((Self { dir: dir.to_path_buf(), index, reader, writer: Mutex::new(writer), row, text }, coverage))
    }

    /// Deletes whatever is in `dir` and creates an empty index there.
    pub fn recreate(dir: &Path) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Self::open(dir).map(|(f, _)| f)
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds `docs` (row, text), deletes `dead` rows, and commits durably with `coverage`
    /// as the payload; searches see the change when this returns. With `replace`, rows of
    /// `docs` already in the index are replaced rather than duplicated (catching up after
    /// a failed update).
    pub fn apply(&self, docs: &[(u64, &str)], dead: &[u64], coverage: Coverage, replace: bool) -> Result<()> {
        let err = |e: tantivy::TantivyError| Error::index_from(format!("full-text index {}", self.dir.display()), e);
        let mut w = self.writer.lock().unwrap();
        let replaced = docs.iter().map(|d| d.0).filter(|_| replace);
        for r in dead.iter().copied().chain(replaced) {
            w.delete_term(Term::from_field_u64(self.row, r));
        }
        for (r, t) in docs {
            let mut d = TantivyDocument::default();
            d.add_u64(self.row, *r);
            d.add_text(self.text, t);
            w.add_document(d).map_err(err)?;
        }
        let mut commit = w.prepare_commit().map_err(err)?;
        commit.set_payload(&serde_json::to_string(&coverage).expect("coverage serialises"));
        commit.commit().map_err(err)?;
        drop(w);
        self.reader.reload().map_err(err)
    }

    /// The analyzed terms of `text`, as they are matched against the index.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut a = self.index.tokenizers().get(ANALYZER).expect("registered at open");
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    /// The best `k` rows for `text` by BM25 (rows for which `keep` is false are skipped),
    /// best first; empty when the text has no indexable term.
    pub fn search(&self, text: &str, k: usize, keep: &dyn Fn(usize) -> bool) -> Result<Vec<(usize, f32)>> {
        let terms = self.terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| (Occur::Should, Box::new(TermQuery::new(Term::from_field_text(self.text, t), IndexRecordOption::WithFreqs)) as Box<dyn Query>))
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let err = |e: tantivy::TantivyError| Error::index_from(format!("full-text search in {}", self.dir.display()), e);
        // Skipped rows (deleted, filtered out) can leave fewer than `k`: widen and retry.
        let mut depth = k.max(16) * 2;
        let mut columns: Vec<Option<tantivy::columnar::Column<u64>>> = vec![None; searcher.segment_readers().len()];
        loop {
            let top = searcher.search(&query, &TopDocs::with_limit(depth).order_by_score()).map_err(err)?;
            let mut out = Vec::with_capacity(k);
            for (score, addr) in &top {
                let col = match &mut columns[addr.segment_ord as usize] {
                    Some(c) => c,
                    slot => slot.insert(searcher.segment_reader(addr.segment_ord).fast_fields().u64("row").map_err(err)?),
                };
                if let Some(row) = col.first(addr.doc_id) {
                    if keep(row as usize) {
                        out.push((row as usize, *score));
                        if out.len() == k {
                            return Ok(out);
                        }
                    }
                }
            }
            if top.len() < depth {
                return Ok(out);
            }
            depth *= 4;
        }
    }

    /// Documents in the index (deleted ones no longer counted once merged away).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

/// A full-text index that tantivy cannot read: derived state, rebuilt by the caller.
fn unreadable(dir: &Path, e: impl Into<BoxError>) -> Error {
    Error::corrupt_from(dir, "unreadable full-text index", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_finds_stems_ignores_syntax_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ft");
        let (ft, cov) = FullText::open(&p).unwrap();
        assert_eq!(cov, Coverage::default());
        ft.apply(&[(0, "Fast compilers for Fortran programs"), (1, "A media player"), (2, "Compiling the kernel")], &[], Coverage { rows: 3, dead: 0 }, false)
            .unwrap();
        let rows = |q: &str| ft.search(q, 10, &|_| true).unwrap().into_iter().map(|(r, _)| r).collect::<Vec<_>>();
        assert_eq!(rows("fortran compiler"), vec![0, 2], "stemmed: compilers/compiling match compiler");
        assert_eq!(rows("\"fortran\" AND (compiler) OR +-:"), vec![0, 2], "syntax characters are plain text");
        assert!(rows("the of and").is_empty() && rows("?!").is_empty());
        ft.apply(&[(3, "fortran again")], &[0], Coverage { rows: 4, dead: 1 }, false).unwrap();
        ft.apply(&[(3, "fortran again")], &[], Coverage { rows: 4, dead: 1 }, true).unwrap();
        assert_eq!(rows("fortran"), vec![3]);
        assert_eq!(ft.search("fortran compiler", 10, &|r| r != 3).unwrap().len(), 1);
        drop(ft);
        let (ft, cov) = FullText::open(&p).unwrap();
        assert_eq!(cov, Coverage { rows: 4, dead: 1 });
        assert_eq!(ft.num_docs(), 3);
        drop(ft);

        // An unfinished merge's empty file (no commit names its segment) is not damage;
        // an empty file of a committed segment is.
        std::fs::write(p.join("0123456789abcdef0123456789abcdef.pos"), b"").unwrap();
        assert_eq!(FullText::open(&p).unwrap().0.num_docs(), 3);
        let live = live_segments(&p).into_iter().next().expect("a committed segment");
        let file = std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()).find(|f| f.to_string_lossy().contains(&live)).unwrap();
        std::fs::write(&file, b"").unwrap();
        let err = FullText::open(&p).unwrap_err().to_string();
        assert!(err.contains("shorter than a tantivy file footer"), "{err}");
    }
}
