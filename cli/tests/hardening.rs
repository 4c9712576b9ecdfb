//! The edges a careless or hostile input found, each reproduced with the release binary
//! and the `hash` embedder: numbers without bounds, paths that would harm a database,
//! leftovers of a killed backup, and the JSON users already have.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn duetdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_duetdb")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run whose message is one `error:` line containing every one of `words`.
fn assert_clear_error(o: &Output, words: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected an error: {err}");
    assert_eq!(o.status.code(), Some(1), "an error, not a crash or a usage message: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for w in words {
        assert!(lines[0].contains(w), "`{w}` in: {err}");
    }
}

/// A database of the Debian sample (505 documents) with the hash embedder.
fn sample_db(dir: &Path) -> String {
    let db = dir.join("db.duet");
    let sample = common::repo_root().join("fixtures/debian-sample.jsonl");
    let o = duetdb(&["ingest", db.to_str().unwrap(), sample.to_str().unwrap(), "--embedder", "hash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    db.to_str().unwrap().to_string()
}

#[test]
fn absurd_numbers_are_one_line_errors_that_name_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    let sample = common::repo_root().join("fixtures/debian-sample.jsonl");
    let sample = sample.to_str().unwrap();
    let fresh = dir.path().join("fresh.duet");
    let fresh = fresh.to_str().unwrap();
    assert_clear_error(&duetdb(&["ingest", fresh, sample, "--embedder", "hash", "--batch", "1000000000"]), &["--batch", "1000000000", "100000"]);
    assert_clear_error(&duetdb(&["ingest", fresh, sample, "--embedder", "hash", "--batch", "0"]), &["--batch", "is 0"]);
    assert!(!Path::new(fresh).exists(), "a refused ingest creates nothing");
    assert_clear_error(&duetdb(&["query", &db, "music", "-k", "1000000000"]), &["k (hits per query)", "10000"]);
    assert_clear_error(&duetdb(&["query", &db, "music", "-k", "18446744073709551615"]), &["k (hits per query)"]);
    assert_clear_error(&duetdb(&["query", &db, "music", "-k", "0"]), &["k (hits per query)", "is 0"]);
    assert_clear_error(&duetdb(&["query", &db, "music", "--ef", "1000000000"]), &["ef (the search beam)", "100000"]);
    assert_clear_error(&duetdb(&["query", &db, "music", "--mode", "hybrid", "--candidates", "1000000000"]), &["candidates"]);
    assert_clear_error(&duetdb(&["embed", "music", "--embedder", "hash:100000000"]), &["dimension", "65536"]);
    assert_clear_error(&duetdb(&["embed", "music", "--embedder", "hash:0"]), &["dimension", "is 0"]);
    assert_clear_error(&duetdb(&["reindex", &db, "--embedder", "hash:64", "--threads", "100000"]), &["threads", "100000"]);
    assert_clear_error(&duetdb(&["reindex", &db, "--embedder", "hash:64", "--batch", "0"]), &["batch size", "is 0"]);
    assert_clear_error(&duetdb(&["eval", sample, "--query-field", "text", "--doc-field", "text", "--embedder", "hash", "--limit", "0"]), &["--limit", "is 0"]);
    // Nothing above changed the database.
    let o = duetdb(&["stats", &db, "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["documents"], 505);
    assert!(st["reindex"].is_null(), "a refused reindex leaves no target: {st}");
}

#[test]
fn outputs_inside_a_database_are_refused_and_it_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    let root = Path::new(&db);
    let before = std::fs::read(root.join("COMMIT")).unwrap();
    for out in [root.join("COMMIT"), root.join("catalog/db"), root.join("new-file.jsonl")] {
        assert_clear_error(&duetdb(&["dump", &db, "--out", out.to_str().unwrap()]), &["--out", "inside the database"]);
    }
    assert_eq!(std::fs::read(root.join("COMMIT")).unwrap(), before);
    assert!(!root.join("new-file.jsonl").exists());
    assert_clear_error(&duetdb(&["backup", &db, root.join("inner").to_str().unwrap()]), &["backup destination", "inside the database"]);
    assert!(!root.join("inner").exists());
    let o = duetdb(&["check", &db]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // Outside, both work.
    let out = dir.path().join("dump.jsonl");
    assert!(duetdb(&["dump", &db, "--out", out.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 505);
}

#[test]
fn a_killed_backups_leftovers_are_removed_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    // What a backup killed mid-copy leaves: its temporary directory, named by its process,
    // which is gone (PID numbers above the kernel's maximum are never running).
    let stale = dir.path().join(".copy.creating-4194999");
    std::fs::create_dir_all(stale.join("catalog")).unwrap();
    std::fs::write(stale.join("catalog/db"), vec![7u8; 1 << 20]).unwrap();
    let o = duetdb(&["backup", &db, dir.path().join("copy").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists(), "the interrupted backup's directory is gone");
    assert!(stderr(&o).contains(".copy.creating-4194999"), "and named: {}", stderr(&o));
}

#[test]
fn the_json_users_have_is_ingested_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("debian.jsonl");
    // A BOM, CRLF line ends, fields beyond id/text/metadata, another shape by name.
    std::fs::write(
        &file,
        "\u{feff}{\"package\": \"mpc\", \"summary\": \"command-line MPD client\", \"description\": \"mpc is a client for the music player daemon\"}\r\n\
         {\"package\": \"ripgrep\", \"summary\": \"grep, faster\", \"description\": \"ripgrep searches directories for a regex\"}\r\n",
    )
    .unwrap();
    let db = dir.path().join("db.duet");
    let (db, file) = (db.to_str().unwrap(), file.to_str().unwrap());
    let o = duetdb(&["ingest", db, file, "--embedder", "hash", "--id-field", "package", "--text-field", "description"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = duetdb(&["get", db, "mpc", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["text"], "mpc is a client for the music player daemon");
    assert_eq!(d["metadata"], serde_json::json!({"summary": "command-line MPD client"}));
    // The usual shape with an extra field is accepted, the field kept as metadata.
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(&plain, "{\"id\": \"a\", \"text\": \"alpha\", \"lang\": \"en\"}\n{\"id\": 7, \"text\": \"seven\"}\n").unwrap();
    let o = duetdb(&["ingest", db, plain.to_str().unwrap()]);
    assert_clear_error(&o, &["line 2", "`id`", "number 7"]);
    let o = duetdb(&["ingest", db, plain.to_str().unwrap(), "--numeric-ids", "--ignore-extra"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_slice(&duetdb(&["get", db, "7", "--json"]).stdout).unwrap();
    assert_eq!(d["text"], "seven");
    let d: serde_json::Value = serde_json::from_slice(&duetdb(&["get", db, "a", "--json"]).stdout).unwrap();
    assert!(d["metadata"].is_null(), "--ignore-extra keeps only `metadata`: {d}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    // A missing full-text index is derived state: rebuilt with a warning on open.
    std::fs::remove_dir_all(Path::new(&db).join("fulltext")).unwrap();
    let o = duetdb(&["stats", &db]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("WARN") && !err.contains('\u{1b}'), "{err:?}");
}
