//! Integrity: the commit record checked on open, the full consistency check
//! (`duetdb check`), the export of every readable document (`duetdb dump`) and the
//! consistent copy of an open database (`duetdb backup`).
//!
//! sled recovers to the last intact point of its log without saying so. The engine knows
//! more than sled tells it: every catalog write bumps a sequence number, and the commit
//! record (`store/record.rs`) holds the last one with the manifest's checksum and the id
//! map's digest. A catalog behind its record lost acknowledged writes: the open refuses,
//! names both figures and touches nothing, so the vector files keep the rows that show
//! the loss.

use super::Db;
use crate::error::{Error, Result};
use crate::index::{Graph, GraphParams};
use crate::store::{
    check_header, check_length, check_rows_crc, row_len, Catalog, CommitState, GenerationRecord, Layout, Manifest, RecordFile, RecordRead, FORMAT_VERSION,
    VECTOR_HEADER_BYTES,
};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const WHAT_TO_DO: &str = "nothing on disk was changed; `duetdb dump` exports every document that can still be read, to ingest into a new database, or restore a backup (`duetdb backup`)";

/// Compares the catalog with the commit record and attaches the record to the catalog,
/// so that every later write updates it. Fails, changing nothing, when the catalog lost
/// acknowledged writes or the two disagree.
pub(super) fn attach_record(layout: &Layout, catalog: &mut Catalog, state: &CommitState, m: &Manifest) -> Result<()> {
    let path = layout.record();
    let mut state = *state;
    let write_now = match RecordFile::read(&path)? {
        RecordRead::Missing if state.seq == 0 => {
            // A database written before the record existed: start one from the catalog.
            let (n, digest) = catalog.scan_ids()?;
            if n != m.documents {
                return Err(Error::corrupt(layout.catalog(), format!("the id map holds {n} ids but the manifest counts {} documents", m.documents)));
            }
            catalog.set_ids_digest(digest)?;
            state.ids_digest = digest;
            tracing::info!(path = %path.display(), "starting the commit record of a database created before it existed");
            catalog.attach_record(RecordFile::open(&path, &state, true)?);
            return Ok(());
        }
        RecordRead::Missing => {
            return Err(Error::corrupt(
                &path,
                format!("the commit record is missing; it holds what the catalog last committed (write {}), and without it duetdb cannot tell whether the catalog lost acknowledged writes; {WHAT_TO_DO}", state.seq),
            ))
        }
        RecordRead::Damaged(d) => return Err(Error::corrupt(&path, format!("the commit record is damaged ({d}); {WHAT_TO_DO}"))),
        RecordRead::Found(r) => compare(layout, &state, &r)?,
    };
    let (n, digest) = catalog.scan_ids()?;
    if n != m.documents || digest != state.ids_digest {
        return Err(Error::corrupt(
            layout.catalog(),
            format!(
                "the id map holds {n} ids (digest {digest:016x}) but the manifest counts {} documents (digest {:016x}): entries were lost or changed; {WHAT_TO_DO}",
                m.documents, state.ids_digest
            ),
        ));
    }
    let record = RecordFile::open(&path, &state, false)?;
    if write_now {
        record.write(&state)?;
    }
    catalog.attach_record(record);
    Ok(())
}

/// Whether the catalog state may follow the record: `Ok(true)` when the catalog is one
/// write ahead (a crash between the catalog flush and the record write).
fn compare(layout: &Layout, cat: &CommitState, rec: &CommitState) -> Result<bool> {
    if cat.seq < rec.seq {
        return Err(Error::corrupt(
            layout.catalog(),
            format!(
                "the catalog went back in time: it holds write {} ({} rows, {} documents) but the commit record {} says write {} ({} rows, {} documents) was acknowledged; sled recovered to an earlier point of its log; {WHAT_TO_DO}",
                cat.seq,
                cat.rows,
                cat.documents,
                layout.record().display(),
                rec.seq,
                rec.rows,
                rec.documents
            ),
        ));
    }
    if cat.seq == rec.seq + 1 {
        return Ok(true);
    }
    if cat.seq > rec.seq {
        return Err(Error::corrupt(
            layout.record(),
            format!("the commit record holds write {} but the catalog is at write {}: the record was replaced by an older copy; {WHAT_TO_DO}", rec.seq, cat.seq),
        ));
    }
    if cat != rec {
        return Err(Error::corrupt(
            layout.catalog(),
            format!(
                "the catalog and the commit record disagree at write {}: catalog {} rows, {} documents, generation {}, manifest checksum {:08x}, id digest {:016x}; record {} rows, {} documents, generation {}, {:08x}, {:016x}; {WHAT_TO_DO}",
                cat.seq, cat.rows, cat.documents, cat.generation, cat.manifest_crc, cat.ids_digest, rec.rows, rec.documents, rec.generation, rec.manifest_crc, rec.ids_digest
            ),
        ));
    }
    Ok(false)
}

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
        check_parts(&self.layout, &self.catalog, false, &mut report);
        Ok(report)
    }
}

fn check_parts(layout: &Layout, catalog: &Catalog, record: bool, report: &mut CheckReport) {
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
                Ok(()) => report.problem(path, format!("row {} belongs to internal id {}, the catalog says document `{id}` ({iid})", rec.row, u64::from_le_bytes(b))),
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
fn check_vectors(layout: &Layout, g: &GenerationRecord, report: &mut CheckReport) -> Option<(File, PathBuf)> {
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

/// What [`dump_at`] wrote and what it could not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DumpReport {
    /// Documents written.
    pub documents: u64,
    /// What could not be read, one line each.
    pub unreadable: Vec<String>,
}

/// Writes every live document that can still be read, as the JSON Lines `ingest` takes
/// (`{"id", "text", "metadata"}`), to `out`. It needs only the catalog, so it works on a
/// database that refuses to open for queries. Takes the process lock.
pub fn dump_at(path: &Path, out: &mut dyn Write) -> Result<DumpReport> {
    let layout = Layout::new(path);
    if let Err(e) = layout.probe(FORMAT_VERSION) {
        // A damaged marker does not stop the export: the catalog may be readable.
        tracing::warn!(error = %e, "dumping despite the marker");
    }
    let _lock = layout.lock()?;
    let catalog = Catalog::open(&layout.catalog())?;
    let mut report = DumpReport::default();
    let mut done = HashSet::new();
    let mut write = |id: &str, text: &str, metadata: &serde_json::Value, report: &mut DumpReport| -> Result<()> {
        let mut line = serde_json::json!({"id": id, "text": text});
        if !metadata.is_null() {
            line["metadata"] = metadata.clone();
        }
        writeln!(out, "{line}").map_err(|e| Error::io("<output>", e))?;
        report.documents += 1;
        Ok(())
    };
    let mut ids_complete = true;
    for entry in catalog.ids() {
        match entry {
            Ok((id, iid)) => match catalog.doc(iid) {
                Ok(Some(rec)) => {
                    write(&id, &rec.text, &rec.metadata, &mut report)?;
                    done.insert(id);
                }
                Ok(None) => report.unreadable.push(format!("document `{id}` (internal id {iid}): no record")),
                Err(e) => report.unreadable.push(format!("document `{id}` (internal id {iid}): {e}")),
            },
            Err(e) => {
                report.unreadable.push(format!("the id map: {e}; continuing from the records"));
                ids_complete = false;
                break;
            }
        }
    }
    if !ids_complete {
        // The id map broke off: take the newest live-looking record of each id left.
        let dead: HashSet<u64> = catalog.tombstones().filter_map(|t| t.ok()).map(|t| t.1).collect();
        let mut newest: std::collections::BTreeMap<String, (u64, crate::store::DocRecord)> = Default::default();
        for d in catalog.docs() {
            match d {
                Ok((iid, rec)) if !dead.contains(&iid) && !done.contains(&rec.id) => {
                    if newest.get(&rec.id).is_none_or(|(i, _)| *i < iid) {
                        newest.insert(rec.id.clone(), (iid, rec));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    report.unreadable.push(format!("the document records: {e}"));
                    break;
                }
            }
        }
        for (_, rec) in newest.values() {
            write(&rec.id, &rec.text, &rec.metadata, &mut report)?;
        }
    }
    out.flush().map_err(|e| Error::io("<output>", e))?;
    Ok(report)
}

impl Db {
    /// Writes a consistent copy of this database to `dest` (which must not exist) while
    /// readers keep querying: the catalog as of one commit, the vector rows it counts
    /// and the graph snapshot it names. The copy is a database of its own (its
    /// full-text index is built on its first open). Writes wait while the catalog is
    /// copied, not while the vector files are.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = duetdb::Db::options().embedder_spec("hash").open(dir.path().join("db")).unwrap();
    /// db.ingest([duetdb::Document::new("a", "alpha")]).unwrap();
    /// db.backup(dir.path().join("copy")).unwrap();
    /// let copy = duetdb::Db::open(dir.path().join("copy")).unwrap();
    /// assert_eq!(copy.get("a").unwrap().unwrap().text, "alpha");
    /// ```
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        let dest = Layout::new(dest.as_ref());
        if dest.root().exists() {
            return Err(Error::invalid(format!("backup destination {} already exists", dest.root().display())));
        }
        dest.create_atomically(FORMAT_VERSION, |tmp| {
            // Under the writer lock: the catalog as of the last commit, and handles on the
            // files it names (rows below the committed counts never change; a snapshot
            // file replaced meanwhile stays readable through its open handle).
            let (copy, m, files, graph) = {
                let w = self.writer.lock().unwrap();
                if w.closed {
                    return Err(Error::Closed);
                }
                self.catalog.flush()?;
                let copy = self.catalog.export_to(&tmp.catalog())?;
                let m = w.manifest.clone();
                let mut gens: Vec<GenerationRecord> = vec![m.active_generation()];
                gens.extend(m.reindex.iter().cloned());
                gens.extend(m.kept.iter().cloned());
                let mut files = Vec::new();
                for g in gens {
                    let p = self.layout.vectors(g.generation);
                    files.push((File::open(&p).map_err(|e| Error::io(&p, e))?, g));
                }
                let graph = match &m.graph {
                    Some(s) => crate::index::snapshot_files(&self.layout.graph_dir(), &s.basename)
                        .iter()
                        .map(|p| File::open(p).ok().map(|f| (f, p.file_name().unwrap().to_owned())))
                        .collect::<Option<Vec<_>>>(),
                    None => None,
                };
                (copy, m, files, graph)
            };
            for (f, g) in &files {
                copy_prefix(f, &tmp.vectors(g.generation), VECTOR_HEADER_BYTES as u64 + g.rows * row_len(g.dim))?;
            }
            let copied_graph = match graph {
                Some(files) => files.iter().all(|(f, name)| {
                    let to = tmp.graph_dir().join(name);
                    f.metadata().is_ok_and(|md| copy_prefix(f, &to, md.len()).is_ok())
                }),
                None => false,
            };
            if !copied_graph && m.graph.is_some() {
                // The next open of the copy rebuilds the graph.
                let mut m2 = m.clone();
                m2.graph = None;
                copy.put_manifest(&m2)?;
            }
            let (state, _) = copy.commit_state()?.ok_or_else(|| Error::corrupt(tmp.catalog(), "the copied catalog has no manifest"))?;
            RecordFile::open(&tmp.record(), &state, true)?;
            copy.flush()
        })
    }
}

fn copy_prefix(from: &File, to: &Path, len: u64) -> Result<()> {
    let out = File::create(to).map_err(|e| Error::io(to, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], off).map_err(|e| Error::io(to, e))?;
        out.write_all_at(&buf[..n], off).map_err(|e| Error::io(to, e))?;
        off += n as u64;
    }
    out.sync_all().map_err(|e| Error::io(to, e))
}
