//! Integrity: a missing graph directory is rebuilt, a catalog that went back in time is
//! refused without touching the vector file, `check` names each kind of damage, `dump`
//! round-trips, `backup` taken during an ingest opens on its own with a prefix of the
//! acknowledged batches.

mod common;

use common::{sample_docs, temp_db};
use duetdb::{Db, Document, Error, Mode};
use std::fs;
use std::path::Path;
use std::process::Command;

fn cli(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_duetdb")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn missing_graph_directory_is_rebuilt_through_the_cli() {
    let (_d, path) = temp_db();
    let docs = sample_docs();
    let db = common::open(&path).unwrap();
    db.ingest(docs[..100].to_vec()).unwrap();
    db.close().unwrap();
    fs::remove_dir_all(path.join("graph")).unwrap();
    let p = path.to_str().unwrap();
    let (ok, out, err) = cli(&["stats", p, "--json"]);
    assert!(ok && !err.contains("panicked"), "{err}");
    assert!(out.contains("\"graph_points\":100"), "{out}");
    let (ok, out, err) = cli(&["query", p, &docs[7].text, "-k", "1", "--mode", "vector"]);
    assert!(ok, "{err}");
    assert!(out.contains(&docs[7].id), "{out}");
    let (ok, out, _) = cli(&["check", p]);
    assert!(ok && out.contains("0 problem(s)"), "{out}");
}

#[test]
fn a_catalog_that_went_back_in_time_is_refused_and_nothing_is_cut() {
    let (d, path) = temp_db();
    let docs = sample_docs();
    let db = common::open(&path).unwrap();
    for chunk in docs[..150].chunks(50) {
        db.ingest_batch(chunk).unwrap();
    }
    db.close().unwrap();
    let old_catalog = d.path().join("old-catalog");
    common::copy_dir(&path.join("catalog"), &old_catalog);
    let db = common::open(&path).unwrap();
    for chunk in docs[150..300].chunks(50) {
        db.ingest_batch(chunk).unwrap();
    }
    db.close().unwrap();
    let vec_len = fs::metadata(path.join("vectors/g000001.vec")).unwrap().len();
    // What sled does after damage to its log: an intact, earlier catalog.
    fs::remove_dir_all(path.join("catalog")).unwrap();
    common::copy_dir(&old_catalog, &path.join("catalog"));

    let e = common::open(&path).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{msg}");
    assert!(msg.contains("went back in time") && msg.contains("catalog") && msg.contains("COMMIT"), "{msg}");
    assert!(msg.contains("150 documents") && msg.contains("300 documents"), "{msg}");
    assert!(msg.contains("dump"), "says what to do: {msg}");
    assert_eq!(fs::metadata(path.join("vectors/g000001.vec")).unwrap().len(), vec_len, "the vector file is not cut");
    // Refused again on the next try, also through the CLI.
    let p = path.to_str().unwrap();
    let (ok, _, err) = cli(&["stats", p]);
    assert!(!ok && err.contains("went back in time"), "{err}");
    let (ok, out, _) = cli(&["check", p]);
    assert!(!ok && out.contains("went back in time"), "{out}");
    // What can still be read is exported.
    let (ok, out, err) = cli(&["dump", p]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 150);
    assert!(err.contains("dumped 150 documents"), "{err}");
    assert_eq!(fs::metadata(path.join("vectors/g000001.vec")).unwrap().len(), vec_len);
}

#[test]
fn check_names_each_kind_of_damage() {
    let (d, base) = temp_db();
    let docs = sample_docs();
    let db = common::open(&base).unwrap();
    db.ingest(docs[..120].to_vec()).unwrap();
    db.delete(&[&docs[3].id]).unwrap();
    db.ingest([Document::new(docs[4].id.clone(), "a replaced text")]).unwrap();
    let report = db.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.documents, report.rows), (119, 121));
    db.close().unwrap();
    assert!(duetdb::db::check_at(&base).unwrap().is_ok());

    let damaged = |name: &str, damage: &dyn Fn(&Path)| {
        let p = d.path().join(name);
        common::copy_dir(&base, &p);
        damage(&p);
        let r = duetdb::db::check_at(&p).unwrap();
        assert!(!r.is_ok(), "{name}: no problem found");
        r.problems
    };
    // A flipped byte inside a vector row: the rows' checksum.
    let probs = damaged("row", &|p| {
        let f = p.join("vectors/g000001.vec");
        let mut b = fs::read(&f).unwrap();
        b[64 + 10 * (8 + 4 * 384) + 100] ^= 0x40;
        fs::write(&f, b).unwrap();
    });
    assert!(probs.iter().any(|x| x.path.ends_with("g000001.vec") && x.detail.contains("checksum") && !x.derived), "{probs:?}");
    // ... which the open refuses too.
    let e = common::open(&d.path().join("row")).unwrap_err().to_string();
    assert!(e.contains("g000001.vec") && e.contains("checksum"), "{e}");
    // A truncated vector file.
    let probs = damaged("short", &|p| {
        let f = fs::OpenOptions::new().write(true).open(p.join("vectors/g000001.vec")).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 5000).unwrap();
    });
    assert!(probs.iter().any(|x| x.detail.contains("truncated")), "{probs:?}");
    // The commit record deleted, or damaged.
    let probs = damaged("record", &|p| fs::remove_file(p.join("COMMIT")).unwrap());
    assert!(probs.iter().any(|x| x.path.ends_with("COMMIT") && x.detail.contains("missing")), "{probs:?}");
    let probs = damaged("record2", &|p| fs::write(p.join("COMMIT"), [7u8; 128]).unwrap());
    assert!(probs.iter().any(|x| x.path.ends_with("COMMIT") && x.detail.contains("damaged")), "{probs:?}");
    // A damaged graph snapshot: derived state.
    let probs = damaged("graph", &|p| {
        for e in fs::read_dir(p.join("graph")).unwrap().flatten() {
            let mut b = fs::read(e.path()).unwrap();
            let n = b.len();
            b[n / 2] ^= 1;
            fs::write(e.path(), b).unwrap();
        }
    });
    assert!(probs.iter().all(|x| x.derived) && probs[0].detail.contains("graph snapshot"), "{probs:?}");
    // A row that holds another document's id.
    let probs = damaged("iid", &|p| {
        let f = p.join("vectors/g000001.vec");
        let mut b = fs::read(&f).unwrap();
        let off = 64 + 20 * (8 + 4 * 384);
        b[off..off + 8].copy_from_slice(&999u64.to_le_bytes());
        fs::write(&f, b).unwrap();
    });
    assert!(probs.iter().any(|x| x.detail.contains("row 20 belongs to internal id 999")), "{probs:?}");
    // The CLI exits non-zero and prints the problems.
    let (ok, out, _) = cli(&["check", d.path().join("short").to_str().unwrap()]);
    assert!(!ok && out.contains("truncated"), "{out}");
}

#[test]
fn dump_then_ingest_gives_the_same_documents() {
    let (d, path) = temp_db();
    let docs = sample_docs();
    let db = common::open(&path).unwrap();
    let with_meta: Vec<Document> = docs[..80].iter().enumerate().map(|(i, x)| x.clone().with_metadata(serde_json::json!({"n": i, "tag": "é"}))).collect();
    db.ingest(with_meta.clone()).unwrap();
    db.delete(&[&docs[0].id, &docs[1].id]).unwrap();
    db.ingest([Document::new(docs[2].id.clone(), "a new text for the third")]).unwrap();
    db.close().unwrap();
    let out = d.path().join("dump.jsonl");
    let (ok, _, err) = cli(&["dump", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok && err.contains("dumped 78 documents; 0 could not be read"), "{err}");
    let copy = d.path().join("copy.duet");
    let (ok, _, err) = cli(&["ingest", copy.to_str().unwrap(), out.to_str().unwrap(), "--embedder", "hash"]);
    assert!(ok, "{err}");
    let (a, b) = (common::open(&path).unwrap(), common::open(&copy).unwrap());
    assert_eq!(b.len(), 78);
    for x in &with_meta {
        assert_eq!(a.get(&x.id).unwrap(), b.get(&x.id).unwrap(), "{}", x.id);
    }
    assert!(b.get(&docs[0].id).unwrap().is_none());
    assert_eq!(b.get(&docs[2].id).unwrap().unwrap().text, "a new text for the third");
}

#[test]
fn backup_during_an_ingest_opens_with_a_prefix_of_the_acknowledged_batches() {
    let (d, path) = temp_db();
    let docs = sample_docs();
    let db = std::sync::Arc::new(common::open(&path).unwrap());
    let batches: Vec<Vec<Document>> = docs.chunks(20).map(|c| c.to_vec()).collect();
    db.ingest_batch(&batches[0]).unwrap();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let writer = {
        let (db, batches, acked) = (db.clone(), batches.clone(), acked.clone());
        std::thread::spawn(move || {
            for b in &batches[1..] {
                db.ingest_batch(b).unwrap();
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut copies = Vec::new();
    for i in 0..4 {
        let before = acked.load(std::sync::atomic::Ordering::SeqCst);
        let dest = d.path().join(format!("backup-{i}"));
        db.backup(&dest).unwrap();
        // Readers keep answering meanwhile.
        assert!(!db.query(&docs[0].text).mode(Mode::Vector).limit(1).run().unwrap().is_empty());
        copies.push((dest, before));
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    writer.join().unwrap();
    assert!(db.backup(d.path().join("backup-0")).unwrap_err().to_string().contains("already exists"));
    for (dest, before) in copies {
        let copy = Db::open(&dest).unwrap();
        let n = copy.len();
        assert!(n.is_multiple_of(20) || n == docs.len(), "{n} documents is not a whole number of batches");
        let k = n.div_ceil(20);
        println!("backup: {k} batches of {} ({before} acknowledged before it started)", batches.len());
        assert!(k >= before, "the copy has {k} batches, {before} were acknowledged before it started");
        for (i, b) in batches.iter().enumerate() {
            for x in b {
                assert_eq!(copy.get(&x.id).unwrap().is_some(), i < k, "{} in batch {i}", x.id);
            }
        }
        let top = copy.query(&batches[k - 1][0].text).mode(Mode::Vector).limit(1).run().unwrap();
        assert_eq!(top[0].id, batches[k - 1][0].id);
        assert!(copy.check().unwrap().is_ok());
        assert_eq!(copy.stats().unwrap().fulltext_documents, n as u64, "the copy builds its full-text index");
    }
}
