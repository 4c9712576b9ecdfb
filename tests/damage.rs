//! Damage fuzzing: for every file of a small database, many trials of random bytes at
//! random offsets, truncation at random lengths, and deletion. Each trial must end in a
//! clear error (naming a file of the database) or in a database that holds exactly the
//! acknowledged documents, findable in vector and text mode: 0 panics, 0 silent losses.

mod common;

use duetdb::{Db, Document, Mode};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            files(root, &e.path(), out);
        } else if e.file_name() != "LOCK" && !e.file_name().to_string_lossy().starts_with(".tantivy") {
            out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    errors: usize,
    exact: usize,
    panics: Vec<String>,
    losses: Vec<String>,
}

/// Opens a damaged copy and classifies what happened: `Ok(false)` for a clear error (one
/// that names a file of the database) at open or at any later read, `Ok(true)` for the
/// exact database, `Err` for anything else (a wrong answer given without an error).
fn trial(path: &Path, expected: &BTreeMap<String, Document>, gone: &[String], modes: &[Mode], every: usize) -> Result<bool, String> {
    let loud = |e: duetdb::Error| {
        let msg = e.to_string();
        if msg.contains(path.to_str().unwrap()) {
            Ok(false)
        } else {
            Err(format!("error that names no file: {msg}"))
        }
    };
    let db = match Db::open(path) {
        Err(e) => return loud(e),
        Ok(db) => db,
    };
    let stats = match db.stats() {
        Err(e) => return loud(e),
        Ok(s) => s,
    };
    if db.len() != expected.len() || stats.documents as usize != expected.len() {
        return Err(format!("{} documents ({} in stats), {} acknowledged", db.len(), stats.documents, expected.len()));
    }
    // Queries before gets: a query must not answer without a damaged document even
    // where no `get` has noticed the damage yet.
    for doc in expected.values().step_by(every) {
        for &mode in modes {
            match db.query(&doc.text).mode(mode).limit(1).run() {
                Ok(h) if h.first().is_some_and(|h| h.id == doc.id) => {}
                Err(e) => return loud(e),
                other => return Err(format!("{mode:?} query for {}: {:?}", doc.id, other.map(|h| h.into_iter().map(|h| h.id).collect::<Vec<_>>()))),
            }
        }
    }
    for (id, doc) in expected {
        match db.get(id) {
            Ok(Some(d)) if d == *doc => {}
            Err(e) => return loud(e),
            other => return Err(format!("document {id}: {other:?}")),
        }
    }
    for id in gone {
        match db.get(id) {
            Ok(None) => {}
            Err(e) => return loud(e),
            Ok(Some(_)) => return Err(format!("deleted document {id} is back")),
        }
    }
    Ok(true)
}

/// One way to damage a file, applied to its path.
type Damage = Box<dyn Fn(&Path)>;

#[test]
fn random_damage_to_every_file_ends_in_an_error_or_the_exact_database() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.duet");
    let docs: Vec<Document> = common::sample_docs().into_iter().take(90).collect();
    {
        let db = Db::options().embedder_spec("hash:64").open(&base).unwrap();
        for c in docs.chunks(30) {
            db.ingest_batch(c).unwrap();
        }
        db.delete(&[&docs[5].id, &docs[40].id]).unwrap();
        db.ingest([Document::new(docs[6].id.clone(), "a replaced description of the sixth package")]).unwrap();
        db.close().unwrap();
    }
    let mut expected: BTreeMap<String, Document> = docs.iter().map(|d| (d.id.clone(), d.clone())).collect();
    let gone = vec![docs[5].id.clone(), docs[40].id.clone()];
    for g in &gone {
        expected.remove(g);
    }
    expected.insert(docs[6].id.clone(), Document::new(docs[6].id.clone(), "a replaced description of the sixth package"));

    let mut all = Vec::new();
    files(&base, &base, &mut all);
    all.sort();
    let trials: usize = std::env::var("DUETDB_DAMAGE_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut by_file: BTreeMap<String, Outcomes> = BTreeMap::new();
    let mut n = 0;
    // Panics inside the trials are counted, not printed as test failures. The hook is the
    // process's, and the other test runs beside this one: only this thread's panics are
    // silenced, so a failure of the other test still shows its message.
    let hook: std::sync::Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> = std::panic::take_hook().into();
    let this = std::thread::current().id();
    let others = hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != this {
            others(info)
        }
    }));
    for rel in &all {
        let len = fs::metadata(base.join(rel)).unwrap().len() as usize;
        // Full-text segment files are many and alike: fewer trials each.
        let k = if rel.starts_with("fulltext") && !rel.ends_with("meta.json") { trials / 4 } else { trials };
        let mut damages: Vec<(String, Damage)> = Vec::new();
        for _ in 0..k {
            let at = rng.usize(..len.max(1));
            let bytes: Vec<u8> = (0..if rng.bool() { rng.usize(1..=16) } else { 4096 }).map(|_| rng.u8(..)).collect();
            damages.push((
                format!("{} random bytes at {at}", bytes.len()),
                Box::new(move |p: &Path| {
                    use std::os::unix::fs::FileExt;
                    fs::OpenOptions::new().write(true).open(p).unwrap().write_all_at(&bytes, at as u64).unwrap();
                }),
            ));
        }
        for _ in 0..k / 2 {
            let to = rng.usize(..len.max(1));
            damages.push((
                format!("truncated to {to}"),
                Box::new(move |p: &Path| fs::OpenOptions::new().write(true).open(p).unwrap().set_len(to as u64).unwrap()),
            ));
        }
        damages.push(("deleted".into(), Box::new(|p: &Path| fs::remove_file(p).unwrap())));
        let out = by_file.entry(rel.display().to_string()).or_default();
        for (what, damage) in damages {
            n += 1;
            let path = dir.path().join(format!("t{n}.duet"));
            common::copy_dir(&base, &path);
            damage(&path.join(rel));
            let label = format!("{}: {what}", rel.display());
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trial(&path, &expected, &gone, &[Mode::Vector, Mode::Text], 7))) {
                Ok(Ok(true)) => out.exact += 1,
                Ok(Ok(false)) => out.errors += 1,
                Ok(Err(loss)) => out.losses.push(format!("{label}: {loss}")),
                Err(p) => out.panics.push(format!("{label}: {:?}", p.downcast_ref::<String>().map(String::as_str).or(p.downcast_ref::<&str>().copied()))),
            }
            let _ = fs::remove_dir_all(&path);
        }
    }
    std::panic::set_hook(Box::new(move |info| hook(info)));
    let (mut errors, mut exact, mut panics, mut losses) = (0, 0, Vec::new(), Vec::new());
    for (f, o) in &by_file {
        println!(
            "{f:<60} trials {:>3}: {:>3} clear errors, {:>3} exact, {} panics, {} silent losses",
            o.errors + o.exact + o.panics.len() + o.losses.len(),
            o.errors,
            o.exact,
            o.panics.len(),
            o.losses.len()
        );
        errors += o.errors;
        exact += o.exact;
        panics.extend(o.panics.iter().cloned());
        losses.extend(o.losses.iter().cloned());
    }
    println!("{n} trials over {} files: {errors} clear errors, {exact} exact databases, {} panics, {} silent losses", all.len(), panics.len(), losses.len());
    assert!(panics.is_empty() && losses.is_empty(), "panics: {panics:#?}\nsilent losses: {losses:#?}");
}

/// A 5,000-document database (10 batches, the `hash` embedder) in `dir/base.duet`: its
/// path, its documents by id, and the length of its catalog file.
fn large_database(dir: &Path) -> (PathBuf, BTreeMap<String, Document>, u64) {
    let base = dir.join("base.duet");
    let sample = common::sample_docs();
    let docs: Vec<Document> = (0..5000)
        .map(|i| {
            let d = &sample[i % sample.len()];
            Document::new(format!("{}-{i}", d.id), format!("{} (copy {i}, marker q{i}z)", d.text)).with_metadata(d.metadata.clone())
        })
        .collect();
    {
        let db = Db::options().embedder_spec("hash:64").open(&base).unwrap();
        for c in docs.chunks(500) {
            db.ingest_batch(c).unwrap();
        }
        db.close().unwrap();
    }
    let len = fs::metadata(base.join("catalog/db")).unwrap().len();
    (base, docs.into_iter().map(|d| (d.id.clone(), d)).collect(), len)
}

/// 4 KiB of random garbage written at `at` in the catalog of the database at `path`.
fn garbage_at(path: &Path, at: u64, rng: &mut fastrand::Rng) {
    use std::os::unix::fs::FileExt;
    let garbage: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    fs::OpenOptions::new().write(true).open(path.join("catalog/db")).unwrap().write_all_at(&garbage, at).unwrap();
}

/// A copy of `base` at `dir/name` with 4 KiB of garbage at `at` in its catalog (and its
/// full-text index deleted if `rebuild`), tried in text mode as [`trial`] does (the copies
/// share their description, and which of several near-duplicate vectors the graph returns
/// first is another question: reachability), then removed.
fn garbage_trial(
    base: &Path,
    dir: &Path,
    name: &str,
    at: u64,
    rng: &mut fastrand::Rng,
    rebuild: bool,
    expected: &BTreeMap<String, Document>,
) -> Result<bool, String> {
    let path = dir.join(name);
    common::copy_dir(base, &path);
    if rebuild {
        let _ = fs::remove_dir_all(path.join("fulltext"));
    }
    garbage_at(&path, at, rng);
    let outcome = trial(&path, expected, &[], &[Mode::Text], 1);
    let _ = fs::remove_dir_all(&path);
    outcome
}

/// 4 KiB of garbage inside the catalog of a larger database (5,000 documents), at the
/// offsets where it once made queries drop documents without an error: every read after
/// it either gives the exact answer or a clear error naming the database's files.
#[test]
fn garbage_inside_a_large_catalog_is_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (base, expected, len) = large_database(dir.path());
    let mut rng = fastrand::Rng::with_seed(32);
    let mut offsets = vec![0, 1 << 20];
    let extra: usize = std::env::var("DUETDB_GARBAGE_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    offsets.extend((0..extra).map(|_| rng.u64(..len)));
    let (mut errors, mut exact) = (0, 0);
    for (n, at) in offsets.into_iter().filter(|&at| at < len).enumerate() {
        match garbage_trial(&base, dir.path(), &format!("g{n}.duet"), at, &mut rng, false, &expected) {
            Ok(true) => exact += 1,
            Ok(false) => errors += 1,
            Err(loss) => panic!("4 KiB of garbage at offset {at} of catalog/db: {loss}"),
        }
    }
    println!("garbage in a 5,000-document catalog: {errors} clear errors, {exact} exact databases, 0 silent losses");
}

/// The same garbage with the full-text index deleted, so that each open rebuilds it from
/// the damaged catalog. Once in about seven runs it found a silent loss: the garbage
/// had taken a live row's document record, and the rebuild skipped the row without a word
/// (which offsets hit a record depends on how sled laid out this run's base). Fixed
/// 2026-12-06: a live row without its record is an error
/// (`tests/corruption.rs::a_missing_record_fails_queries_the_export_and_the_full_text_rebuild_instead_of_skipping_it`).
#[test]
#[ignore = "a stress hunt of 1-2 minutes, too long for CI, run by hand: cargo test --release --test damage -- --ignored --nocapture"]
fn garbage_in_a_catalog_then_a_full_text_rebuild_is_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let (base, expected, len) = large_database(dir.path());
    let mut rng = fastrand::Rng::with_seed(77);
    let (mut errors, mut exact) = (0, 0);
    for n in 0..40 {
        let at = rng.u64(..len);
        match garbage_trial(&base, dir.path(), &format!("r{n}.duet"), at, &mut rng, true, &expected) {
            Ok(true) => exact += 1,
            Ok(false) => errors += 1,
            Err(loss) => panic!("4 KiB of garbage at offset {at} of catalog/db, full text rebuilt: {loss}"),
        }
    }
    println!("garbage, then a full-text rebuild: {errors} clear errors, {exact} exact databases, 0 silent losses");
}
