//! `duetdb check`: every part of a database against every other, read-only.

use super::*;

/// One problem found by a consistency check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file or directory involved.
    pub path: PathBuf,
    /// What is wrong, with the figures found and expected.
    pub detail: String,
    /// Whether the problem is in derived state (graph, full-text index) that the next
    /// open rebuilds, rather than in the record (catalog, vector files, commit record).
    pub derived: bool,
}

/// The result of [`Db::check`] or [`check_at`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Live documents verified (id map, record, vector row).
    pub documents: u64,
    /// Committed rows of the active generation verified (header, length, checksum).
    pub rows: u64,
    /// Everything found wrong; empty for a sound database.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, path: impl Into<PathBuf>, detail: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), detail: detail.into(), derived: false });
    }
    fn derived(&mut self, path: impl Into<PathBuf>, detail: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), detail: detail.into(), derived: true });
    }
    fn error(&mut self, e: Error) {
        let path = match &e {
            Error::Io { path, .. } | Error::Corrupt { path, .. } | Error::Foreign { path, .. } | Error::FormatVersion { path, .. } => path.clone(),
            Error::Catalog { path, .. } => path.clone(),
            _ => PathBuf::new(),
        };
        self.problem(path, e.to_string());
    }
}

/// Checks the database at `path` without opening it for queries, so that it also
/// reports on a database that refuses to open. Takes the process lock: the database
/// must not be open elsewhere.
pub fn check_at(path: &Path) -> Result<CheckReport> {
    let layout = Layout::new(path);
    if !layout.probe(FORMAT_VERSION)? {
        return Err(Error::NotFound { path: path.to_path_buf() });
    }
    let _lock = layout.lock()?;
    let mut report = CheckReport::default();
    let catalog = match Catalog::open(&layout.catalog()) {
        Ok(c) => c,
        Err(e) => {
            report.error(e);
            return Ok(report);
        }
    };
    check_parts(&layout, &catalog, true, &mut report);
    Ok(report)
}

impl Db {
    /// A full consistency check, in the spirit of SQLite's `PRAGMA integrity_check`:
    /// the commit record against the catalog; every live document has its record and
    /// its vector row, and the id map agrees; headers, lengths and checksums of every
    /// vector file; tombstones; the graph snapshot readable and covering what the
    /// manifest says. Writes wait while it runs; queries do not.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = duetdb::Db::options().embedder_spec("hash").open(dir.path().join("db")).unwrap();
    /// db.ingest([duetdb::Document::new("a", "alpha")]).unwrap();
    /// let report = db.check().unwrap();
    /// assert!(report.is_ok(), "{:?}", report.problems);
    /// assert_eq!(report.documents, 1);
    /// ```
    pub fn check(&self) -> Result<CheckReport> {
        let _w = self.writer.lock().unwrap();
        let mut report = CheckReport::default();
        check_parts(&self.layout, &self.catalog(), false, &mut report);
        Ok(report)
    }
}

pub(super) fn check_parts(layout: &Layout, catalog: &Catalog, record: bool, report: &mut CheckReport) {
    let (state, m) = match catalog.commit_state() {
        Ok(Some(x)) => x,
        Ok(None) => return report.problem(layout.catalog(), "the catalog has no manifest"),
        Err(e) => return report.error(e),
    };
    if record {
        match RecordFile::read(&layout.record()) {
            Ok(RecordRead::Found(r)) => {
                if let Err(e) = compare(layout, &state, &r) {
                    report.error(e);
                }
            }
            Ok(RecordRead::Missing) if state.seq == 0 => {}
            Ok(RecordRead::Missing) => report.problem(layout.record(), format!("the commit record is missing (the catalog is at write {})", state.seq)),
            Ok(RecordRead::Damaged(d)) => report.problem(layout.record(), format!("the commit record is damaged: {d}")),
            Err(e) => report.error(e),
        }
    }
    // Vector files: the active generation, any reindex target, kept generations.
    let active = check_vectors(layout, &m.active_generation(), report);
    if let Some(t) = &m.reindex {
        if t.rows > m.rows {
            report.problem(layout.catalog(), format!("the reindex target has {} rows, more than the {} of the active generation", t.rows, m.rows));
        }
        check_vectors(layout, t, report);
    }
    for k in &m.kept {
        check_vectors(layout, k, report);
    }
    report.rows = m.rows;
    // Tombstones: rows of dead document versions.
    let mut dead = HashSet::new();
    for t in catalog.tombstones() {
        match t {
            Ok((row, _)) if row >= m.rows => report.problem(layout.catalog(), format!("tombstone for row {row}, beyond the {} committed rows", m.rows)),
            Ok((row, _)) => {
                dead.insert(row);
            }
            Err(e) => return report.error(e),
        }
    }
    // Live documents: id map -> record -> row -> the row's id prefix.
    let (mut live, mut digest) = (0u64, 0u64);
    let mut rows_seen = HashSet::new();
    for entry in catalog.ids() {
        let (id, iid) = match entry {
            Ok(x) => x,
            Err(e) => return report.error(e),
        };
        live += 1;
        digest = digest.wrapping_add(crate::store::id_entry_digest(id.as_bytes(), iid));
        let rec = match catalog.doc(iid) {
            Ok(Some(r)) => r,
            Ok(None) => {
                report.problem(layout.catalog(), format!("document `{id}` (internal id {iid}) has no record"));
                continue;
            }
            Err(e) => {
                report.error(e);
                continue;
            }
        };
        if rec.id != id {
            report.problem(layout.catalog(), format!("the id map sends `{id}` to internal id {iid}, whose record is `{}`", rec.id));
        }
        if rec.row >= m.rows {
            report.problem(layout.catalog(), format!("document `{id}` is at row {}, beyond the {} committed rows", rec.row, m.rows));
            continue;
        }
        if dead.contains(&rec.row) {
            report.problem(layout.catalog(), format!("document `{id}` is live but its row {} has a tombstone", rec.row));
        }
        if !rows_seen.insert(rec.row) {
            report.problem(layout.catalog(), format!("row {} is claimed by more than one document (`{id}` among them)", rec.row));
        }
        if let Some((file, path)) = &active {
            let mut b = [0u8; 8];
            let off = VECTOR_HEADER_BYTES as u64 + rec.row * row_len(m.dim);
            match file.read_exact_at(&mut b, off) {
                Ok(()) if u64::from_le_bytes(b) == iid => {}
                Ok(()) => {
                    report.problem(path, format!("row {} belongs to internal id {}, the catalog says document `{id}` ({iid})", rec.row, u64::from_le_bytes(b)))
                }
                Err(e) => report.problem(path, format!("row {} of document `{id}` cannot be read: {e}", rec.row)),
            }
        }
    }
    report.documents = live;
    if live != m.documents {
        report.problem(layout.catalog(), format!("the id map holds {live} documents, the manifest counts {}", m.documents));
    }
    if state.seq > 0 && digest != state.ids_digest {
        report.problem(layout.catalog(), format!("the id map's digest is {digest:016x}, the catalog recorded {:016x}", state.ids_digest));
    }
    // The graph snapshot: derived, rebuilt on open when unusable.
    if let Some(s) = &m.graph {
        if s.rows > m.rows {
            report.derived(layout.graph_dir(), format!("the graph snapshot covers {} rows, more than the {} committed", s.rows, m.rows));
        } else {
            let params = GraphParams { m: m.hnsw_m, ef_construction: m.hnsw_ef_construction };
            match Graph::load(&layout.graph_dir(), &s.basename, &s.files, params) {
                Ok(g) if g.len() as u64 > s.rows => {
                    report.derived(layout.graph_dir(), format!("the graph snapshot has {} points for {} rows", g.len(), s.rows))
                }
                Ok(_) => {}
                Err(e) => report.derived(layout.graph_dir(), format!("the graph snapshot is unusable (the next open rebuilds it): {e}")),
            }
        }
    }
}

/// Checks one generation's vector file: header, length, checksum of its committed rows.
/// Returns the open file of a sound one.
pub(super) fn check_vectors(layout: &Layout, g: &GenerationRecord, report: &mut CheckReport) -> Option<(File, PathBuf)> {
    let path = layout.vectors(g.generation);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            report.error(Error::io(&path, e));
            return None;
        }
    };
    let len = match check_header(&file, &path, g.dim, g.generation) {
        Ok(l) => l,
        Err(e) => {
            report.error(e);
            return None;
        }
    };
    if let Err(e) = check_length(len, &path, g.dim, g.rows) {
        report.error(e);
        return None;
    }
    // A checksum mismatch is reported, and the rows are still checked against the catalog.
    if let Err(e) = check_rows_crc(&file, &path, g.dim, g.rows, g.rows_crc) {
        report.error(e);
    }
    Some((file, path))
}
