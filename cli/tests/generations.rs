//! Generations: a reindex into another embedder, killed and resumed, with writes and
//! queries going on; rollback that reuses kept rows; gc; and the requests that must fail.

mod common;

use duetdb::db::ReindexStep;
use duetdb::{Db, Document, Embedder, Kind};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn text(rng: &mut fastrand::Rng, vocab: &[String]) -> String {
    (0..10).map(|_| vocab[rng.usize(..vocab.len())].as_str()).collect::<Vec<_>>().join(" ")
}

fn vocab(rng: &mut fastrand::Rng) -> Vec<String> {
    (0..2000).map(|_| (0..rng.usize(3..9)).map(|_| rng.lowercase()).collect()).collect()
}

fn open(path: &Path) -> Db {
    Db::options().create_if_missing(false).open(path).unwrap()
}

/// Every live document's stored vector equals a fresh embedding by `spec`, and nothing
/// else is live.
fn assert_exact(db: &Db, live: &BTreeMap<String, String>, deleted: &HashSet<String>, spec: &str) {
    let e = duetdb::embed::from_spec(spec).unwrap();
    assert_eq!(db.len(), live.len(), "live documents");
    assert_eq!(db.dimension(), e.dim());
    for (id, t) in live {
        assert_eq!(db.get(id).unwrap().map(|d| d.text).as_deref(), Some(t.as_str()), "document {id}");
        let mut want = e.embed(&[t], Kind::Passage).unwrap().pop().unwrap();
        duetdb::embed::normalize(&mut want);
        let got = db.vector(id).unwrap().unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "vector of {id} differs from a fresh {spec} embedding by {diff}");
    }
    for id in deleted {
        assert!(db.get(id).unwrap().is_none(), "deleted document {id} came back");
    }
}

#[test]
fn sigkill_during_reindex_resumes_and_ends_exact() {
    let (_dir, path) = common::temp_db();
    let seed = std::env::var("DUETDB_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (set DUETDB_CRASH_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let vocab = vocab(&mut rng);
    let mut live = BTreeMap::new();
    let mut deleted = HashSet::new();
    let mut next_id = 0;
    {
        let db = Db::options().embedder_spec("hash:256").open(&path).unwrap();
        let docs: Vec<Document> = (0..4000)
            .map(|_| {
                next_id += 1;
                Document::new(format!("d{next_id}"), text(&mut rng, &vocab))
            })
            .collect();
        for d in &docs {
            live.insert(d.id.clone(), d.text.clone());
        }
        db.ingest(docs).unwrap();
        db.close().unwrap();
    }
    // Each finished reindex moves on to the next embedder, so that kills keep landing
    // inside a job until enough have.
    // 384 is left out: `hash:384` records itself as plain `hash`, the spec compared below.
    let targets: Vec<String> = (0..12).map(|k| 160 + 32 * k).filter(|d| *d != 384).map(|d| format!("hash:{d}")).collect();
    let mut target = 0;
    let mut active_dim = 256;
    let (mut kills, mut rounds) = (0, 0);
    while kills < 20 && rounds < 80 {
        rounds += 1;
        let spec = targets[target % targets.len()].as_str();
        // Short runs land inside batches, long ones in or after the switch.
        let after = Duration::from_millis(if rng.bool() { rng.u64(30..700) } else { rng.u64(30..3000) });
        let run = common::run_killed_after(&["reindex", path.to_str().unwrap(), "--embedder", spec, "--batch", "40", "--json"], after);
        kills += run.killed as usize;
        let lines = run.lines;
        let acked = lines.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["reindexed"].as_u64()).max();
        let done = lines.iter().any(|l| l.contains("\"done\""));
        if !run.killed {
            assert!(run.status.success() && done, "reindex exited with {}: {}", run.status, run.stderr);
        }

        let db = open(&path);
        let g = db.generations();
        println!("round {rounds}: acknowledged {acked:?}, cursor {:?}, active {:?}", g.reindex.as_ref().map(|t| t.rows), g.active.embedder_spec);
        let switched = g.active.embedder_spec.as_deref() == Some(spec);
        if done {
            assert!(switched, "`done` was printed but the active generation is {:?}", g.active);
        }
        if switched {
            assert!(g.reindex.is_none());
            active_dim = g.active.dim;
            target += 1;
        } else {
            match &g.reindex {
                Some(t) => {
                    assert_eq!(t.embedder_spec.as_deref(), Some(spec));
                    assert!(t.rows >= acked.unwrap_or(0), "cursor {} behind the acknowledged {acked:?}", t.rows);
                }
                // Killed before the job recorded its target.
                None => assert_eq!(acked, None, "an acknowledged reindex was not recorded"),
            }
        }
        // Queries are answered by the active generation, whatever the job had done.
        assert_eq!(db.dimension(), active_dim);
        let (id, t) = live.iter().nth(rng.usize(..live.len())).unwrap();
        let hits = db.query(t).limit(3).ef(256).run().unwrap();
        assert_eq!(&hits[0].id, id, "exact-text query after kill {kills}");
        // Writes between runs: new, replaced and deleted documents.
        let mut batch = Vec::new();
        for _ in 0..10 {
            next_id += 1;
            batch.push(Document::new(format!("d{next_id}"), text(&mut rng, &vocab)));
        }
        for _ in 0..3 {
            let id = live.keys().nth(rng.usize(..live.len())).unwrap().clone();
            batch.push(Document::new(id, text(&mut rng, &vocab)));
        }
        for d in &batch {
            live.insert(d.id.clone(), d.text.clone());
        }
        db.ingest_batch(&batch).unwrap();
        let gone: Vec<String> = (0..3).map(|_| live.keys().nth(rng.usize(..live.len())).unwrap().clone()).collect();
        db.delete(&gone).unwrap();
        for id in gone {
            live.remove(&id);
            deleted.insert(id);
        }
        db.close().unwrap();
    }
    println!("{kills} kills in {rounds} rounds, {target} reindexes finished between them");
    assert!(kills >= 20, "only {kills} kills landed");
    let spec = targets[target % targets.len()].as_str();
    let out = Command::new(env!("CARGO_BIN_EXE_duetdb")).args(["reindex", path.to_str().unwrap(), "--embedder", spec, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true);
    let status = Command::new(env!("CARGO_BIN_EXE_duetdb")).args(["reindex", path.to_str().unwrap(), "--status", "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["active"]["embedder_spec"], spec);
    assert!(status["reindex"].is_null());
    let db = open(&path);
    assert_exact(&db, &live, &deleted, spec);
}

#[test]
fn queries_and_writes_go_on_during_a_reindex() {
    let (_dir, path) = common::temp_db();
    let mut rng = fastrand::Rng::with_seed(7);
    let vocab = vocab(&mut rng);
    let db = Db::options().embedder_spec("hash:256").open(&path).unwrap();
    let mut live = BTreeMap::new();
    let docs: Vec<Document> = (0..2000).map(|i| Document::new(format!("d{i}"), text(&mut rng, &vocab))).collect();
    for d in &docs {
        live.insert(d.id.clone(), d.text.clone());
    }
    db.ingest(docs).unwrap();
    let deleted = Mutex::new(HashSet::<String>::new());
    let stop = AtomicBool::new(false);
    let queries = AtomicUsize::new(0);
    let texts: Vec<String> = live.values().take(200).cloned().collect();
    std::thread::scope(|s| {
        let job = s.spawn(|| {
            let mut job = db.reindex(duetdb::embed::from_spec("hash:384").unwrap()).unwrap().batch_size(25).threads(1);
            let mut steps = 0;
            loop {
                steps += 1;
                if let ReindexStep::Switched { generation } = job.step().unwrap() {
                    return (generation, steps);
                }
            }
        });
        let reader = s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let gone = deleted.lock().unwrap().clone();
                let hits = db.query(&texts[i % texts.len()]).limit(10).run().unwrap();
                assert!(!hits.is_empty());
                for h in &hits {
                    assert!(!gone.contains(&h.id), "deleted document {} returned during the reindex", h.id);
                }
                queries.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
        // Writes while the job runs: new, replaced and deleted documents.
        let mut n = 2000;
        while !job.is_finished() {
            let mut batch = Vec::new();
            for _ in 0..5 {
                n += 1;
                batch.push(Document::new(format!("d{n}"), text(&mut rng, &vocab)));
            }
            let replaced = format!("d{}", rng.usize(..n));
            if !deleted.lock().unwrap().contains(&replaced) {
                batch.push(Document::new(replaced, text(&mut rng, &vocab)));
            }
            for d in &batch {
                live.insert(d.id.clone(), d.text.clone());
            }
            db.ingest_batch(&batch).unwrap();
            let gone = format!("d{}", rng.usize(..n));
            if live.remove(&gone).is_some() {
                db.delete(&[&gone]).unwrap();
                deleted.lock().unwrap().insert(gone);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (generation, steps) = job.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        println!("switched to generation {generation} after {steps} steps; {} queries ran meanwhile", queries.load(Ordering::Relaxed));
        assert_eq!(generation, 2);
    });
    assert!(queries.load(Ordering::Relaxed) > 0);
    let deleted = deleted.into_inner().unwrap();
    assert_exact(&db, &live, &deleted, "hash:384");
    // The switch survives a reopen, and the old generation is kept for rollback.
    db.close().unwrap();
    let db = open(&path);
    assert_exact(&db, &live, &deleted, "hash:384");
    assert_eq!(db.stats().unwrap().kept_generations.len(), 1);
}

/// Counts the texts an embedder is asked for; otherwise the same function.
struct Counting(Arc<dyn Embedder>, AtomicUsize);

impl Embedder for Counting {
    fn embed(&self, texts: &[&str], kind: Kind) -> duetdb::Result<Vec<Vec<f32>>> {
        self.1.fetch_add(texts.len(), Ordering::SeqCst);
        self.0.embed(texts, kind)
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }
    fn spec(&self) -> Option<String> {
        self.0.spec()
    }
}

fn counting(spec: &str) -> Arc<Counting> {
    Arc::new(Counting(duetdb::embed::from_spec(spec).unwrap(), AtomicUsize::new(0)))
}

#[test]
fn rollback_reuses_kept_rows_and_gc_removes_them() {
    let (_dir, path) = common::temp_db();
    let (a, b) = (counting("hash:64"), counting("hash:128"));
    let db = Db::options().embedder(a.clone()).open(&path).unwrap();
    let docs: Vec<Document> = (0..100).map(|i| Document::new(format!("d{i}"), format!("document number {i} about topic {}", i % 7))).collect();
    db.ingest(docs).unwrap();
    db.delete(&["d3", "d4"]).unwrap();
    assert_eq!(a.1.load(Ordering::SeqCst), 100);

    assert!(db.reindex(a.clone()).unwrap().is_noop(), "reindexing to the active embedder does nothing");
    assert_eq!(db.reindex(b.clone()).unwrap().batch_size(30).run_to_completion().unwrap(), ReindexStep::Switched { generation: 2 });
    assert_eq!(b.1.load(Ordering::SeqCst), 98, "dead rows are not embedded");
    db.ingest([Document::new("new", "a document ingested after the switch")]).unwrap();
    assert_eq!(db.query("document ingested after the switch").limit(1).run().unwrap()[0].id, "new");

    // Back to the kept generation: only the one row ingested since is embedded.
    let before = a.1.load(Ordering::SeqCst);
    assert_eq!(db.reindex(a.clone()).unwrap().run_to_completion().unwrap(), ReindexStep::Switched { generation: 1 });
    assert_eq!(a.1.load(Ordering::SeqCst) - before, 1);
    assert_eq!(db.dimension(), 64);
    assert_eq!(db.query("document ingested after the switch").limit(1).run().unwrap()[0].id, "new");
    // And forth again: nothing to embed at all. `rollback` loads the kept spec itself.
    assert_eq!(db.rollback().unwrap().run_to_completion().unwrap(), ReindexStep::Switched { generation: 2 });
    assert_eq!(db.dimension(), 128);
    assert_eq!(db.stats().unwrap().kept_generations.iter().map(|k| k.generation).collect::<Vec<_>>(), vec![1]);

    // An unfinished reindex: another embedder is refused, naming it; the same resumes.
    let c = counting("hash:96");
    let mut job = db.reindex(c.clone()).unwrap().batch_size(10);
    assert!(matches!(job.step().unwrap(), ReindexStep::Batch(p) if p.done == 10));
    drop(job);
    let err = db.reindex(counting("hash:80")).unwrap_err().to_string();
    assert!(err.contains("unfinished") && err.contains("hash:96"), "{err}");
    assert!(db.rollback().unwrap_err().to_string().contains("unfinished"));
    db.close().unwrap();
    let db = Db::options().create_if_missing(false).open(&path).unwrap();
    assert_eq!(db.stats().unwrap().reindex.as_ref().map(|t| t.rows), Some(10), "the cursor survives a reopen");
    let job = db.reindex(c.clone()).unwrap();
    assert_eq!(job.progress().done, 10, "resumed, not restarted");
    drop(job);

    // gc keeps the active and pending generations' files only.
    assert_eq!(db.gc().unwrap(), vec![1]);
    let mut files: Vec<String> = std::fs::read_dir(path.join("vectors")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, vec!["g000002.vec", "g000003.vec"]);
    assert!(db.stats().unwrap().kept_generations.is_empty());
    db.reindex(c).unwrap().run_to_completion().unwrap();
    assert_eq!(db.dimension(), 96);
    assert_eq!(db.len(), 99);
}

#[test]
fn a_checkpoint_with_a_bad_backbone_fails_before_any_work() {
    let (dir, path) = common::temp_db();
    let db = common::open(&path).unwrap();
    db.ingest([Document::new("a", "alpha")]).unwrap();
    db.close().unwrap();
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/smollm2");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), ckpt.join(f.file_name())).unwrap();
    }
    let cfg = std::fs::read_to_string(ckpt.join("config.json")).unwrap().replace("SmolLM2-135M-Instruct.Q4_1.gguf", "missing-backbone.gguf");
    std::fs::write(ckpt.join("config.json"), cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duetdb")).args(["reindex", path.to_str().unwrap(), "--embedder", ckpt.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing-backbone.gguf"), "{err}");
    let db = Db::options().create_if_missing(false).open(&path).unwrap();
    assert!(db.generations().reindex.is_none(), "nothing was started");
    assert_eq!(std::fs::read_dir(path.join("vectors")).unwrap().count(), 1);
}
