//! The engine through its public API: ingest, query, upsert, delete, reopen, filters,
//! concurrency and input errors.

mod common;

use common::{sample_docs, temp_db};
use duetdb::{Db, Document, Error, Mode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn ingest_query_and_reopen() {
    let (_d, path) = temp_db();
    let docs = sample_docs();
    {
        let db = common::open(&path).unwrap();
        let r = db.ingest(docs.clone()).unwrap();
        assert_eq!(r.written, docs.len());
        assert_eq!(db.len(), docs.len());
        // every document is found by its own text
        for d in docs.iter().step_by(17) {
            let hits = db.query(&d.text).mode(Mode::Vector).limit(3).run().unwrap();
            assert_eq!(hits[0].id, d.id, "exact text of {}", d.id);
            assert!(hits[0].score > 0.99);
            assert_eq!(hits[0].metadata, d.metadata);
        }
        db.close().unwrap();
    }
    let db = common::open(&path).unwrap();
    assert_eq!(db.len(), docs.len());
    let st = db.stats().unwrap();
    assert_eq!((st.graph_points, st.snapshot_rows, st.vector_rows), (docs.len() as u64, docs.len() as u64, docs.len() as u64));
    let d = &docs[100];
    assert_eq!(db.get(&d.id).unwrap().as_ref(), Some(d));
    assert_eq!(db.query(&d.text).limit(1).run().unwrap()[0].id, d.id);
    // re-ingesting unchanged documents writes nothing
    let r = db.ingest(docs.clone()).unwrap();
    assert_eq!((r.written, r.unchanged), (0, docs.len()));
    assert_eq!(db.stats().unwrap().vector_rows, docs.len() as u64);
}

#[test]
fn reopen_without_checkpoint_reinserts_the_tail() {
    let (_d, path) = temp_db();
    let docs = sample_docs();
    let db = common::open(&path).unwrap();
    db.ingest(docs[..200].to_vec()).unwrap();
    db.checkpoint().unwrap();
    db.ingest(docs[200..].to_vec()).unwrap();
    // forget the Db without its drop-time checkpoint, as a crash would
    std::mem::forget(db);
    // the forgotten Db still holds the lock within this process
    assert!(matches!(common::open(&path), Err(Error::Locked { .. })));
}

#[test]
fn upsert_replaces_and_delete_removes() {
    let (_d, path) = temp_db();
    let db = common::open(&path).unwrap();
    db.ingest([Document::new("a", "the quick brown fox jumps"), Document::new("b", "a lazy dog sleeps in the sun")]).unwrap();
    db.ingest([Document::new("a", "compilers translate source code into machine code")]).unwrap();
    assert_eq!(db.len(), 2);
    assert_eq!(db.get("a").unwrap().unwrap().text, "compilers translate source code into machine code");
    let hits = db.query("the quick brown fox jumps").limit(10).run().unwrap();
    assert_eq!(hits.iter().filter(|h| h.id == "a").count(), 1, "old version must not be returned");
    assert!(hits.iter().all(|h| h.text != "the quick brown fox jumps"));
    assert_eq!(db.stats().unwrap().tombstones, 1);

    assert_eq!(db.delete(&["b", "b", "missing"]).unwrap(), 1);
    assert_eq!(db.len(), 1);
    assert!(db.get("b").unwrap().is_none());
    assert!(db.query("lazy dog").limit(10).run().unwrap().iter().all(|h| h.id != "b"));
    drop(db);
    let db = common::open(&path).unwrap();
    assert_eq!(db.len(), 1);
    assert!(db.get("b").unwrap().is_none());
    assert!(db.query("lazy dog sleeps").limit(10).run().unwrap().iter().all(|h| h.id != "b"));
    // last one wins inside a batch
    db.ingest_batch(&[Document::new("c", "first"), Document::new("c", "second version")]).unwrap();
    assert_eq!(db.get("c").unwrap().unwrap().text, "second version");
}

#[test]
fn tombstones_trigger_a_graph_rebuild() {
    let (_d, path) = temp_db();
    let docs = sample_docs();
    let db = common::open(&path).unwrap();
    db.ingest(docs.clone()).unwrap();
    let gone: Vec<&str> = docs.iter().take(300).map(|d| d.id.as_str()).collect();
    assert_eq!(db.delete(&gone).unwrap(), 300);
    let st = db.stats().unwrap();
    assert_eq!(st.documents, docs.len() as u64 - 300);
    assert!(st.graph_points < docs.len() as u64, "graph was rebuilt without dead rows: {st:?}");
    for d in docs.iter().skip(300).step_by(11) {
        assert_eq!(db.query(&d.text).limit(1).run().unwrap()[0].id, d.id);
    }
    drop(db);
    let db = common::open(&path).unwrap();
    assert_eq!(db.len(), docs.len() - 300);
    let hits = db.query(&docs[0].text).limit(5).run().unwrap();
    assert!(hits.iter().all(|h| !gone.contains(&h.id.as_str())));
}

#[test]
fn metadata_filters() {
    let (_d, path) = temp_db();
    let db = common::open(&path).unwrap();
    let docs: Vec<Document> = (0..300)
        .map(|i| Document::new(format!("d{i}"), format!("document number {i} about topic {}", i % 7)).with_metadata(json!({"bucket": i % 3, "rare": i == 123})))
        .collect();
    db.ingest(docs).unwrap();
    let hits = db.query("document about topic 2").limit(20).filter("bucket", 1).run().unwrap();
    assert_eq!(hits.len(), 20);
    assert!(hits.iter().all(|h| h.metadata["bucket"] == 1));
    // a filter matching one document still finds it (exact fallback)
    let hits = db.query("unrelated words entirely").limit(5).filter("rare", true).run().unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "d123");
    assert!(db.query("x").filter("bucket", 1).filter("rare", true).run().unwrap().is_empty());
}

#[test]
fn readers_query_while_one_thread_ingests() {
    let (_d, path) = temp_db();
    let docs = sample_docs();
    let db = Arc::new(common::open(&path).unwrap());
    db.ingest(docs[..100].to_vec()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (db, stop, docs) = (db.clone(), stop.clone(), docs.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let d = &docs[(n * 7 + t) % 100];
                    let hits = db.query(&d.text).mode(Mode::Vector).limit(5).run().unwrap();
                    assert_eq!(hits[0].id, d.id, "hits {:?}", hits.iter().map(|h| (&h.id, h.score)).collect::<Vec<_>>());
                    let mut ids: Vec<_> = hits.iter().map(|h| &h.id).collect();
                    ids.dedup();
                    assert_eq!(ids.len(), hits.len(), "no duplicate ids");
                    n += 1;
                }
                n
            })
        })
        .collect();
    for chunk in docs[100..].chunks(20) {
        db.ingest(chunk.to_vec()).unwrap();
    }
    // upserts of documents the readers look for, concurrently
    db.ingest(docs[..50].iter().map(|d| d.clone().with_metadata(json!({"v": 2})))).unwrap();
    stop.store(true, Ordering::Relaxed);
    let total: usize = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(db.len(), docs.len());
}

#[test]
fn bad_input_is_a_named_error() {
    let (_d, path) = temp_db();
    let db = Db::options().embedder_spec("hash").max_text_bytes(1000).open(&path).unwrap();
    let e = db.ingest([Document::new("ok", "fine"), Document::new("empty", "  ")]).unwrap_err();
    assert!(e.to_string().contains("`empty` has empty text"), "{e}");
    assert_eq!(db.len(), 0, "a bad document fails its whole batch");
    let e = db.ingest([Document::new("big", "x".repeat(2000))]).unwrap_err();
    assert!(e.to_string().contains("`big` has 2000 bytes"), "{e}");
    let e = db.ingest([Document::new("", "text")]).unwrap_err();
    assert!(e.to_string().contains("id is empty"), "{e}");
    let e = db.ingest([Document::new("m", "text").with_metadata(json!([1, 2]))]).unwrap_err();
    assert!(e.to_string().contains("metadata"), "{e}");
    assert!(matches!(db.query("").run(), Err(Error::InvalidInput(_))));
    assert!(matches!(db.query("").vector(vec![0.1; 3]).run(), Err(Error::Dimension { expected: 384, found: 3 })));
    let mut v = vec![0.0; 384];
    v[0] = f32::NAN;
    assert!(db.query("").vector(v).run().is_err());
}

#[test]
fn embedder_is_restored_and_mismatch_points_to_reindex() {
    let (_d, path) = temp_db();
    Db::options().embedder_spec("hash:64").open(&path).unwrap().ingest([Document::new("a", "alpha beta")]).unwrap();
    let db = Db::open(&path).unwrap(); // no embedder named: the recorded one is restored
    assert_eq!(db.stats().unwrap().dimension, 64);
    drop(db);
    let e = Db::options().embedder_spec("hash").open(&path).unwrap_err();
    assert!(matches!(e, Error::EmbedderMismatch { .. }));
    assert!(e.to_string().contains("reindex"), "{e}");
    assert!(matches!(Db::options().embedder_spec("nope").open(&path), Err(Error::UnknownEmbedder { .. })));
    assert!(matches!(Db::options().create_if_missing(false).open(path.with_extension("x")), Err(Error::NotFound { .. })));
}

#[test]
fn two_opens_of_one_database_are_refused() {
    let (_d, path) = temp_db();
    let db = common::open(&path).unwrap();
    let e = common::open(&path).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("locked"));
    db.close().unwrap();
    common::open(&path).unwrap();
}

#[test]
fn ingest_after_reopening_without_naming_the_embedder() {
    // The recorded embedder is loaded lazily on first use; that must not take a lock
    // the ingest already holds (it once deadlocked here).
    let (_d, path) = temp_db();
    common::open(&path).unwrap().ingest([Document::new("a", "alpha beta")]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let db = Db::open(&p).unwrap();
        db.ingest([Document::new("b", "gamma delta")]).unwrap();
        let hits = db.query("gamma delta").limit(1).run().unwrap();
        tx.send(hits[0].id.clone()).unwrap();
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("ingest after a plain reopen finished");
    assert_eq!(got, "b");
}

/// An embedder that stops inside `embed` (where an ingest holds the writer lock) until
/// it is let go, to show what readers do meanwhile.
struct Gate {
    inner: Arc<dyn duetdb::Embedder>,
    entered: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl duetdb::Embedder for Gate {
    fn embed(&self, texts: &[&str], kind: duetdb::Kind) -> duetdb::Result<Vec<Vec<f32>>> {
        if kind == duetdb::Kind::Passage {
            let _ = self.entered.try_send(());
            let _ = self.release.lock().unwrap().recv();
        }
        self.inner.embed(texts, kind)
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
    fn spec(&self) -> Option<String> {
        None
    }
}

#[test]
fn stats_len_get_and_queries_do_not_wait_for_an_ingest() {
    let (_d, path) = temp_db();
    let docs = sample_docs();
    let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::channel();
    let gate = Gate { inner: duetdb::embed::from_spec("hash").unwrap(), entered: entered_tx, release: std::sync::Mutex::new(release_rx) };
    let db = Arc::new(Db::options().embedder(Arc::new(gate)).open(&path).unwrap());
    release.send(()).unwrap();
    db.ingest(docs[..100].to_vec()).unwrap();
    entered.recv().unwrap(); // that ingest's own passage through the gate
    let writer = {
        let (db, rest) = (db.clone(), docs[100..].to_vec());
        std::thread::spawn(move || db.ingest(rest).unwrap())
    };
    entered.recv().unwrap(); // the ingest now holds the writer lock, inside `embed`
                             // A watchdog lets the ingest go after a minute, so that a reader that waits for it
                             // fails this test instead of hanging it.
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (release, fired) = (release.clone(), fired.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(60));
            fired.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = release.send(());
        })
    };
    assert_eq!(db.len(), 100);
    assert_eq!(db.stats().unwrap().documents, 100);
    assert!(db.get(&docs[3].id).unwrap().is_some());
    assert!(!db.query(&docs[3].text).limit(3).run().unwrap().is_empty());
    assert!(!fired.load(std::sync::atomic::Ordering::SeqCst), "a reader waited for the ingest");
    for _ in 0..docs.len() {
        let _ = release.send(());
    }
    writer.join().unwrap();
    assert_eq!(db.len(), docs.len());
    drop(watchdog);
}

/// After a crash that left many rows past the graph snapshot (here: no snapshot at all),
/// an open defers them to a background indexer: every document is found at once, writes
/// go on meanwhile, and a close keeps what was indexed.
#[test]
fn an_open_after_a_lost_snapshot_answers_at_once_and_indexes_in_the_background() {
    let (_d, path) = temp_db();
    let sample = sample_docs();
    let docs: Vec<Document> = (0..3000)
        .map(|i| {
            let d = &sample[i % sample.len()];
            Document::new(format!("{}-{i}", d.id), format!("{} (copy {i}, marker q{i}z)", d.text))
        })
        .collect();
    {
        let db = common::open(&path).unwrap();
        db.ingest(docs.clone()).unwrap();
        db.close().unwrap();
    }
    // What a kill before the first snapshot leaves: no graph on disk.
    std::fs::remove_dir_all(path.join("graph")).unwrap();
    let db = common::open(&path).unwrap();
    for d in docs.iter().step_by(97) {
        let hits = db.query(&d.text).mode(Mode::Vector).limit(1).run().unwrap();
        assert_eq!(hits[0].id, d.id, "found while the graph is being built");
    }
    db.ingest([Document::new("late", "a document written while the graph catches up on the crash's rows")]).unwrap();
    assert_eq!(db.query("written while the graph catches up").mode(Mode::Vector).limit(1).run().unwrap()[0].id, "late");
    db.close().unwrap();
    let snapshots = std::fs::read_dir(path.join("graph")).map_or(0, |d| d.count());
    assert!(snapshots > 0, "the close wrote a new graph snapshot");
    let db = common::open(&path).unwrap();
    let report = db.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for d in docs.iter().step_by(101) {
        assert_eq!(db.query(&d.text).mode(Mode::Vector).limit(1).run().unwrap()[0].id, d.id, "after reopening");
    }
    assert_eq!(db.len(), 3001);
}

#[test]
fn a_stream_commits_in_order_and_re_embeds_what_changed_behind_it() {
    let (_d, path) = temp_db();
    let db = common::open(&path).unwrap();
    let e = db.embedder().unwrap();
    // d0 changes in batch 1 and changes back in batch 2. Batch 2 is embedded while batch
    // 1 waits (the callback holds the committer after batch 0), so it finds d0 as batch
    // 0 left it, unchanged, and has no vector for it: the commit must embed it then.
    let texts = ["alpha beta gamma", "delta epsilon", "alpha beta gamma"];
    let batches = texts.iter().enumerate().map(|(b, t)| Ok((b, vec![Document::new("d0", *t), Document::new(format!("x{b}"), format!("other text {b}"))])));
    let mut order = Vec::new();
    let r = db
        .ingest_stream(batches, |b, docs, r| {
            if b == 0 {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            order.push((b, docs.len(), r.written));
            Ok(())
        })
        .unwrap();
    assert_eq!(order, [(0, 2, 2), (1, 2, 2), (2, 2, 2)]);
    assert_eq!(r.written, 6);
    assert_eq!(db.get("d0").unwrap().unwrap().text, texts[2]);
    let mut expected = e.embed(&[texts[2]], duetdb::Kind::Passage).unwrap().remove(0);
    duetdb::embed::normalize(&mut expected);
    assert_eq!(db.vector("d0").unwrap().unwrap(), expected);
    assert_eq!(db.len(), 4);
    // Ingesting the same stream again writes nothing.
    let again = texts.iter().enumerate().map(|(b, t)| Ok((b, vec![Document::new("d0", *t), Document::new(format!("x{b}"), format!("other text {b}"))])));
    let r = db.ingest_stream(again.skip(2), |_, _, _| Ok(())).unwrap();
    assert_eq!((r.written, r.unchanged), (0, 2));
}

#[test]
fn a_stream_stops_at_the_first_error_with_what_came_before_committed() {
    let (_d, path) = temp_db();
    let db = common::open(&path).unwrap();
    let batch = |b: usize| vec![Document::new(format!("d{b}"), format!("text {b}"))];
    // An error item: the batches before it are committed, none after.
    let items = vec![Ok(("b0", batch(0))), Ok(("b1", batch(1))), Err(Error::invalid("line 9 is not JSON")), Ok(("b3", batch(3)))];
    let e = db.ingest_stream(items, |_, _, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("line 9 is not JSON"), "{e}");
    assert_eq!(db.len(), 2);
    assert!(db.get("d3").unwrap().is_none());
    // A bad document fails its batch, named by the batch's tag.
    let items = vec![Ok(("b4", batch(4))), Ok(("b5", vec![Document::new("e", " ")])), Ok(("b6", batch(6)))];
    let e = db.ingest_stream(items, |_, _, _| Ok(())).unwrap_err();
    assert!(e.to_string().starts_with("b5: ") && e.to_string().contains("`e` has empty text"), "{e}");
    assert!(db.get("d4").unwrap().is_some() && db.get("d6").unwrap().is_none());
    // The callback's error stops the stream after that batch's commit.
    let items = (7..10).map(|b| Ok((b, batch(b))));
    let e = db.ingest_stream(items, |b, _, _| if b == 7 { Err(Error::invalid("stop here")) } else { Ok(()) }).unwrap_err();
    assert!(e.to_string().contains("stop here"), "{e}");
    assert!(db.get("d7").unwrap().is_some() && db.get("d8").unwrap().is_none() && db.get("d9").unwrap().is_none());
}
