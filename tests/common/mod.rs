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

/// What [`run_killed_after`] saw of a child process.
pub struct KilledRun {
    /// Its standard output, line by line, up to its end.
    pub lines: Vec<String>,
    /// Whether it was SIGKILLed (false: it exited on its own first).
    pub killed: bool,
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Its standard error.
    pub stderr: String,
}

/// Runs the `duetdb` binary with `args` and SIGKILLs it after `after` unless it exits
/// on its own first; returns what it printed.
pub fn run_killed_after(args: &[&str], after: std::time::Duration) -> KilledRun {
    use std::io::{BufRead, Read};
    use std::sync::{Arc, Mutex};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duetdb"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (out, lines) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || std::io::BufReader::new(out).lines().map_while(Result::ok).for_each(|l| lines.lock().unwrap().push(l)))
    };
    let deadline = std::time::Instant::now() + after;
    let mut exited = false;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    if !exited {
        child.kill().unwrap(); // SIGKILL
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let lines = lines.lock().unwrap().clone();
    KilledRun { lines, killed: !exited, status, stderr }
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

/// A training run's newest saved state, byte for byte: alignment, P's adapters and the
/// optimiser moments.
pub fn train_state_bytes(out: &std::path::Path) -> Vec<Vec<u8>> {
    let latest = std::fs::read_to_string(out.join("train/latest")).unwrap();
    let dir = out.join("train").join(latest.trim());
    ["alignment.safetensors", "prompting_lora.safetensors", "optimizer.safetensors"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

/// The small train split sample in fixtures/.
pub fn train_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/train-pairs.jsonl")
}

/// A training run small enough for a test: 4 queries a step, texts cut to 16 tokens.
pub fn tiny_run(mode: duetdb::train::Mode, steps: u64) -> duetdb::train::TrainConfig {
    let mut c = duetdb::train::TrainConfig::new(train_fixture(), "summary", "description", mode);
    c.group_field = Some("source".into());
    c.steps = steps;
    c.batch = 4;
    c.max_doc_tokens = 16;
    c.max_query_tokens = 16;
    c.eval_every = 0;
    c.save_every = 1;
    c.optim.warmup = 2;
    c
}

/// The same run on the command line: `command` (`train` or `transfer`) and its flags.
pub fn tiny_run_args(command: &str, steps: u64) -> Vec<String> {
    let f = train_fixture().display().to_string();
    let s = steps.to_string();
    [command, "--data", &f, "--group-field", "source", "--steps", &s, "--batch", "4", "--max-doc-tokens", "16", "--max-query-tokens", "16", "--eval-every", "0", "--save-every", "1", "--warmup", "2"]
        .iter()
        .map(|x| x.to_string())
        .collect()
}
