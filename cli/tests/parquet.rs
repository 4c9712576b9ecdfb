//! `duetdb export` and `duetdb import`: a round trip gives the same documents, metadata
//! and vectors bit for bit; an import refuses vectors of another embedder unless told to
//! re-embed; bad files and bad places are one-line errors.

mod common;

use duetdb::{Db, Document};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn duetdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_duetdb")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = duetdb(args);
    assert!(o.status.success(), "duetdb {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The error line of a command that must fail.
fn fails(args: &[&str]) -> String {
    let o = duetdb(args);
    assert!(!o.status.success(), "duetdb {args:?} succeeded");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

/// Every live document with its vector's bits, by id.
fn contents(path: &Path) -> BTreeMap<String, (Document, Vec<u32>)> {
    let db = Db::options().create_if_missing(false).open(path).unwrap();
    db.export(None).unwrap().map(|r| r.unwrap()).map(|(d, v)| (d.id.clone(), (d, v.iter().map(|x| x.to_bits()).collect()))).collect()
}

fn sample_db(dir: &Path, spec: &str) -> String {
    let db = dir.join("src").to_str().unwrap().to_string();
    let sample = common::repo_root().join("fixtures/debian-sample.jsonl");
    ok(&["ingest", &db, sample.to_str().unwrap(), "--embedder", spec]);
    // Updates and deletes, so that rows and live documents differ.
    let d = Db::options().create_if_missing(false).open(&db).unwrap();
    d.ingest([Document::new("extra", "a document added later").with_metadata(serde_json::json!({"n": 1.5, "tags": ["x", "y"]}))]).unwrap();
    let first: Vec<String> = d.export(None).unwrap().take(3).map(|r| r.unwrap().0.id).collect();
    d.ingest([Document::new(first[0].clone(), "a replaced text")]).unwrap();
    d.delete(&[first[1].clone()]).unwrap();
    d.close().unwrap();
    db
}

#[test]
fn export_then_import_is_bit_exact_for_both_vector_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_db(dir.path(), "hash");
    let want = contents(Path::new(&src));
    assert_eq!(want.len(), 505);
    for (name, extra) in [("fixed", None), ("list", Some("--list-vectors"))] {
        let file = dir.path().join(format!("{name}.parquet"));
        let mut args = vec!["export", &src, "--out", file.to_str().unwrap()];
        args.extend(extra);
        ok(&args);
        let dest = dir.path().join(format!("dest-{name}"));
        // A new database takes the embedder the file names.
        let out = ok(&["import", dest.to_str().unwrap(), file.to_str().unwrap(), "--json"]);
        assert!(out.contains("\"imported\":505"), "{out}");
        assert_eq!(contents(&dest), want, "{name}: documents, metadata or vector bits differ");
        // Again: every document is unchanged, nothing is written twice.
        let out = ok(&["import", dest.to_str().unwrap(), file.to_str().unwrap(), "--json"]);
        assert!(out.contains("\"written\":0"), "{out}");
    }
}

#[test]
fn import_refuses_another_embedders_vectors_unless_reembedding() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_db(dir.path(), "hash");
    let file = dir.path().join("x.parquet");
    ok(&["export", &src, "--out", file.to_str().unwrap()]);
    let other = dir.path().join("other");
    ok(&["import", other.to_str().unwrap(), file.to_str().unwrap(), "--reembed", "--embedder", "hash:64"]);
    let err = fails(&["import", other.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(err.contains("--reembed") && err.contains("384 dimensions") && err.contains("64 dimensions"), "{err}");
    let db = Db::options().create_if_missing(false).open(&other).unwrap();
    assert_eq!(db.len(), 505);
    assert_eq!(db.dimension(), 64);
    let e = duetdb::embed::from_spec("hash:64").unwrap();
    let d = db.export(None).unwrap().next().unwrap().unwrap();
    let mut want = e.embed(&[&d.0.text], duetdb::Kind::Passage).unwrap().pop().unwrap();
    duetdb::embed::normalize(&mut want);
    let diff = d.1.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-6, "not re-embedded with the database's embedder: differs by {diff}");
}

#[test]
fn export_of_a_kept_generation_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_db(dir.path(), "hash:32");
    let before = contents(Path::new(&src));
    ok(&["reindex", &src, "--embedder", "hash:48"]);
    let file = dir.path().join("g.parquet");
    let out = ok(&["export", &src, "--out", file.to_str().unwrap(), "--generation", "1", "--json"]);
    assert!(out.contains("\"dim\":32"), "{out}");
    let dest = dir.path().join("g1");
    ok(&["import", dest.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(contents(&dest), before, "the kept generation's vectors");

    let err = fails(&["export", &src, "--out", file.to_str().unwrap(), "--generation", "7"]);
    assert!(err.contains("no generation 7") && err.contains("kept: 1"), "{err}");
    let inside = Path::new(&src).join("x.parquet");
    let err = fails(&["export", &src, "--out", inside.to_str().unwrap()]);
    assert!(err.contains("inside"), "{err}");
    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"PAR1 this is not a parquet file").unwrap();
    let err = fails(&["import", dest.to_str().unwrap(), junk.to_str().unwrap()]);
    assert!(err.contains("junk.parquet"), "{err}");
    let err = fails(&["import", dest.to_str().unwrap(), dir.path().join("missing.parquet").to_str().unwrap()]);
    assert!(err.contains("missing.parquet"), "{err}");
}
