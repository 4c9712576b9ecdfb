//! Append-only vector files, memory-mapped for reading.
//!
//! Format (all integers little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"DUETVEC\0"
//! 8       4     format version (1)
//! 12      4     dimension
//! 16      4     element type (1 = f32)
//! 20      4     row prefix bytes (8: the document's internal id, u64)
//! 24      8     generation
//! 32      28    reserved, zero
//! 60      4     CRC-32 of bytes 0..60
//! 64      ...   rows: [internal id u64][dimension x f32]
//! ```
//!
//! A row belongs to the database only once the catalog commit that counts it is
//! durable. Rows past the committed count are the remains of an interrupted write:
//! they are cut off on open and overwritten by the next append.

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size of the fixed header.
pub const VECTOR_HEADER_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"DUETVEC\0";
const VERSION: u32 = 1;
const ELEM_F32: u32 = 1;
const PREFIX: usize = 8;

#[cfg(not(target_endian = "little"))]
compile_error!("duetdb maps vector files directly and supports little-endian targets only");

/// The writable handle of one generation's vector file.
#[derive(Debug)]
pub struct VectorFile {
    path: PathBuf,
    file: File,
    dim: usize,
    rows: u64,
    /// CRC-32 of the committed rows' bytes (after the header).
    crc: u32,
    /// CRC-32 of committed plus pending rows, between `write_pending` and `commit`.
    pending_crc: Option<u32>,
}

/// A read-only, cheaply clonable view of the committed rows of a vector file.
#[derive(Debug, Clone)]
pub struct VectorView {
    map: Option<Arc<Mmap>>,
    dim: usize,
    rows: usize,
}

fn row_bytes(dim: usize) -> usize {
    PREFIX + 4 * dim
}

fn header(dim: usize, generation: u64) -> [u8; VECTOR_HEADER_BYTES] {
    let mut h = [0u8; VECTOR_HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dim as u32).to_le_bytes());
    h[16..20].copy_from_slice(&ELEM_F32.to_le_bytes());
    h[20..24].copy_from_slice(&(PREFIX as u32).to_le_bytes());
    h[24..32].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

impl VectorFile {
    /// Creates an empty vector file (header only), durably.
    pub fn create(path: &Path, dim: usize, generation: u64) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| Error::io(path, e))?;
        file.write_all_at(&header(dim, generation), 0).and_then(|_| file.sync_all()).map_err(|e| Error::io(path, e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(Self { path: path.to_path_buf(), file, dim, rows: 0, crc: 0, pending_crc: None })
    }

    /// Opens a vector file whose catalog commits `committed_rows` rows of `dim`
    /// components, checking the header and cutting off uncommitted rows. `rows_crc` is
    /// the checksum of those rows as the catalog recorded it, verified here (the whole
    /// file is read once); `None` (a database written before checksums) computes it.
    pub fn open(path: &Path, dim: usize, generation: u64, committed_rows: u64, rows_crc: Option<u32>) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io(path, e))?;
        let len = check_header(&file, path, dim, generation)?;
        check_length(len, path, dim, committed_rows)?;
        // Verified before the tail is cut: an open that finds damage changes nothing.
        let crc = check_rows_crc(&file, path, dim, committed_rows, rows_crc)?;
        let need = VECTOR_HEADER_BYTES as u64 + committed_rows * row_bytes(dim) as u64;
        if len > need {
            tracing::info!(path = %path.display(), bytes = len - need, "cutting off rows of an interrupted write");
            file.set_len(need).and_then(|_| file.sync_all()).map_err(|e| Error::io(path, e))?;
        }
        Ok(Self { path: path.to_path_buf(), file, dim, rows: committed_rows, crc, pending_crc: None })
    }

    /// The same open file after it was renamed to `path` (a compaction's switch moves its
    /// new files into place): only the name changes.
    pub fn renamed(mut self, path: std::path::PathBuf) -> Self {
        self.path = path;
        self
    }

    /// CRC-32 of the committed rows.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// CRC-32 the rows will have once the pending ones are committed: what the catalog
    /// commit records.
    pub fn pending_crc(&self) -> u32 {
        self.pending_crc.unwrap_or(self.crc)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Committed rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes rows after the committed ones and fsyncs them, without committing them:
    /// the caller commits in the catalog, then calls [`VectorFile::commit`]. If the
    /// catalog commit never happens the next write overwrites these rows.
    pub fn write_pending(&mut self, rows: &[(u64, &[f32])]) -> Result<()> {
        let mut buf = Vec::with_capacity(rows.len() * row_bytes(self.dim));
        for (iid, v) in rows {
            if v.len() != self.dim {
                return Err(Error::Dimension { expected: self.dim, found: v.len() });
            }
            buf.extend_from_slice(&iid.to_le_bytes());
            for x in *v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        let off = VECTOR_HEADER_BYTES as u64 + self.rows * row_bytes(self.dim) as u64;
        self.file.write_all_at(&buf, off).and_then(|_| self.file.sync_data()).map_err(|e| Error::io(&self.path, e))?;
        let mut h = crc32fast::Hasher::new_with_initial(self.crc);
        h.update(&buf);
        self.pending_crc = Some(h.finalize());
        Ok(())
    }

    /// Marks `n` pending rows as committed.
    pub fn commit(&mut self, n: u64) {
        self.rows += n;
        self.crc = self.pending_crc.take().unwrap_or(self.crc);
    }

    /// The vector of one committed row, read with `pread` into `out` (no map: a scan
    /// of a whole file this way leaves nothing of it resident in the process).
    pub fn read_vector(&self, row: u64, out: &mut Vec<f32>) -> Result<()> {
        if row >= self.rows {
            return Err(Error::invalid(format!("row {row} is past the {} committed rows of {}", self.rows, self.path.display())));
        }
        let mut buf = vec![0u8; 4 * self.dim];
        let off = VECTOR_HEADER_BYTES as u64 + row * row_bytes(self.dim) as u64 + PREFIX as u64;
        self.file.read_exact_at(&mut buf, off).map_err(|e| Error::io(&self.path, e))?;
        out.clear();
        out.extend(buf.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))));
        Ok(())
    }

    /// Maps the committed rows for reading.
    pub fn view(&self) -> Result<VectorView> {
        if self.rows == 0 {
            return Ok(VectorView { map: None, dim: self.dim, rows: 0 });
        }
        // SAFETY: the mapped range is never written again (rows are append-only and
        // uncommitted tails lie beyond it); only this process has the file open (DirLock).
        let len = VECTOR_HEADER_BYTES + self.rows as usize * row_bytes(self.dim);
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) }.map_err(|e| Error::io(&self.path, e))?;
        Ok(VectorView { map: Some(Arc::new(map)), dim: self.dim, rows: self.rows as usize })
    }
}

/// CRC-32 of `len` bytes of a vector file after its header.
pub fn scan_crc(file: &File, path: &Path, len: u64) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], VECTOR_HEADER_BYTES as u64 + off).map_err(|e| Error::io(path, e))?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finalize())
}

/// Checks that a file of `len` bytes holds `rows` whole rows of `dim` components.
pub fn check_length(len: u64, path: &Path, dim: usize, rows: u64) -> Result<()> {
    if len < VECTOR_HEADER_BYTES as u64 + rows * row_bytes(dim) as u64 {
        let have = (len - VECTOR_HEADER_BYTES as u64) / row_bytes(dim) as u64;
        return Err(Error::corrupt(path, format!("truncated: holds {have} whole rows but the catalog has committed {rows}")));
    }
    Ok(())
}

/// Computes the CRC-32 of the first `rows` rows and checks it against the one the
/// catalog recorded (`None`: nothing recorded, as in databases written before
/// checksums); returns it.
pub fn check_rows_crc(file: &File, path: &Path, dim: usize, rows: u64, want: Option<u32>) -> Result<u32> {
    let found = scan_crc(file, path, rows * row_bytes(dim) as u64)?;
    match want {
        Some(want) if want != found => Err(Error::corrupt(
            path,
            format!("the checksum of its {rows} committed rows is {found:08x}, the catalog recorded {want:08x}: rows were changed after they were written"),
        )),
        _ => Ok(found),
    }
}

/// Checks a vector file's header against what the catalog expects; returns its length.
pub fn check_header(file: &File, path: &Path, dim: usize, generation: u64) -> Result<u64> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let corrupt = |d: String| Error::corrupt(path, d);
    if len < VECTOR_HEADER_BYTES as u64 {
        return Err(corrupt(format!("file is {len} bytes, shorter than its {VECTOR_HEADER_BYTES}-byte header")));
    }
    let mut h = [0u8; VECTOR_HEADER_BYTES];
    file.read_exact_at(&mut h, 0).map_err(|e| Error::io(path, e))?;
    if &h[0..8] != MAGIC {
        return Err(corrupt(format!("bad magic {:?}, expected {:?} (not a duetdb vector file)", &h[0..8], MAGIC)));
    }
    let crc = u32::from_le_bytes(h[60..64].try_into().unwrap());
    if crc != crc32fast::hash(&h[0..60]) {
        return Err(corrupt("header checksum does not match its contents".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    if u32_at(8) != VERSION {
        return Err(Error::FormatVersion { path: path.to_path_buf(), expected: VERSION, found: u32_at(8) });
    }
    if u32_at(12) as usize != dim || u32_at(16) != ELEM_F32 || u32_at(20) as usize != PREFIX {
        return Err(corrupt(format!(
            "header says dimension {}, element type {}, prefix {}; the catalog expects dimension {dim} of f32 with an 8-byte prefix",
            u32_at(12),
            u32_at(16),
            u32_at(20)
        )));
    }
    let found_gen = u64::from_le_bytes(h[24..32].try_into().unwrap());
    if found_gen != generation {
        return Err(corrupt(format!("header says generation {found_gen}, the catalog expects {generation}")));
    }
    Ok(len)
}

/// Bytes of one row of `dim` components.
pub fn row_len(dim: usize) -> u64 {
    row_bytes(dim) as u64
}

impl VectorView {
    /// Number of rows visible in this view.
    pub fn len(&self) -> usize {
        self.rows
    }
    /// Whether the view has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
    /// Dimension of every row.
    pub fn dim(&self) -> usize {
        self.dim
    }
    fn row_raw(&self, row: usize) -> &[u8] {
        assert!(row < self.rows, "row {row} out of range ({} rows)", self.rows);
        let map = self.map.as_ref().expect("non-empty view has a map");
        let rb = row_bytes(self.dim);
        let off = VECTOR_HEADER_BYTES + row * rb;
        &map[off..off + rb]
    }
    /// The internal document id stored with a row.
    pub fn iid(&self, row: usize) -> u64 {
        u64::from_le_bytes(self.row_raw(row)[..PREFIX].try_into().unwrap())
    }
    /// Hints the CPU to start loading a row's vector into cache (a no-op where
    /// unsupported); graph walks call it for a node's neighbours before scoring them.
    #[inline]
    pub fn prefetch(&self, row: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(map) = &self.map {
            let off = VECTOR_HEADER_BYTES + row * row_bytes(self.dim);
            if off < map.len() {
                // SAFETY: prefetching an in-bounds address has no side effects.
                unsafe {
                    let p = map.as_ptr().add(off) as *const i8;
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch(p, _MM_HINT_T0);
                    _mm_prefetch(p.add(64), _MM_HINT_T0);
                }
            }
        }
    }

    /// The vector of a row, borrowed from the map.
    pub fn vector(&self, row: usize) -> &[f32] {
        let bytes = &self.row_raw(row)[PREFIX..];
        // SAFETY: the map is page-aligned, the header is 64 bytes and rows are
        // 8 + 4*dim bytes, so every vector starts 4-aligned; the target is little-endian.
        let (pre, floats, post) = unsafe { bytes.align_to::<f32>() };
        debug_assert!(pre.is_empty() && post.is_empty());
        floats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_commit_reopen_and_cut_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g1.vec");
        let mut f = VectorFile::create(&p, 3, 1).unwrap();
        f.write_pending(&[(7, &[1.0, 2.0, 3.0]), (9, &[4.0, 5.0, 6.0])]).unwrap();
        f.commit(2);
        f.write_pending(&[(11, &[0.0, 0.0, 1.0])]).unwrap(); // never committed
        let v = f.view().unwrap();
        assert_eq!((v.len(), v.iid(1), v.vector(1)), (2, 9, &[4.0f32, 5.0, 6.0][..]));
        drop(f);
        let f = VectorFile::open(&p, 3, 1, 2, None).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), (64 + 2 * 20) as u64);
        assert_eq!(f.view().unwrap().vector(0), &[1.0, 2.0, 3.0]);
        assert!(matches!(f.view().unwrap().len(), 2));
    }

    #[test]
    fn damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g1.vec");
        let mut f = VectorFile::create(&p, 2, 1).unwrap();
        f.write_pending(&[(1, &[1.0, 0.0])]).unwrap();
        assert!(matches!(f.write_pending(&[(1, &[1.0])]), Err(Error::Dimension { expected: 2, found: 1 })));
        drop(f);
        let e = VectorFile::open(&p, 2, 1, 5, None).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("committed 5"), "{e}");
        assert!(VectorFile::open(&p, 3, 1, 0, None).unwrap_err().to_string().contains("dimension 2"));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[13] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert!(VectorFile::open(&p, 2, 1, 0, None).unwrap_err().to_string().contains("checksum"));
        bytes[0] = b'X';
        std::fs::write(&p, &bytes).unwrap();
        assert!(VectorFile::open(&p, 2, 1, 0, None).unwrap_err().to_string().contains("magic"));
    }
}
