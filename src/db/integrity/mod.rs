//! Integrity: the commit record checked on open (here), the full consistency check
//! (`check.rs`, `duetdb check`), the export of every readable document (`dump.rs`,
//! `duetdb dump`) and the consistent copy of an open database (`backup.rs`, `duetdb backup`).
//!
//! sled recovers to the last intact point of its log without saying so. The engine knows
//! more than sled tells it: every catalog write bumps a sequence number, and the commit
//! record (`store/record.rs`) holds the last one with the manifest's checksum and the id
//! map's digest. A catalog behind its record lost acknowledged writes: the open refuses,
//! names both figures and touches nothing, so the vector files keep the rows that show
//! the loss.

mod backup;
mod check;
mod dump;

pub use check::{check_at, CheckReport, Problem};
pub use dump::{dump_at, DumpReport};

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
            format!(
                "the commit record holds write {} but the catalog is at write {}: the record was replaced by an older copy; {WHAT_TO_DO}",
                rec.seq, cat.seq
            ),
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
