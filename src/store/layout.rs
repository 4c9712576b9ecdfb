//! Where the files of a database live, how a new one is created atomically, and the
//! process lock.

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const MARKER: &str = "DUETDB";
const MARKER_MAGIC: &str = "duetdb database";

/// Paths of one database directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root` (nothing is touched on disk).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The database directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The sled catalog directory.
    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog")
    }
    /// The directory of vector files.
    pub fn vectors_dir(&self) -> PathBuf {
        self.root.join("vectors")
    }
    /// The vector file of a generation.
    pub fn vectors(&self, generation: u64) -> PathBuf {
        self.vectors_dir().join(format!("g{generation:06}.vec"))
    }
    /// The directory of graph snapshots.
    pub fn graph_dir(&self) -> PathBuf {
        self.root.join("graph")
    }
    /// The directory of the full-text index (tantivy).
    pub fn fulltext_dir(&self) -> PathBuf {
        self.root.join("fulltext")
    }
    /// The commit record (see `record.rs`).
    pub fn record(&self) -> PathBuf {
        self.root.join("COMMIT")
    }
    /// Where a compaction builds the compacted database before switching to it.
    pub fn compact_dir(&self) -> PathBuf {
        self.root.join("compact")
    }
    /// The intent file that commits a compaction's switch (see `compaction.rs`).
    pub fn compact_intent(&self) -> PathBuf {
        self.root.join("COMPACT")
    }
    /// The marker file that says the directory is a database.
    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }

    /// The database directory that holds `path` (or is `path`), if any: the nearest of
    /// its ancestors with a `DUETDB` marker. Files duetdb writes on a user's behalf (a
    /// dump, a backup) must not land inside a database, where they could replace its files.
    pub fn enclosing_database(path: &Path) -> Option<PathBuf> {
        let abs = std::path::absolute(path).ok()?;
        abs.ancestors().find(|a| fs::read(a.join(MARKER)).is_ok_and(|m| m.starts_with(MARKER_MAGIC.as_bytes()))).map(Path::to_path_buf)
    }

    /// Fails when `path` is inside a database directory (see [`Layout::enclosing_database`]);
    /// `what` names the path's role in the message (`--out`, `the backup destination`).
    pub fn refuse_inside_database(what: &str, path: &Path) -> Result<()> {
        match Self::enclosing_database(path) {
            Some(db) => Err(Error::invalid(format!(
                "{what} {} is inside the database {}: writing there could replace the database's own files; choose a path outside it",
                path.display(),
                db.display()
            ))),
            None => Ok(()),
        }
    }

    /// Checks whether `root` holds a database.
    ///
    /// Returns `Ok(false)` when the path is absent or an empty directory (a new
    /// database may be created there) and a `Foreign`/`FormatVersion` error when it is
    /// something else.
    pub fn probe(&self, format_version: u32) -> Result<bool> {
        let meta = match fs::metadata(&self.root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let foreign = |detail: String| Error::Foreign { path: self.root.clone(), detail };
        if !meta.is_dir() {
            return Err(foreign("it is a file; a duetdb database is a directory".into()));
        }
        let marker = match fs::read(self.marker()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let empty = fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?.next().is_none();
                return if empty { Ok(false) } else { Err(foreign(format!("the directory is not empty and has no {MARKER} marker file"))) };
            }
            Err(e) => return Err(Error::io(self.marker(), e)),
        };
        let text = String::from_utf8_lossy(&marker);
        let mut lines = text.lines();
        if lines.next() != Some(MARKER_MAGIC) {
            return Err(foreign(format!("{MARKER} does not start with `{MARKER_MAGIC}`")));
        }
        let found = lines
            .next()
            .and_then(|l| l.strip_prefix("format "))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| Error::corrupt(self.marker(), "second line should be `format N`"))?;
        if found != format_version {
            return Err(Error::FormatVersion { path: self.root.clone(), expected: format_version, found });
        }
        Ok(true)
    }

    /// Creates a database directory atomically: `init` fills a temporary sibling
    /// directory, which is then renamed onto `root`. A crash leaves either no database
    /// or a whole one, never a half-created one.
    pub fn create_atomically(&self, format_version: u32, init: impl FnOnce(&Layout) -> Result<()>) -> Result<()> {
        let parent = match self.root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let name = self.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
        remove_abandoned(&parent, &name);
        let tmp = Layout::new(parent.join(format!(".{name}.creating-{}", std::process::id())));
        let _ = fs::remove_dir_all(tmp.root());
        let result = (|| {
            for d in [tmp.root().to_path_buf(), tmp.vectors_dir(), tmp.graph_dir()] {
                fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
            init(&tmp)?;
            let mut f = File::create(tmp.marker()).map_err(|e| Error::io(tmp.marker(), e))?;
            write!(f, "{MARKER_MAGIC}\nformat {format_version}\n").and_then(|_| f.sync_all()).map_err(|e| Error::io(tmp.marker(), e))?;
            for d in [tmp.vectors_dir(), tmp.graph_dir(), tmp.root().to_path_buf()] {
                sync_dir(&d)?;
            }
            // rename(2) replaces an empty directory; a non-empty one means another
            // process created the database first, and we open theirs instead.
            match fs::rename(tmp.root(), &self.root) {
                Ok(()) => sync_dir(&parent),
                Err(_) if self.probe(format_version)? => Ok(()),
                Err(e) => Err(Error::io(&self.root, e)),
            }
        })();
        let _ = fs::remove_dir_all(tmp.root());
        result
    }

    /// Takes the process lock of the database, failing if another holder keeps it for a
    /// second; then settles a compaction a killed process left (see `compaction.rs`), so
    /// that whoever holds the lock reads one consistent database.
    pub fn lock(&self) -> Result<DirLock> {
        let path = self.root.join("LOCK");
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        // A lock released a moment ago can still be held by a copy of its descriptor: a
        // process that another thread of ours is spawning holds every descriptor from fork
        // to exec (the likely cause of a `Locked` error CI saw once, under load, when a test
        // reopened a database it had just closed). So a busy lock is retried for up to a second before it is an error.
        let mut tried = 0;
        let locked = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if tried < 50 => {
                    tried += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {
                let lock = DirLock { _file: file };
                super::compaction::settle(self)?;
                Ok(lock)
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path: self.root.clone() }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// Holds the exclusive lock on a database directory until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Removes the temporary directories `.NAME.creating-PID` that a killed creation (a
/// database's or a backup's) left beside `NAME`, whose process is gone; each is named in
/// the log. A directory of a process still running is another creation in progress.
fn remove_abandoned(parent: &Path, name: &str) {
    // Liveness is read from /proc; without it nothing is removed.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.creating-");
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive {
            tracing::warn!(path = %e.path().display(), "removing the temporary directory of an interrupted creation (process {pid} is gone)");
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_probe_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path().join("x.duet"));
        assert!(!l.probe(1).unwrap());
        l.create_atomically(1, |_| Ok(())).unwrap();
        assert!(l.probe(1).unwrap());
        assert!(matches!(l.probe(2), Err(Error::FormatVersion { found: 1, .. })));
        let held = l.lock().unwrap();
        assert!(matches!(l.lock(), Err(Error::Locked { .. })));
        drop(held);
        l.lock().unwrap();
        // no temporary directory is left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn foreign_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"hello").unwrap();
        assert!(matches!(Layout::new(&file).probe(1), Err(Error::Foreign { .. })));
        fs::write(dir.path().join("other"), b"x").unwrap();
        let e = Layout::new(dir.path()).probe(1).unwrap_err();
        assert!(e.to_string().contains("no DUETDB marker"), "{e}");
    }
}
