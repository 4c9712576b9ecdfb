//! The switch of a compaction, kill-safe: the compacted database is built whole in a
//! staging directory (`DB/compact/`), then an intent file (`DB/COMPACT`) commits to it,
//! then each part is moved into place. The intent is the commit point:
//!
//! - a kill before it leaves the database as it was, plus a staging directory that the
//!   next opener removes;
//! - a kill after it leaves a switch that the next opener finishes (every step is
//!   repeatable: a part still in staging replaces its counterpart, one already moved is
//!   left alone), so the database opens as it was after the compaction.
//!
//! Every opener holds the directory lock before it reads anything, and settles a pending
//! switch first ([`settle`]), so no reader ever sees a mix of the two.

use super::Layout;
use crate::durable::{sync_dir, write_atomic};
use crate::error::{Error, Result};
use std::fs;
use std::path::Path;

const INTENT_HEADER: &str = "duetdb compaction 1";

/// What a switch does, in order: parts (paths relative to the database directory) moved
/// from the staging directory over their counterparts, and parts removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchPlan {
    /// Files or directories moved from staging into place.
    pub moves: Vec<String>,
    /// Files or directories removed (derived state with no compacted copy).
    pub drops: Vec<String>,
}

impl SwitchPlan {
    fn encode(&self) -> String {
        let mut s = format!("{INTENT_HEADER}\n");
        for m in &self.moves {
            s.push_str(&format!("move {m}\n"));
        }
        for d in &self.drops {
            s.push_str(&format!("drop {d}\n"));
        }
        s
    }

    fn decode(path: &Path, s: &str) -> Result<Self> {
        let bad = |why: String| Error::corrupt(path, format!("the compaction intent is not valid: {why}"));
        let mut lines = s.lines();
        if lines.next() != Some(INTENT_HEADER) {
            return Err(bad(format!("its first line is not `{INTENT_HEADER}`")));
        }
        let mut plan = SwitchPlan::default();
        for (i, line) in lines.enumerate() {
            let (verb, part) = line.split_once(' ').ok_or_else(|| bad(format!("line {} has no part", i + 2)))?;
            if part.is_empty() || part.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                return Err(bad(format!("line {} names `{part}`, not a part of a database", i + 2)));
            }
            match verb {
                "move" => plan.moves.push(part.to_string()),
                "drop" => plan.drops.push(part.to_string()),
                _ => return Err(bad(format!("line {} starts with `{verb}`, expected move or drop", i + 2))),
            }
        }
        Ok(plan)
    }
}

/// What [`settle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No compaction was in progress.
    Nothing,
    /// An interrupted compaction before its commit point: its staging directory was removed.
    Discarded,
    /// An interrupted switch: it was finished.
    Finished,
}

/// fsyncs every file and directory under `dir`, then `dir` itself: what was built in
/// staging is durable before the intent names it.
pub fn sync_tree(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|x| Error::io(dir, x))?;
        let p = e.path();
        if e.file_type().map_err(|x| Error::io(&p, x))?.is_dir() {
            sync_tree(&p)?;
        } else {
            fs::File::open(&p).and_then(|f| f.sync_all()).map_err(|x| Error::io(&p, x))?;
        }
    }
    sync_dir(dir)
}

/// Commits to the switch: writes the intent durably. From here on the compaction
/// happens, even if this process dies.
pub fn commit(layout: &Layout, plan: &SwitchPlan) -> Result<()> {
    sync_tree(&layout.compact_dir())?;
    write_atomic(&layout.compact_intent(), plan.encode().as_bytes())
}

/// Moves the staged parts into place and removes the staging directory and the intent.
/// Repeatable after a kill at any point.
pub fn finish(layout: &Layout, plan: &SwitchPlan) -> Result<()> {
    let staging = layout.compact_dir();
    for part in &plan.moves {
        let (from, to) = (staging.join(part), layout.root().join(part));
        if !from.exists() {
            // Moved by an earlier, interrupted finish.
            continue;
        }
        remove(&to)?;
        pause();
        fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        sync_dir(to.parent().unwrap_or(layout.root()))?;
    }
    for part in &plan.drops {
        remove(&layout.root().join(part))?;
    }
    remove(&staging)?;
    remove(&layout.compact_intent())?;
    sync_dir(layout.root())
}

/// Brings the directory to one side of an interrupted compaction: finishes a committed
/// switch, or removes an uncommitted staging directory. Callers hold the directory lock.
pub fn settle(layout: &Layout) -> Result<Settled> {
    let intent = layout.compact_intent();
    match fs::read_to_string(&intent) {
        Ok(s) => {
            let plan = SwitchPlan::decode(&intent, &s)?;
            tracing::warn!(path = %layout.root().display(), "finishing a compaction that was interrupted after its commit point");
            finish(layout, &plan)?;
            Ok(Settled::Finished)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let staging = layout.compact_dir();
            if staging.exists() {
                tracing::warn!(path = %staging.display(), "removing the staging directory of a compaction interrupted before its commit point");
                remove(&staging)?;
                sync_dir(layout.root())?;
                return Ok(Settled::Discarded);
            }
            Ok(Settled::Nothing)
        }
        Err(e) => Err(Error::io(&intent, e)),
    }
}

/// Test hook: sleeps `DUETDB_COMPACT_PAUSE_MS` milliseconds (default none) at each step
/// of a compaction and between the moves of a switch, so that a test which kills the
/// process at random moments lands in every one of them.
pub fn pause() {
    if let Some(ms) = std::env::var("DUETDB_COMPACT_PAUSE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Removes a file or a directory tree; an absent one is not an error.
pub fn remove(p: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|e| Error::io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_finished_from_any_point_and_an_uncommitted_one_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let plan = SwitchPlan { moves: vec!["catalog".into(), "COMMIT".into(), "vectors/g000001.vec".into()], drops: vec!["fulltext".into()] };
        let setup = || {
            for (p, s) in [("catalog/db", "old"), ("COMMIT", "old"), ("vectors/g000001.vec", "old"), ("fulltext/x", "old")] {
                fs::create_dir_all(dir.path().join(p).parent().unwrap()).unwrap();
                fs::write(dir.path().join(p), s).unwrap();
                let staged = l.compact_dir().join(p);
                fs::create_dir_all(staged.parent().unwrap()).unwrap();
                fs::write(staged, "new").unwrap();
            }
            let _ = fs::remove_dir_all(l.compact_dir().join("fulltext"));
        };
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        // before the commit point: discarded, the old files stay
        setup();
        assert_eq!(settle(&l).unwrap(), Settled::Discarded);
        assert_eq!((read("catalog/db"), read("COMMIT")), ("old".into(), "old".into()));
        assert!(!l.compact_dir().exists());
        // after it, interrupted after each number of moves: finished
        for done in 0..=plan.moves.len() {
            setup();
            commit(&l, &plan).unwrap();
            for part in &plan.moves[..done] {
                let to = dir.path().join(part);
                remove(&to).unwrap();
                fs::rename(l.compact_dir().join(part), &to).unwrap();
            }
            assert_eq!(settle(&l).unwrap(), Settled::Finished);
            for p in ["catalog/db", "COMMIT", "vectors/g000001.vec"] {
                assert_eq!(read(p), "new", "{p} after {done} moves");
            }
            assert!(!dir.path().join("fulltext").exists() && !l.compact_dir().exists() && !l.compact_intent().exists());
            assert_eq!(settle(&l).unwrap(), Settled::Nothing);
        }
    }

    #[test]
    fn a_damaged_intent_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        fs::write(l.compact_intent(), "duetdb compaction 1\nmove ../etc\n").unwrap();
        let e = settle(&l).unwrap_err().to_string();
        assert!(e.contains("COMPACT") && e.contains("../etc"), "{e}");
        fs::write(l.compact_intent(), "garbage").unwrap();
        assert!(settle(&l).unwrap_err().to_string().contains("first line"));
    }
}
