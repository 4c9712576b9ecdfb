//! Hybrid search: the BM25 index beside the vectors, its query modes, and its life as
//! derived state (caught up after a kill between the two commits, rebuilt when deleted).

mod common;

use duetdb::{Db, Document, Mode};
use std::process::Command;

fn ids(db: &Db, text: &str, mode: Mode) -> Vec<String> {
    db.query(text).mode(mode).limit(10).run().unwrap().into_iter().map(|h| h.id).collect()
}

#[test]
fn rare_words_are_found_at_once_and_dead_documents_never_return() {
    let (_d, path) = common::temp_db();
    let db = common::open(&path).unwrap();
    db.ingest(common::sample_docs()).unwrap();
    db.ingest_batch(&[Document::new("zq", "a tool for the quuxification of frobnicated widgets")]).unwrap();
    for mode in [Mode::Text, Mode::Hybrid] {
        assert_eq!(ids(&db, "quuxification", mode)[0], "zq", "{mode:?} right after the batch was acknowledged");
    }
    let hit = &db.query("quuxification").mode(Mode::Hybrid).run().unwrap()[0];
    assert!(hit.found_by.contains(&"text".to_string()) && hit.text_rank == Some(1), "{hit:?}");

    // Replaced: the old words are gone from every mode, the new ones found.
    db.ingest_batch(&[Document::new("zq", "now about sprocket calibration")]).unwrap();
    for mode in [Mode::Text, Mode::Hybrid] {
        assert!(!ids(&db, "quuxification frobnicated", mode).contains(&"zq".to_string()) || mode == Mode::Hybrid);
        assert_eq!(ids(&db, "sprocket calibration", mode)[0], "zq");
    }
    let old = db.query("quuxification frobnicated").mode(Mode::Text).run().unwrap();
    assert!(old.is_empty(), "the replaced version came back: {old:?}");
    // Deleted: from no mode, by its words or by its exact text.
    db.delete(&["zq"]).unwrap();
    for mode in [Mode::Vector, Mode::Text, Mode::Hybrid] {
        assert!(!ids(&db, "now about sprocket calibration", mode).contains(&"zq".to_string()), "{mode:?}");
    }
    drop(db);
    let db = common::open(&path).unwrap();
    for mode in [Mode::Vector, Mode::Text, Mode::Hybrid] {
        assert!(!ids(&db, "now about sprocket calibration", mode).contains(&"zq".to_string()), "{mode:?} after reopen");
    }
    assert_eq!(db.stats().unwrap().fulltext_documents, db.len() as u64);
}

#[test]
fn queries_are_taken_literally_and_filters_apply_in_every_mode() {
    let (_d, path) = common::temp_db();
    let db = common::open(&path).unwrap();
    db.ingest([
        Document::new("a", "error E1234: disk quota exceeded").with_metadata(serde_json::json!({"os": "linux"})),
        Document::new("b", "error E1234 in the windows registry").with_metadata(serde_json::json!({"os": "windows"})),
        Document::new("c", "a media player"),
    ])
    .unwrap();
    // Query syntax is text: no parse error, the words still match.
    for q in ["E1234 AND (quota OR", "\"disk quota", "os:linux +quota -disk", "quota^2 ~ * [a TO z]"] {
        let hits = db.query(q).mode(Mode::Text).run().unwrap();
        assert_eq!(hits.first().map(|h| h.id.as_str()), Some("a"), "{q}");
    }
    // Nothing indexable: no hits in text mode, the vector side alone in hybrid mode.
    for q in ["?!...", "the of and to"] {
        assert!(db.query(q).mode(Mode::Text).run().unwrap().is_empty(), "{q}");
        let hybrid = db.query(q).mode(Mode::Hybrid).run().unwrap();
        assert_eq!(hybrid.len(), 3, "{q}");
        assert!(hybrid.iter().all(|h| h.found_by == ["vector"]));
    }
    for mode in [Mode::Vector, Mode::Text, Mode::Hybrid] {
        let hits = db.query("error E1234").mode(mode).filter("os", "windows").run().unwrap();
        assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec!["b"], "{mode:?}");
    }
}

#[test]
fn kill_between_the_catalog_and_the_fulltext_commit_is_caught_up() {
    let (dir, path) = common::temp_db();
    let input = dir.path().join("in.jsonl");
    let docs: Vec<Document> = (0..50).map(|i| Document::new(format!("d{i}"), format!("common words and the unique token zz{i}qq"))).collect();
    let lines: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let bin = env!("CARGO_BIN_EXE_duetdb");
    let ok = Command::new(bin).args(["ingest", path.to_str().unwrap(), input.to_str().unwrap(), "--embedder", "hash", "--batch", "10"]).output().unwrap();
    assert!(ok.status.success());
    // Replace one document and ingest a new one; the process dies right after the
    // catalog commit, before the full-text index hears of it.
    let update = dir.path().join("update.jsonl");
    std::fs::write(&update, "{\"id\": \"d3\", \"text\": \"replaced by the rare word yy77\"}\n{\"id\": \"new\", \"text\": \"brand new xx55\"}\n").unwrap();
    let killed =
        Command::new(bin).args(["ingest", path.to_str().unwrap(), update.to_str().unwrap()]).env("DUETDB_CRASH_AT", "after-catalog-commit").output().unwrap();
    assert!(!killed.status.success(), "the crash point did not fire");
    // And a delete that dies the same way.
    let killed = Command::new(bin).args(["delete", path.to_str().unwrap(), "d7"]).env("DUETDB_CRASH_AT", "after-catalog-commit").output().unwrap();
    assert!(!killed.status.success());

    let db = Db::options().create_if_missing(false).open(&path).unwrap();
    assert_eq!(db.len(), 50, "50 - d7 + new");
    assert_eq!(db.stats().unwrap().fulltext_documents, 50, "the index holds exactly the live documents");
    assert_eq!(ids(&db, "yy77", Mode::Text), vec!["d3"]);
    assert_eq!(ids(&db, "xx55", Mode::Text), vec!["new"]);
    assert!(ids(&db, "zz3qq", Mode::Text).is_empty(), "the replaced version");
    assert!(ids(&db, "zz7qq", Mode::Text).is_empty(), "the deleted document");
    for i in (0..50).filter(|i| *i != 3 && *i != 7) {
        assert_eq!(ids(&db, &format!("zz{i}qq"), Mode::Text), vec![format!("d{i}")]);
    }
    db.close().unwrap();

    // A deleted index directory is rebuilt from the catalog on open.
    std::fs::remove_dir_all(path.join("fulltext")).unwrap();
    let db = Db::options().create_if_missing(false).open(&path).unwrap();
    assert_eq!(db.stats().unwrap().fulltext_documents, 50);
    assert_eq!(ids(&db, "yy77", Mode::Text), vec!["d3"]);
    db.close().unwrap();
    // So is a damaged one.
    let meta = path.join("fulltext/meta.json");
    std::fs::write(&meta, b"{ not json").unwrap();
    let db = Db::options().create_if_missing(false).open(&path).unwrap();
    assert_eq!(ids(&db, "xx55", Mode::Text), vec!["new"]);
    assert_eq!(db.stats().unwrap().fulltext_documents, 50);
}

#[test]
fn the_cli_reports_rankers_and_ranks() {
    let (dir, path) = common::temp_db();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": \"a\", \"text\": \"ripgrep searches directories for a regex\"}\n{\"id\": \"b\", \"text\": \"a media player\"}\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_duetdb");
    assert!(Command::new(bin).args(["ingest", path.to_str().unwrap(), input.to_str().unwrap(), "--embedder", "hash"]).status().unwrap().success());
    for mode in ["vector", "text", "hybrid"] {
        let out = Command::new(bin).args(["query", path.to_str().unwrap(), "regex directories", "--mode", mode, "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let top = &v["hits"][0];
        assert_eq!(top["id"], "a", "{mode}: {v}");
        let found: Vec<&str> = top["found_by"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        match mode {
            "vector" => assert!(found == ["vector"] && top["vector_rank"] == 1 && top.get("text_rank").is_none()),
            "text" => assert!(found == ["text"] && top["text_rank"] == 1),
            _ => assert!(found == ["vector", "text"] && top["vector_rank"] == 1 && top["text_rank"] == 1),
        }
    }
    let bad = Command::new(bin).args(["query", path.to_str().unwrap(), "x", "--mode", "fuzzy"]).output().unwrap();
    assert!(!bad.status.success());
}
