//! Helpers shared by the CLI's integration tests: the library's test helpers, and
//! those that run the `duetdb` binary (which only this crate builds).
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod shared;
pub use shared::*;

use std::path::PathBuf;

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
    run_killed_after_env(args, after, &[])
}

/// [`run_killed_after`] with these environment variables set for the child.
pub fn run_killed_after_env(args: &[&str], after: std::time::Duration, env: &[(&str, &str)]) -> KilledRun {
    use std::io::{BufRead, Read};
    use std::sync::{Arc, Mutex};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duetdb"))
        .args(args)
        .envs(env.iter().copied())
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

/// A training run's newest saved state, byte for byte: alignment, P's adapters and the
/// optimiser moments.
pub fn train_state_bytes(out: &std::path::Path) -> Vec<Vec<u8>> {
    let latest = std::fs::read_to_string(out.join("train/latest")).unwrap();
    let dir = out.join("train").join(latest.trim());
    ["alignment.safetensors", "prompting_lora.safetensors", "optimizer.safetensors"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

/// The small train split sample in fixtures/.
pub fn train_fixture() -> PathBuf {
    repo_root().join("fixtures/train-pairs.jsonl")
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
    [
        command,
        "--data",
        &f,
        "--group-field",
        "source",
        "--steps",
        &s,
        "--batch",
        "4",
        "--max-doc-tokens",
        "16",
        "--max-query-tokens",
        "16",
        "--eval-every",
        "0",
        "--save-every",
        "1",
        "--warmup",
        "2",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}
