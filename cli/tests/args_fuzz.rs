//! A seeded fuzz of the command line's numbers and paths: for every subcommand that takes
//! one, a generator draws ordinary and absurd values (0, huge, negative, `NaN`, text,
//! paths inside a database, missing paths) and runs the release binary with them. Each
//! run must end on its own within a time bound and under a memory bound, in success or
//! in an error, never a panic (exit 101), an abort or a signal.
//!
//! `DUETDB_FUZZ_RUNS` sets the number of runs (default 60), `DUETDB_FUZZ_SEED` the seed.
//! Models stay out of it (the `hash` embedder), as do numbers that would start real
//! training: `train` and `transfer` get values of which at least one is out of range.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Each run must end within this.
const TIME_BOUND: Duration = Duration::from_secs(30);
/// And stay under this much address space (a bounded process fails an allocation past it
/// cleanly or aborts, which the test reports).
const MEMORY_BOUND: u64 = 6 << 30;

const COUNTS: &[&str] = &["0", "1", "2", "3", "64", "1000", "65536", "100001", "1000000000", "4294967296", "18446744073709551615", "-1", "abc", ""];
const FLOATS: &[&str] = &["0", "0.5", "1", "-1", "1e308", "-1e308", "NaN", "inf", "-inf", "x"];

struct Gen(fastrand::Rng);

impl Gen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.0.usize(..xs.len())]
    }
}

fn run(args: &[String]) -> (Option<i32>, String, Duration) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_duetdb"));
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: MEMORY_BOUND, rlim_max: MEMORY_BOUND };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > TIME_BOUND {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = reader.join().unwrap();
    (status.and_then(|s| s.code()), err, start.elapsed())
}

#[test]
fn no_number_or_path_crashes_hangs_or_exhausts_memory() {
    let runs: usize = std::env::var("DUETDB_FUZZ_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("DUETDB_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261204);
    let mut g = Gen(fastrand::Rng::with_seed(seed));
    let dir = tempfile::tempdir().unwrap();
    let sample = common::repo_root().join("fixtures/debian-sample.jsonl");
    let pairs = common::repo_root().join("fixtures/train-pairs.jsonl");
    let db = dir.path().join("db.duet");
    let (sample, pairs, dbs) = (sample.to_str().unwrap().to_string(), pairs.to_str().unwrap().to_string(), db.to_str().unwrap().to_string());
    let (code, err, _) = run(&["ingest".into(), dbs.clone(), sample.clone(), "--embedder".into(), "hash".into()]);
    assert_eq!(code, Some(0), "{err}");
    let paths: Vec<String> = [
        db.clone(),
        db.join("COMMIT"),
        db.join("catalog/db"),
        db.join("inner"),
        db.join("vectors"),
        dir.path().join("missing/deeper"),
        dir.path().join("out.jsonl"),
        "/dev/null".into(),
        "".into(),
    ]
    .iter()
    .map(|p| p.to_str().unwrap().to_string())
    .collect();
    let mut worst = Duration::ZERO;
    let mut by_code = [0usize; 3];
    for i in 0..runs {
        let n = |g: &mut Gen| g.pick(COUNTS).to_string();
        let f = |g: &mut Gen| g.pick(FLOATS).to_string();
        let p = |g: &mut Gen| paths[g.0.usize(..paths.len())].clone();
        let s = |x: &str| x.to_string();
        // A scratch copy for the commands that write.
        let scratch = dir.path().join(format!("scratch-{i}"));
        let _ = std::fs::remove_dir_all(&scratch);
        common::copy_dir(&db, &scratch);
        let scratch = scratch.to_str().unwrap().to_string();
        let args: Vec<String> = match g.0.usize(..11) {
            0 => vec![s("ingest"), scratch, sample.clone(), s("--batch"), n(&mut g)],
            1 => vec![s("query"), dbs.clone(), s("music player"), s("-k"), n(&mut g), s("--ef"), n(&mut g)],
            2 => vec![
                s("query"),
                dbs.clone(),
                s("music"),
                s("--mode"),
                s("hybrid"),
                s("--candidates"),
                n(&mut g),
                s("--rrf-k"),
                f(&mut g),
                s("--vector-weight"),
                f(&mut g),
                s("--text-weight"),
                f(&mut g),
                s("--fusion"),
                s(g.pick(&["rrf", "weighted"])),
            ],
            3 => vec![s("embed"), s("music player"), s("--embedder"), format!("hash:{}", n(&mut g))],
            4 => vec![s("reindex"), scratch, s("--embedder"), format!("hash:{}", n(&mut g)), s("--batch"), n(&mut g), s("--threads"), n(&mut g)],
            5 => {
                vec![s("eval"), sample.clone(), s("--query-field"), s("text"), s("--doc-field"), s("text"), s("--embedder"), s("hash"), s("--limit"), n(&mut g)]
            }
            6 => vec![s("dump"), dbs.clone(), s("--out"), p(&mut g)],
            7 => vec![s("backup"), dbs.clone(), p(&mut g)],
            8 => vec![s(g.pick(&["check", "stats", "gc"])), p(&mut g)],
            9 => vec![s("get"), p(&mut g), s("mpc")],
            _ => {
                // At least one training number out of range, so that nothing trains.
                let mut a = vec![
                    s("train"),
                    s("--data"),
                    pairs.clone(),
                    s("--query-field"),
                    s("summary"),
                    s("--doc-field"),
                    s("description"),
                    s("--out"),
                    dir.path().join(format!("run-{i}")).to_str().unwrap().to_string(),
                ];
                let bad = [("--steps", "0"), ("--batch", "1"), ("--accum", "0"), ("--lr", "NaN"), ("--max-doc-tokens", "0"), ("--temperature", "-1")];
                let (flag, v) = bad[g.0.usize(..bad.len())];
                a.extend([s(flag), s(v)]);
                for flag in ["--steps", "--batch", "--eval-size", "--hard-negatives"] {
                    if g.0.bool() {
                        a.extend([s(flag), n(&mut g)]);
                    }
                }
                a
            }
        };
        let (code, err, took) = run(&args);
        worst = worst.max(took);
        let shown = format!("run {i} (seed {seed}): duetdb {}", args.join(" "));
        let code = code.unwrap_or_else(|| panic!("{shown}: killed after {TIME_BOUND:?} or by a signal\n{err}"));
        assert!(matches!(code, 0..=2), "{shown}: exit {code}\n{err}");
        by_code[code as usize] += 1;
        assert!(!err.contains("panicked") && !err.contains("internal error") && !err.contains("memory allocation"), "{shown}\n{err}");
        if code != 0 {
            assert!(err.contains("error"), "{shown}: a failure says so\n{err}");
        }
    }
    // The database the reading commands ran on is still whole.
    let (code, err, _) = run(&["check".into(), dbs]);
    assert_eq!(code, Some(0), "{err}");
    println!("{runs} runs (seed {seed}): {} succeeded, {} were errors, {} usage errors; the slowest took {worst:?}", by_code[0], by_code[1], by_code[2]);
    // The draw must reach past argument parsing: most runs get to the library.
    assert!(by_code[0] + by_code[1] > runs / 2, "{by_code:?}");
}
