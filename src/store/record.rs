//! The commit record: duetdb's own checksummed account of the last catalog write.
//!
//! sled recovers to the last intact point of its log without saying so: after damage to
//! its files it can open cleanly with acknowledged batches missing. The record lets
//! duetdb notice. Every catalog write bumps a sequence number stored in the catalog
//! (in the same transaction as the manifest); after the write is flushed, the record
//! file gets the same number, the CRC of the manifest bytes and the id map's digest. On
//! open the two must agree, except that the catalog may be exactly one write ahead (a
//! crash between the catalog flush and the record write).
//!
//! Format of `DB/COMMIT`: two 64-byte slots, written alternately (slot `seq % 2`), so a
//! torn write loses at most the newest one. All integers little-endian:
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"DUETCMT\0"
//! 8       4     format version (1)
//! 12      4     CRC-32 of the manifest's bytes in the catalog
//! 16      8     sequence number of the catalog write
//! 24      8     committed rows of the active generation
//! 32      8     live documents
//! 40      8     digest of the id map (see `Catalog::ids_digest`)
//! 48      8     active generation
//! 56      4     reserved, zero
//! 60      4     CRC-32 of bytes 0..60
//! ```

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DUETCMT\0";
const VERSION: u32 = 1;
const SLOT: usize = 64;

/// What one catalog write left behind, as the record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitState {
    /// Sequence number of the write (1 for the database's creation).
    pub seq: u64,
    /// CRC-32 of the manifest's stored bytes.
    pub manifest_crc: u32,
    /// Committed rows of the active generation.
    pub rows: u64,
    /// Live documents.
    pub documents: u64,
    /// Digest of the id map.
    pub ids_digest: u64,
    /// The active generation.
    pub generation: u64,
}

impl CommitState {
    fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.manifest_crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.rows.to_le_bytes());
        b[32..40].copy_from_slice(&self.documents.to_le_bytes());
        b[40..48].copy_from_slice(&self.ids_digest.to_le_bytes());
        b[48..56].copy_from_slice(&self.generation.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        if b.len() < SLOT || &b[0..8] != MAGIC || u32_at(8) != VERSION || u32_at(60) != crc32fast::hash(&b[0..60]) {
            return None;
        }
        Some(Self { manifest_crc: u32_at(12), seq: u64_at(16), rows: u64_at(24), documents: u64_at(32), ids_digest: u64_at(40), generation: u64_at(48) })
    }
}

/// How the record file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordRead {
    /// No file: a database created before the record existed (or it was deleted).
    Missing,
    /// The file exists but no slot is intact.
    Damaged(String),
    /// The newest intact slot.
    Found(CommitState),
}

/// The open record file of a database.
#[derive(Debug)]
pub struct RecordFile {
    path: PathBuf,
    file: File,
}

impl RecordFile {
    /// Reads the record at `path` without creating or changing anything.
    pub fn read(path: &Path) -> Result<RecordRead> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RecordRead::Missing),
            Err(e) => return Err(Error::io(path, e)),
        };
        if bytes.len() != 2 * SLOT {
            return Ok(RecordRead::Damaged(format!("it is {} bytes long, expected {}", bytes.len(), 2 * SLOT)));
        }
        let best = bytes.chunks(SLOT).filter_map(CommitState::decode).max_by_key(|s| s.seq);
        Ok(match best {
            Some(s) => RecordRead::Found(s),
            None => RecordRead::Damaged("neither of its two slots has a valid checksum".into()),
        })
    }

    /// Opens the record for writing, creating it (both slots holding `state`) when it
    /// is missing or when `reset` is set.
    pub fn open(path: &Path, state: &CommitState, reset: bool) -> Result<Self> {
        let exists = path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| Error::io(path, e))?;
        let rec = Self { path: path.to_path_buf(), file };
        if !exists || reset {
            let slot = state.encode();
            let both = [slot, slot].concat();
            rec.file.set_len(both.len() as u64).map_err(|e| Error::io(path, e))?;
            rec.file.write_all_at(&both, 0).and_then(|_| rec.file.sync_all()).map_err(|e| Error::io(path, e))?;
            if let Some(dir) = path.parent() {
                crate::durable::sync_dir(dir)?;
            }
        }
        Ok(rec)
    }

    /// Durably records the state after a catalog write.
    pub fn write(&self, state: &CommitState) -> Result<()> {
        let off = (state.seq % 2) * SLOT as u64;
        self.file.write_all_at(&state.encode(), off).and_then(|_| self.file.sync_data()).map_err(|e| Error::io(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_alternate_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("COMMIT");
        assert_eq!(RecordFile::read(&p).unwrap(), RecordRead::Missing);
        let s = |seq| CommitState { seq, rows: seq * 10, documents: seq, manifest_crc: 7, ids_digest: 9, generation: 1 };
        let r = RecordFile::open(&p, &s(1), false).unwrap();
        r.write(&s(2)).unwrap();
        r.write(&s(3)).unwrap();
        assert_eq!(RecordFile::read(&p).unwrap(), RecordRead::Found(s(3)));
        // tear the newest slot (seq 3 lives in slot 1): the older one is found
        let mut b = std::fs::read(&p).unwrap();
        b[SLOT + 20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert_eq!(RecordFile::read(&p).unwrap(), RecordRead::Found(s(2)));
        b[20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(matches!(RecordFile::read(&p).unwrap(), RecordRead::Damaged(_)));
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(RecordFile::read(&p).unwrap(), RecordRead::Damaged(d) if d.contains("5 bytes")));
    }
}
