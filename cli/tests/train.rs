//! Training on real SmolLM2 weights (run `scripts/fetch-models.sh` first) with the small
//! Debian sample in fixtures/: exact resume after a SIGKILL, a frozen M, the cached suffix
//! path against the full forward, checkpoints that reproduce their vectors.

mod common;

use candle_core::{Device, Tensor, Var};
use duetdb::embed::decoder::{max_abs_diff, Kernels};
use duetdb::embed::prompt::{Placement, Pooling, PromptConfig, PromptEmbedder};
use duetdb::embed::{Embedder, Kind};
use duetdb::train::{Mode, Trainer};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn duetdb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duetdb"))
}

fn steps_logged(out: &Path) -> usize {
    std::fs::read_to_string(out.join("train/log.jsonl")).map_or(0, |t| t.lines().count())
}

#[test]
fn resume_after_sigkill_gives_bit_identical_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let st = duetdb().args(common::tiny_run_args("train", 5)).arg("--out").arg(&whole).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(st.success());

    // The same run, killed (SIGKILL) once two steps are logged: the kill may land in the
    // middle of a step or of a save.
    let mut child = duetdb().args(common::tiny_run_args("train", 5)).arg("--out").arg(&killed).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while steps_logged(&killed) < 2 && t.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = steps_logged(&killed);
    assert!((2..5).contains(&logged), "killed after {logged} steps, expected a run cut short");
    let st = duetdb().args(["train", "--resume", "--out"]).arg(&killed).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(st.success());

    assert_eq!(common::train_state_bytes(&whole), common::train_state_bytes(&killed), "parameters and optimiser state differ after the resume");
    let log = |d: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(d.join("train/log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
            })
            .collect()
    };
    assert_eq!(log(&whole), log(&killed), "the resumed log reads as one run with the same losses");
    assert_eq!(log(&whole).len(), 5);
}

#[test]
fn training_changes_the_embedder_leaves_m_alone_and_the_checkpoint_reproduces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut t = Trainer::create(common::tiny_run(Mode::Prompt, 3), &out).unwrap();
    let texts = ["regex search in files", "a console music player for mp3 files"];
    let before = t.embedder().embed(&texts, Kind::Query).unwrap();
    let m_before = t.embedder().embedding_model().weights_digest().unwrap();
    let summary = t.run(&mut |_| {}).unwrap();
    assert_eq!(summary.steps, 3);
    assert_eq!(t.embedder().embedding_model().weights_digest().unwrap(), m_before, "M's weights changed");
    let after = t.embedder().embed(&texts, Kind::Query).unwrap();
    let moved = before[0].iter().zip(&after[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-4, "three steps did not change the embedding ({moved})");

    // The run directory is a checkpoint: it loads, with a new fingerprint, and gives the
    // trained vectors.
    let loaded = PromptEmbedder::load(&out).unwrap();
    assert_ne!(loaded.fingerprint(), PromptEmbedder::new(Mode::Prompt.embedder_config(8), &Device::Cpu).unwrap().fingerprint());
    let again = loaded.embed(&texts, Kind::Query).unwrap();
    for (a, b) in after.iter().zip(&again) {
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d < 1e-6, "the loaded checkpoint's vectors differ by {d}");
    }
    let spec = duetdb::embed::from_spec(out.to_str().unwrap()).unwrap();
    assert_eq!(spec.fingerprint(), loaded.fingerprint());
}

#[test]
fn lora_baseline_trains_m_adapters_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Trainer::create(common::tiny_run(Mode::LoraM, 1), &tmp.path().join("run")).unwrap();
    let m_before = t.embedder().embedding_model().weights_digest().unwrap();
    let align = t.embedder().alignment().0.to_vec2::<f32>().unwrap();
    t.run(&mut |_| {}).unwrap();
    assert_eq!(t.embedder().embedding_model().weights_digest().unwrap(), m_before, "M's own weights changed");
    assert_eq!(t.embedder().alignment().0.to_vec2::<f32>().unwrap(), align, "the baseline has no alignment to train");
    let b_moved = t
        .embedder()
        .embedding_lora()
        .unwrap()
        .tensors()
        .iter()
        .filter(|(n, _)| n.ends_with("lora_b"))
        .any(|(_, x)| x.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    assert!(b_moved, "M's adapters (B starts at 0) did not move");
}

#[test]
fn cached_suffix_path_matches_the_full_forward_and_its_gradients() {
    let cfg = PromptConfig { placement: Placement::Suffix, pooling: Pooling::MeanSoft, ..Mode::Prompt.embedder_config(8) };
    let e = PromptEmbedder::new(cfg, &Device::Cpu).unwrap();
    let ids: Vec<Vec<u32>> =
        ["ripgrep searches files", "x", "the GNU compiler collection front end for C"].iter().map(|t| e.tokenize(t, 64).unwrap()).collect();
    let grads_of = |full: bool| -> (Tensor, Vec<Tensor>) {
        let soft = e.soft_prompts(&["Instruct: Represent this document for retrieval\n".to_string()], Kernels::Differentiable).unwrap();
        let soft = soft.repeat((ids.len(), 1, 1)).unwrap();
        let v =
            if full { e.embed_batch(&ids, Some(&soft), Kernels::Differentiable) } else { e.embed_batch_suffix(&ids, &soft, Kernels::Differentiable) }.unwrap();
        // A loss that weighs every component differently.
        let w = Tensor::arange(0f32, v.elem_count() as f32, &Device::Cpu).unwrap().reshape(v.shape()).unwrap().sin().unwrap();
        let g = (&v * w).unwrap().sum_all().unwrap().backward().unwrap();
        let params: Vec<Var> = e.parameters().unwrap().into_iter().filter(|(n, _)| n.starts_with("align.") || n.ends_with("lora_b")).map(|(_, v)| v).collect();
        (v, params.iter().map(|p| g.get(p.as_tensor()).expect("a gradient for every trained parameter").clone()).collect())
    };
    let (full, gf) = grads_of(true);
    let (cached, gc) = grads_of(false);
    let d = max_abs_diff(&full, &cached).unwrap();
    assert!(d < 1e-5, "embeddings differ by {d}");
    for (a, b) in gf.iter().zip(&gc) {
        let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let d = max_abs_diff(a, b).unwrap();
        assert!(d <= 1e-3 * scale.max(1e-6), "gradients differ by {d} (largest {scale})");
    }
}

#[test]
fn bad_training_input_is_an_error_that_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = common::tiny_run(Mode::Prompt, 1);
    c.query_field = "nope".into();
    let err = Trainer::create(c, &tmp.path().join("a")).err().expect("no pairs").to_string();
    assert!(err.contains("nope"), "{err}");
    let mut c = common::tiny_run(Mode::Prompt, 1);
    c.batch = 1;
    assert!(Trainer::create(c, &tmp.path().join("b")).is_err(), "one query a batch has no in-batch negative");
    Trainer::create(common::tiny_run(Mode::Prompt, 1), &tmp.path().join("c")).unwrap();
    let err = Trainer::create(common::tiny_run(Mode::Prompt, 1), &tmp.path().join("c")).err().expect("a second run in one directory").to_string();
    assert!(err.contains("already holds a training run"), "{err}");
    assert!(Trainer::resume(&tmp.path().join("none")).is_err());
    let cfg = PromptConfig { placement: Placement::Suffix, pooling: Pooling::MeanText, ..PromptConfig::default() };
    let err = PromptEmbedder::new(cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("never lets the text see them"), "{err}");
}

#[test]
fn evaluate_only_measures_the_saved_state_without_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let fixture = common::train_fixture();
    // The tiny run without evaluations, made to evaluate at its last step.
    let mut args = common::tiny_run_args("train", 2);
    let at = args.iter().position(|a| a == "--eval-every").unwrap();
    args[at + 1] = "2".into();
    let st = duetdb()
        .args(args)
        .arg("--dev")
        .arg(&fixture)
        .args(["--eval-size", "8", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let log = std::fs::read_to_string(out.join("train/log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let in_run = last["dev_mrr10"].as_f64().expect("step 2 is an evaluation point");

    let o = duetdb().args(["train", "--resume", "--evaluate-only", "--json", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["step"], 2);
    let again = v["dev_mrr10"].as_f64().unwrap();
    assert!((again - in_run).abs() < 1e-9, "the saved state measures {again}, the run measured {in_run}");
    assert_eq!(steps_logged(&out), 2, "evaluating trained a step");

    // Without --resume there is no saved state to measure: clap refuses it.
    let o = duetdb().args(["train", "--evaluate-only", "--out"]).arg(&out).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

#[test]
fn gradient_caching_gives_the_whole_batch_gradients() {
    // Slices of 3 texts: neither side (4 queries, 8 documents) divides evenly, so the
    // last slice is short. LoRA on M (M's whole pass differentiated) and the prompt mode
    // (the constant soft prompt's graph shared by every slice).
    for mode in [Mode::LoraM, Mode::Prompt] {
        let tmp = tempfile::tempdir().unwrap();
        let whole = Trainer::create(common::tiny_run(mode, 1), &tmp.path().join("whole")).unwrap();
        let mut cfg = common::tiny_run(mode, 1);
        cfg.grad_cache = Some(3);
        let cached = Trainer::create(cfg, &tmp.path().join("cached")).unwrap();
        for i in 0..2 {
            let (lw, gw) = whole.gradients(i).unwrap();
            let (lc, gc) = cached.gradients(i).unwrap();
            assert!((lw - lc).abs() < 1e-5, "{mode:?}: losses {lw} and {lc}");
            assert!(!gw.is_empty() && gw.len() == gc.len(), "{mode:?}: {} and {} gradients", gw.len(), gc.len());
            for (name, a) in &gw {
                let b = &gc[name];
                let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let d = max_abs_diff(a, b).unwrap();
                assert!(scale > 0.0 || name.ends_with("lora_a"), "{mode:?}: {name} has a zero gradient");
                assert!(d <= 1e-3 * scale.max(1e-6), "{mode:?}: {name}'s gradients differ by {d} (largest {scale})");
            }
        }
    }
    let mut cfg = common::tiny_run(Mode::LoraM, 1);
    cfg.grad_cache = Some(0);
    let err = Trainer::create(cfg, &tempfile::tempdir().unwrap().path().join("run")).err().unwrap().to_string();
    assert!(err.contains("grad-cache"), "{err}");
}

#[test]
fn a_resume_may_evaluate_more_often_without_changing_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let fixture = common::train_fixture();
    let run = |extra: &[&str]| {
        let st = duetdb().args(extra).arg("--out").arg(&out).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
        assert!(st.success(), "{extra:?}");
    };
    let mut first: Vec<String> = common::tiny_run_args("train", 3);
    first.extend(["--dev".into(), fixture.display().to_string(), "--eval-size".into(), "8".into(), "--stop-at".into(), "1".into()]);
    run(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let config = std::fs::read(out.join("train/config.json")).unwrap();
    run(&["train", "--resume", "--eval-every", "1", "--stop-at", "2"]);
    run(&["train", "--resume"]);
    let evaluated: Vec<(u64, bool)> = std::fs::read_to_string(out.join("train/log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["step"].as_u64().unwrap(), v.get("dev_mrr10").is_some()))
        .collect();
    // Step 1 ran with the saved setting (none before the end), step 2 with the override,
    // step 3 is the end.
    assert_eq!(evaluated, vec![(1, false), (2, true), (3, true)]);
    assert_eq!(std::fs::read(out.join("train/config.json")).unwrap(), config, "the override was saved into the run's settings");
}
