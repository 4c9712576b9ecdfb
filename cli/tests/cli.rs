//! The `duetdb` binary: its JSON shapes are a contract for scripts.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn duetdb(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duetdb")).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = c.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    c.wait_with_output().unwrap()
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8(o.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ingest_query_get_delete_stats() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.duet");
    let db = db.to_str().unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/debian-sample.jsonl");
    let o = duetdb(&["ingest", db, sample, "--json", "--batch", "100", "--embedder", "hash"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 7, "6 batches and the summary");
    assert_eq!(lines[0]["committed"], 100);
    assert!(lines[0]["last_id"].is_string());
    assert_eq!(lines[6], serde_json::json!({"done": true, "committed": 505, "skipped": 0}));

    let o = duetdb(&["query", db, "music player daemon command line client", "-k", "3", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let hits = &json_lines(&o)[0]["hits"];
    assert_eq!(hits.as_array().unwrap().len(), 3);
    assert_eq!(hits[0]["id"], "mpc");
    for key in ["id", "score", "text", "metadata"] {
        assert!(hits[0].get(key).is_some(), "hit has {key}");
    }
    let o = duetdb(&["query", db, "music player", "-k", "5", "--filter", "source=mpc", "--json"], None);
    let hits = json_lines(&o)[0]["hits"].as_array().unwrap().clone();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["metadata"]["source"] == "mpc"));
    // --ef sets the graph's beam: one as wide as the corpus is an exact search, and a beam
    // narrower than -k is widened to it.
    for ef in ["1000", "1"] {
        let o = duetdb(&["query", db, "music player daemon command line client", "-k", "3", "--mode", "vector", "--ef", ef, "--json"], None);
        assert!(o.status.success(), "--ef {ef}: {}", stderr(&o));
        let hits = &json_lines(&o)[0]["hits"];
        assert_eq!(hits.as_array().unwrap().len(), 3, "--ef {ef}");
    }

    // --where: an expression over the metadata (the sample's `source` and `summary`).
    let o = duetdb(&["query", db, "music player", "-k", "20", "--where", "source in (mpc, mpqc) and not source = mpqc", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let hits = json_lines(&o)[0]["hits"].as_array().unwrap().clone();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["metadata"]["source"] == "mpc"), "{hits:?}");
    let o = duetdb(&["query", db, "music player", "--where", "source in (mpc", "--json"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).trim_end().lines().count() == 1 && stderr(&o).contains("position 15"), "{}", stderr(&o));

    let o = duetdb(&["get", db, "mpc", "--json"], None);
    assert_eq!(json_lines(&o)[0]["id"], "mpc");
    let o = duetdb(&["delete", db, "mpc", "nonexistent", "--json"], None);
    assert_eq!(json_lines(&o)[0]["deleted"], 1);
    let o = duetdb(&["get", db, "mpc"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no document with id `mpc`"));

    let o = duetdb(&["stats", db, "--json"], None);
    let st = &json_lines(&o)[0];
    assert_eq!(st["documents"], 504);
    assert_eq!(st["dimension"], 384);
    assert_eq!(st["tombstones"], 1);
    for key in ["embedder", "generation", "bytes_on_disk"] {
        assert!(st.get(key).is_some(), "stats has {key}");
    }
}

#[test]
fn bad_lines_are_named_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.duet");
    let db = db.to_str().unwrap();
    let mut input = Vec::new();
    input.extend_from_slice(b"{\"id\": \"a\", \"text\": \"alpha\"}\n");
    input.extend_from_slice(b"{\"id\": \"b\", \"text\": \"caf\xff\"}\n");
    input.extend_from_slice(b"{\"id\": \"c\", \"text\": \"\"}\n");
    input.extend_from_slice(b"not json\n\n");
    input.extend_from_slice(b"{\"id\": \"d\", \"text\": \"delta\", \"metadata\": {\"x\": 1}}\n");
    let o = duetdb(&["ingest", db, "-", "--json", "--embedder", "hash"], Some(&input));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("line 2") && err.contains("invalid UTF-8"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(!err.contains("panicked"));
    // documents before the bad line were committed and acknowledged
    assert_eq!(json_lines(&o).last().unwrap()["committed"], 1);

    // No --embedder: the database's recorded one is restored.
    let o = duetdb(&["ingest", db, "-", "--json", "--skip-bad"], Some(&input));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o).last().unwrap(), &serde_json::json!({"done": true, "committed": 2, "skipped": 3}));
    let err = stderr(&o);
    assert!(err.contains("line 3") && err.contains("empty text") && err.contains("line 4"), "{err}");
}

#[test]
fn errors_are_one_line_with_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let o = duetdb(&["query", missing.to_str().unwrap(), "x"], None);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim(), format!("error: no duetdb database at {}", missing.display()));
    let o = duetdb(&["stats", env!("CARGO_MANIFEST_DIR")], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a duetdb database"), "{}", stderr(&o));
    assert!(!missing.exists(), "read commands never create a database");
}

#[test]
fn embed_and_eval_json_shapes() {
    let o = duetdb(&["embed", "regex search", "music player", "--embedder", "hash", "--kind", "passage", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["dimension"], 384);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 384);
    assert!(v["embedder"].as_str().unwrap().starts_with("hash-v1"));
    let o = duetdb(&["embed", " ", "--embedder", "hash"], None);
    assert!(!o.status.success() && stderr(&o).contains("text 1 is empty"), "{}", stderr(&o));

    // The sample's summaries (in metadata) against their descriptions.
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.jsonl");
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/debian-sample.jsonl")).unwrap();
    let lines: Vec<String> = sample
        .lines()
        .map(|l| {
            let d: Value = serde_json::from_str(l).unwrap();
            serde_json::json!({"q": d["metadata"]["summary"], "d": d["text"]}).to_string()
        })
        .collect();
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let o = duetdb(&["eval", pairs.to_str().unwrap(), "--query-field", "q", "--doc-field", "d", "--embedder", "hash", "--limit", "200", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    assert_eq!(r["pairs"], 200);
    for k in ["mrr10", "ndcg10", "recall1", "recall10", "docs_per_s", "queries_per_s"] {
        assert!(r[k].as_f64().is_some(), "eval reports {k}");
    }
    let (mrr, r1, r10) = (r["mrr10"].as_f64().unwrap(), r["recall1"].as_f64().unwrap(), r["recall10"].as_f64().unwrap());
    assert!(r1 <= mrr && mrr <= r10 && r10 <= 1.0 && mrr > 0.3, "{r}");
    // Two sources: each on its own corpus, and their macro-average.
    let (a, b) = (dir.path().join("first.jsonl"), dir.path().join("second.jsonl"));
    std::fs::write(&a, lines[..150].join("\n")).unwrap();
    std::fs::write(&b, lines[150..400].join("\n")).unwrap();
    let o = duetdb(&["eval", a.to_str().unwrap(), b.to_str().unwrap(), "--query-field", "q", "--doc-field", "d", "--embedder", "hash", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    let (m1, m2) = (r["sources"]["first"]["mrr10"].as_f64().unwrap(), r["sources"]["second"]["mrr10"].as_f64().unwrap());
    assert_eq!((r["sources"]["first"]["pairs"].as_u64(), r["sources"]["second"]["pairs"].as_u64()), (Some(150), Some(250)));
    assert!((r["macro"]["mrr10"].as_f64().unwrap() - (m1 + m2) / 2.0).abs() < 1e-12, "{r}");
    let o = duetdb(&["eval", pairs.to_str().unwrap(), "--query-field", "nope", "--doc-field", "d", "--embedder", "hash"], None);
    assert!(!o.status.success() && stderr(&o).contains("`nope`"), "{}", stderr(&o));
}

#[test]
fn a_log_gets_plain_progress_lines_with_the_rate_and_time_left() {
    // stderr is a pipe here, as in a backgrounded run's log: no bar is drawn, but a line
    // comes every DUETDB_PROGRESS_EVERY seconds (30 by default; 0.01 here, with indicatif
    // redrawing at most about once a second, over an ingest of a few seconds).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.duet");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/debian-sample.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_duetdb"))
        .args(["ingest", db.to_str().unwrap(), sample, "--embedder", "hash", "--batch", "1"])
        .env("DUETDB_PROGRESS_EVERY", "0.01")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(" left)")).collect();
    assert!(!lines.is_empty(), "progress lines in the log: {err}");
    assert!(lines.iter().all(|l| l.contains("documents/s") && l.contains("/254.42 KiB")), "{err}");
    assert!(!err.contains('\x1b'), "no terminal codes in a log: {err:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("ingested 505 documents"));
    // The default interval keeps a short command's stderr as it was: empty on success.
    let o = Command::new(env!("CARGO_BIN_EXE_duetdb")).args(["ingest", db.to_str().unwrap(), sample, "--embedder", "hash"]).output().unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}
