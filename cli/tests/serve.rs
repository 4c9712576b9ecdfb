//! `duetdb serve` against real clients: each test runs one check of
//! `serve_clients.py` (the `openai` Python client, curl, plain HTTP), which starts a real
//! server on 127.0.0.1, drives it and stops or kills it, every step bounded in time.
//! Needs python3 with `pip install -r cli/tests/requirements.txt` (`.ci/run` installs it).

mod common;

use std::process::Command;

fn check(name: &str) {
    let root = common::repo_root();
    let has_openai = Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    assert!(has_openai, "these tests drive the server with the openai Python client: pip install -r cli/tests/requirements.txt");
    let out = Command::new("python3")
        .arg(root.join("cli/tests/serve_clients.py"))
        .arg(env!("CARGO_BIN_EXE_duetdb"))
        .arg(root.join("fixtures"))
        .arg(name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(&format!("ok: {name}")),
        "serve check `{name}` failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openai_client_gets_the_cli_vectors_and_auth_errors() {
    check("openai");
}

#[test]
fn default_embedder_through_openai_client() {
    need_model!("gemma-3-270m-q4_k_m.gguf", "default");
    check("default-model");
}

#[test]
fn every_limit_and_key_error_has_status_and_one_line_reason() {
    check("limits");
}

#[test]
fn query_ingest_get_delete_and_a_clean_sigterm() {
    check("crud");
}

#[test]
fn sigterm_answers_the_ingests_in_flight_then_closes() {
    check("drain");
}

#[test]
fn kill_9_during_concurrent_ingests_loses_nothing_acknowledged() {
    check("kill");
}
