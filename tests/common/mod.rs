//! Helpers shared by the integration tests.
#![allow(dead_code)]

use duetdb::Document;
use std::path::PathBuf;

/// The Debian sample in fixtures/ as documents.
pub fn sample_docs() -> Vec<Document> {
    let path = repo_root().join("fixtures/debian-sample.jsonl");
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str::<Document>(l).unwrap()).collect()
}

/// The repository's root (this file is shared by the library's and the CLI's tests, whose
/// manifests sit at different depths).
pub fn repo_root() -> PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().find(|p| p.join("fixtures").is_dir()).unwrap_or(here).to_path_buf()
}

/// A model file a test needs, looked up as the library looks it up (`$DUETDB_MODELS`,
/// `./models`, the fetch cache). When it is missing this says so on stderr, with the
/// command that fetches it, and returns `None`: the test then returns without checking
/// anything. Under CI (`CI` set) a missing model fails the test instead, because CI
/// fetches every model its tests use first: there, absence is a broken setup.
pub fn model(file: &str, fetch: &str) -> Option<PathBuf> {
    match duetdb::embed::model_path(file) {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(_) => {
            eprintln!("skipped: this test needs {file}; run scripts/fetch-models.sh {fetch}");
            None
        }
    }
}

/// The path of a model file, or return from the calling test after saying it is missing
/// (see [`model`]).
#[macro_export]
macro_rules! need_model {
    ($file:expr) => {
        need_model!($file, "")
    };
    ($file:expr, $fetch:expr) => {
        match common::model($file, $fetch) {
            Some(p) => p,
            None => return,
        }
    };
}

/// A fresh temporary directory and a database path inside it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("test.duet");
    (dir, p)
}

/// Asserts that next-token logits agree with a reference to 1e-3 of the largest logit
/// and that the best token decodes to `expect`; returns the largest difference.
pub fn assert_logits(ours: &candle_core::Tensor, reference: &candle_core::Tensor, tok: &duetdb::embed::tokenizer::TextTokenizer, expect: &str) -> f32 {
    use candle_core::D;
    let scale = reference.abs().unwrap().max(D::Minus1).unwrap().to_scalar::<f32>().unwrap();
    let diff = duetdb::embed::decoder::max_abs_diff(ours, reference).unwrap();
    println!("max |logit difference| {diff} (logits up to {scale})");
    assert!(diff < 1e-3 * scale.max(1.0), "logits differ by {diff}");
    let best = ours.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
    assert_eq!(tok.decode(&[best]).unwrap(), expect);
    diff
}

/// Opens (or creates) a database with the lexical `hash` embedder: the engine's tests
/// are about storage, not about the model.
pub fn open(path: &std::path::Path) -> duetdb::Result<duetdb::Db> {
    duetdb::Db::options().embedder_spec("hash").open(path)
}

/// Copies a directory tree (a database, to damage a copy of it).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}
