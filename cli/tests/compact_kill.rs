//! A compaction is safe to kill: `duetdb compact` is SIGKILLed at random moments (at
//! least 20 times), each time after a round of updates and deletes. After every kill the
//! database opens as it was before the compaction or as after it: every live document
//! with its text, metadata and vector bits, none of the deleted ones, each found by text
//! search for its own text, and `check` clean.

mod common;

use duetdb::{Db, Document, Mode};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const DOCS: usize = 1500;
const KILLS: usize = 22;

type Contents = BTreeMap<String, (String, serde_json::Value, Vec<u32>)>;

fn open(path: &std::path::Path) -> Db {
    Db::options().embedder_spec("hash").auto_compact(None).create_if_missing(false).open(path).unwrap()
}

fn contents(db: &Db) -> Contents {
    (0..DOCS)
        .filter_map(|i| {
            let id = format!("d{i}");
            let d = db.get(&id).unwrap()?;
            let v = db.vector(&id).unwrap().unwrap().iter().map(|x| x.to_bits()).collect();
            Some((id, (d.text, d.metadata, v)))
        })
        .collect()
}

fn text(rng: &mut fastrand::Rng, vocab: &[String]) -> String {
    (0..10).map(|_| vocab[rng.usize(..vocab.len())].as_str()).collect::<Vec<_>>().join(" ")
}

#[test]
fn sigkill_during_compaction_leaves_the_database_before_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compact.duet");
    let seed = std::env::var("DUETDB_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (set DUETDB_CRASH_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let vocab: Vec<String> = (0..2000).map(|_| (0..rng.usize(3..9)).map(|_| rng.lowercase()).collect()).collect();
    let db = Db::options().embedder_spec("hash").auto_compact(None).open(&path).unwrap();
    db.ingest((0..DOCS).map(|i| Document::new(format!("d{i}"), text(&mut rng, &vocab)).with_metadata(json!({"v": 0})))).unwrap();
    drop(db);

    // How long an uninterrupted compaction takes with the test's pauses at each step
    // (DUETDB_COMPACT_PAUSE_MS), so that kills spread over all of it.
    let pause = [("DUETDB_COMPACT_PAUSE_MS", "15")];
    let mut full = Duration::ZERO;
    let (mut kills, mut before, mut after, mut round) = (0, 0, 0, 0);
    let (mut mid_switch, mut staged) = (0, 0);
    while kills < KILLS && round < 3 * KILLS {
        round += 1;
        // A round of updates and deletes (and re-insertions of deleted ids), then a
        // compaction killed at a random moment.
        let db = open(&path);
        let updates: Vec<Document> = (0..200)
            .map(|_| {
                let i = rng.usize(..DOCS);
                Document::new(format!("d{i}"), text(&mut rng, &vocab)).with_metadata(json!({"v": round}))
            })
            .collect();
        db.ingest(updates).unwrap();
        let gone: Vec<String> = (0..15).map(|_| format!("d{}", rng.usize(..DOCS))).collect();
        db.delete(&gone).unwrap();
        let expect = contents(&db);
        let rows_before = db.stats().unwrap().vector_rows;
        db.close().unwrap();

        let t = Instant::now();
        let run = if full.is_zero() {
            let r = common::run_killed_after_env(&["compact", path.to_str().unwrap()], Duration::from_secs(120), &pause);
            full = t.elapsed();
            println!("an uninterrupted compaction of {rows_before} rows takes {full:?} with the pauses");
            r
        } else {
            common::run_killed_after_env(&["compact", path.to_str().unwrap()], full.mul_f64(rng.f64() * 1.1), &pause)
        };
        assert!(run.killed || run.status.success(), "compact failed: {}", run.stderr);
        kills += run.killed as usize;

        // What the kill left for the next opener to settle (store/compaction.rs).
        if path.join("COMPACT").exists() {
            mid_switch += 1;
        } else if path.join("compact").exists() {
            staged += 1;
        }
        let report = duetdb::db::check_at(&path).unwrap();
        assert!(report.is_ok(), "round {round}: check found {:?}", report.problems);
        let db = open(&path);
        let st = db.stats().unwrap();
        assert_eq!(st.documents as usize, expect.len());
        if st.vector_rows == rows_before {
            before += 1;
        } else {
            assert_eq!((st.vector_rows, st.tombstones), (expect.len() as u64, 0), "round {round}: neither before nor after");
            after += 1;
        }
        assert_eq!(contents(&db), expect, "round {round}: documents, metadata or vectors changed");
        for (id, (text, ..)) in &expect {
            let hits = db.query(text).mode(Mode::Text).limit(5).run().unwrap();
            assert!(hits.iter().any(|h| h.id == *id), "round {round}: {id} not found by text search for its text");
        }
        db.close().unwrap();
    }
    println!("{kills} kills in {round} rounds: {before} left the database as before ({staged} with a staging directory), {after} as after ({mid_switch} in the middle of the switch, finished by the next open)");
    assert!(kills >= KILLS, "only {kills} kills landed");
    assert!(before > 0 && after > 0, "the kills should land on both sides of the commit point");
}
