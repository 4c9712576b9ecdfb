//! Durable file writes, shared by every layer like `error.rs`: whole-file replacement
//! that survives a crash (checkpoints, training state, dumps) and the directory fsync
//! that makes a rename or a new file durable. It knows no database, so `embed/` and
//! `train/` use it without an arrow into `store/`.
//!
//! The new contents go to a temporary file beside the target, which is fsynced, renamed
//! over the target, and then the directory is fsynced so the rename itself is durable. A
//! kill at any moment leaves the old file or the new one; once the call returns, the new
//! one survives a power loss.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The temporary name [`replace_file`] writes to: `.NAME.tmp` beside `path`, hidden and
/// never mistaken for the file itself.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with what `write` puts into the temporary file it is given.
///
/// If `write` fails, the temporary file is removed and `path` is untouched.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("state.json");
/// duetdb::durable::replace_file(&p, |tmp| std::fs::write(tmp, b"{}").map_err(|e| duetdb::Error::io(tmp, e)))?;
/// assert_eq!(std::fs::read(&p).unwrap(), b"{}");
/// # Ok::<(), duetdb::Error>(())
/// ```
pub fn replace_file(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    if tmp.exists() {
        // Ours by its name, left by an interrupted write: replaced, and said so.
        tracing::warn!(path = %tmp.display(), "replacing the temporary file of an interrupted write");
    }
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(dir)
}

/// [`replace_file`] with these bytes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

/// fsyncs a directory so that renames and new files in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"old").unwrap();
        let e = replace_file(&p, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::invalid("interrupted"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(!temp_path(&p).exists(), "the temporary file is removed");
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }
}
