//! `duetdb dump`: every document that can still be read, as JSON Lines, from a database
//! that may be too damaged to open.

use super::*;

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
