//! Helpers shared by the integration tests.
#![allow(dead_code)]

use duetdb::Document;
use std::path::PathBuf;

/// The Debian sample in fixtures/ as documents.
pub fn sample_docs() -> Vec<Document> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/debian-sample.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Document>(l).unwrap())
        .collect()
}

/// A fresh temporary directory and a database path inside it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("test.duet");
    (dir, p)
}
