//! Damaged and foreign files give a clear error that names the problem, never a panic;
//! damage to derived state (the graph snapshot) only costs a rebuild.

mod common;

use common::{sample_docs, temp_db};
use duetdb::Error;
use std::fs;
use std::path::Path;

fn make_db(path: &Path) {
    let db = common::open(path).unwrap();
    db.ingest(sample_docs()).unwrap();
    db.close().unwrap();
}

fn vec_file(path: &Path) -> std::path::PathBuf {
    path.join("vectors/g000001.vec")
}

#[test]
fn truncated_vector_file() {
    let (_d, path) = temp_db();
    make_db(&path);
    let f = fs::OpenOptions::new().write(true).open(vec_file(&path)).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 1000).unwrap();
    let e = common::open(&path).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("truncated") && e.to_string().contains("g000001.vec"), "{e}");
}

#[test]
fn flipped_header_bytes() {
    for (offset, expect) in [(0usize, "magic"), (12, "checksum"), (40, "checksum"), (61, "checksum")] {
        let (_d, path) = temp_db();
        make_db(&path);
        let mut b = fs::read(vec_file(&path)).unwrap();
        b[offset] ^= 0x5a;
        fs::write(vec_file(&path), &b).unwrap();
        let e = common::open(&path).unwrap_err().to_string();
        assert!(e.contains(expect) && e.contains("corrupt"), "offset {offset}: {e}");
    }
}

#[test]
fn missing_vector_file() {
    let (_d, path) = temp_db();
    make_db(&path);
    fs::remove_file(vec_file(&path)).unwrap();
    let e = common::open(&path).unwrap_err().to_string();
    assert!(e.contains("g000001.vec"), "{e}");
}

#[test]
fn foreign_files_and_directories() {
    let (d, path) = temp_db();
    fs::write(&path, b"SQLite format 3\0").unwrap();
    let e = common::open(&path).unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }) && e.to_string().contains("is a file"), "{e}");
    let other = d.path().join("project");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("Cargo.toml"), b"[package]").unwrap();
    let e = common::open(&other).unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e}");
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1, "a foreign directory is left untouched");
    let fake = d.path().join("fake");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("DUETDB"), b"something else\n").unwrap();
    assert!(matches!(common::open(&fake), Err(Error::Foreign { .. })));
    fs::write(fake.join("DUETDB"), b"duetdb database\nformat 99\n").unwrap();
    assert!(matches!(common::open(&fake), Err(Error::FormatVersion { found: 99, .. })));
}

#[test]
fn garbage_in_the_catalog_directory() {
    let (_d, path) = temp_db();
    make_db(&path);
    let catalog = path.join("catalog");
    let mut rng = fastrand::Rng::with_seed(7);
    for entry in fs::read_dir(&catalog).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            let len = entry.metadata().unwrap().len().max(64) as usize;
            fs::write(entry.path(), (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>()).unwrap();
        }
    }
    let e = common::open(&path).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. } | Error::Catalog { .. }), "{e}");
    assert!(e.to_string().contains("catalog"), "{e}");

    let (_d2, path2) = temp_db();
    make_db(&path2);
    fs::remove_dir_all(path2.join("catalog")).unwrap();
    fs::create_dir(path2.join("catalog")).unwrap();
    fs::write(path2.join("catalog/junk"), b"junk").unwrap();
    let e = common::open(&path2).unwrap_err();
    assert!(e.to_string().contains("no manifest"), "{e}");
}

#[test]
fn damaged_graph_snapshot_is_rebuilt() {
    let (_d, path) = temp_db();
    make_db(&path);
    for entry in fs::read_dir(path.join("graph")).unwrap().flatten() {
        let mut b = fs::read(entry.path()).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        fs::write(entry.path(), &b).unwrap();
    }
    let docs = sample_docs();
    let db = common::open(&path).unwrap();
    assert_eq!(db.stats().unwrap().graph_points, docs.len() as u64);
    assert_eq!(db.query(&docs[3].text).limit(1).run().unwrap()[0].id, docs[3].id);
}

/// A document record that no longer decodes (its bytes replaced behind the engine's back)
/// makes every query that would return it fail with an error naming the catalog, never
/// a shorter list of hits; `get` and `check` say so too.
#[test]
fn an_unreadable_record_fails_the_query_instead_of_vanishing_from_it() {
    let (_d, path) = temp_db();
    make_db(&path);
    let (iid, text) = {
        let db = common::open(&path).unwrap();
        let hit = db.query("music player daemon command line client").mode(duetdb::Mode::Text).limit(1).run().unwrap().remove(0);
        assert_eq!(hit.id, "mpc");
        db.close().unwrap();
        let sled = sled::open(path.join("catalog")).unwrap();
        let iid = sled.open_tree("ids").unwrap().get("mpc").unwrap().expect("mpc has an internal id");
        (iid, hit.text)
    };
    {
        let sled = sled::open(path.join("catalog")).unwrap();
        let docs = sled.open_tree("docs").unwrap();
        assert!(docs.get(&iid).unwrap().is_some());
        docs.insert(&iid, &b"\x00 not a record"[..]).unwrap();
        sled.flush().unwrap();
    }
    let db = common::open(&path).unwrap();
    for mode in [duetdb::Mode::Text, duetdb::Mode::Vector, duetdb::Mode::Hybrid] {
        let e = db.query(&text).mode(mode).limit(3).run().unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("catalog") && e.to_string().contains("duetdb check"), "{mode:?}: {e}");
    }
    assert!(db.get("mpc").is_err());
    assert!(!db.check().unwrap().is_ok());
}

/// A document record gone from the catalog (removed behind the engine's back) while its
/// row is live: a query that finds the row, the export and the full-text index's rebuild
/// from the catalog fail naming the catalog instead of leaving the document out. A stress
/// hunt (`tests/damage.rs`, garbage in the catalog) found the rebuild skipping such rows.
#[test]
fn a_missing_record_fails_queries_the_export_and_the_full_text_rebuild_instead_of_skipping_it() {
    let (_d, path) = temp_db();
    make_db(&path);
    {
        let sled = sled::open(path.join("catalog")).unwrap();
        let iid = sled.open_tree("ids").unwrap().get("mpc").unwrap().expect("mpc has an internal id");
        assert!(sled.open_tree("docs").unwrap().remove(&iid).unwrap().is_some());
        sled.flush().unwrap();
    }
    let missing = |e: &Error| matches!(e, Error::Corrupt { .. }) && e.to_string().contains("catalog") && e.to_string().contains("is missing");
    {
        let db = common::open(&path).unwrap();
        // A query that finds the row says so too, rather than answering without it.
        let text = sample_docs().into_iter().find(|d| d.id == "mpc").unwrap().text;
        for mode in [duetdb::Mode::Text, duetdb::Mode::Vector, duetdb::Mode::Hybrid] {
            let e = db.query(&text).mode(mode).limit(3).run().unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("is missing"), "{mode:?}: {e}");
        }
        let rows: Vec<_> = db.export(None).unwrap().collect();
        let errors: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(errors.len() == 1 && missing(errors[0]), "export gave {} rows and errors {errors:?}", rows.len());
        db.close().unwrap();
    }
    fs::remove_dir_all(path.join("fulltext")).unwrap();
    match common::open(&path) {
        Err(e) => assert!(missing(&e), "{e}"),
        Ok(_) => panic!("the full-text index was rebuilt without a live document"),
    }
}
