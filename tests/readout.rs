//! The readout (`embed::prompt::readout`) on real SmolLM2 weights (run
//! `scripts/fetch-models.sh` first): what it computes, how it is saved and loaded, and how
//! a checkpoint without its file fails.

use candle_core::{DType, Device, Tensor};
use duetdb::embed::decoder::max_abs_diff;
use duetdb::embed::prompt::{Placement, Pooling, PromptConfig, PromptEmbedder, Readout, ReadoutConfig, Reshape};
use duetdb::embed::{Embedder, Kind};

/// SmolLM2 prompting itself, soft tokens after the text pooled over them: the shape a
/// readout reads.
fn suffix_config() -> PromptConfig {
    PromptConfig { placement: Placement::Suffix, pooling: Pooling::MeanSoft, soft_tokens: 3, ..PromptConfig::default() }
}

const TEXTS: [&str; 3] = ["regex search tool", "x", "GNU C compiler: the GNU compiler collection front end for C, with the usual optimisers"];

fn vectors(e: &PromptEmbedder, kind: Kind) -> Tensor {
    let v = e.embed(&TEXTS, kind).unwrap();
    Tensor::new(v, &Device::Cpu).unwrap()
}

#[test]
fn an_identity_readout_of_the_last_block_gives_the_plain_vectors_and_a_trained_one_survives_a_save() {
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let plain = PromptEmbedder::new(suffix_config(), &Device::Cpu).unwrap();
    let depth = plain.embedding_model().config().layers;
    let one = ReadoutConfig { blocks: vec![depth], per_position: false };
    let identity = PromptEmbedder::new(PromptConfig { readout: Some(one), ..suffix_config() }, &Device::Cpu).unwrap();
    for kind in [Kind::Query, Kind::Passage] {
        let diff = max_abs_diff(&vectors(&plain, kind), &vectors(&identity, kind)).unwrap();
        assert!(diff < 1e-5, "{kind:?}: identity readout differs from the plain vectors by {diff}");
    }
    assert_ne!(plain.fingerprint(), identity.fingerprint(), "a readout is part of the function");

    // Two blocks, each position on its own, a random weight: its inputs are what the
    // trainer reads, and the vectors are those inputs through the weight.
    let rc = ReadoutConfig { blocks: vec![depth / 2, depth], per_position: true };
    let d = plain.dim();
    let inputs = plain.readout_inputs(&TEXTS, Kind::Passage, &rc).unwrap();
    assert_eq!(inputs.dims(), [3, rc.groups(3) * d]);
    let w = Tensor::randn(0f32, 0.05, (rc.groups(3) * d, d), &Device::Cpu).unwrap();
    let trained = PromptEmbedder::new(suffix_config(), &Device::Cpu).unwrap().with_readout(Readout::new(rc.clone(), w, 3, d).unwrap()).unwrap();
    let want = Readout::apply_with(&inputs, trained.readout().unwrap().weight()).unwrap();
    let got = vectors(&trained, Kind::Passage);
    let diff = max_abs_diff(&want, &got).unwrap();
    assert!(diff < 1e-5, "vectors differ from the readout of its inputs by {diff}");

    let dir = tempfile::tempdir().unwrap();
    trained.save(dir.path()).unwrap();
    let back = PromptEmbedder::load(dir.path()).unwrap();
    assert_eq!(back.fingerprint(), trained.fingerprint(), "saved in f16, the weight it was rounded to");
    assert_eq!(back.config().readout.as_ref(), Some(&rc));
    let diff = max_abs_diff(&got, &vectors(&back, Kind::Passage)).unwrap();
    assert!(diff < 1e-5, "reloaded readout embeds differently by {diff}");
    let stored = candle_core::safetensors::load(dir.path().join("readout.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(stored["weight"].dtype(), DType::F16);

    // A run that reshapes the checkpoint (prompt mode, more soft tokens) starts without it.
    let reshaped = PromptEmbedder::load_reshaped(dir.path(), Reshape { soft_tokens: Some(4), ..Reshape::default() }).unwrap();
    assert!(reshaped.readout().is_none() && reshaped.config().readout.is_none());

    std::fs::remove_file(dir.path().join("readout.safetensors")).unwrap();
    let err = PromptEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("readout.safetensors") && err.contains("missing"), "{err}");
}

#[test]
fn a_readout_needs_soft_tokens_after_the_text_and_blocks_the_model_has() {
    let prefix = PromptConfig { readout: Some(ReadoutConfig { blocks: vec![1], per_position: false }), ..PromptConfig::default() };
    let err = PromptEmbedder::new(prefix, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("a readout needs soft tokens after the text"), "{err}");
    let deep = PromptConfig { readout: Some(ReadoutConfig { blocks: vec![99], per_position: false }), ..suffix_config() };
    let err = PromptEmbedder::new(deep, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("reads block 99"), "{err}");
}

/// A readout run's fixture: a saved untrained checkpoint (in the returned directory, the
/// settings' `from`), its depth, a readout over its middle and last blocks, and readout settings
/// over `fixtures/train-pairs.jsonl` (f32 kernels, so that runs repeat exactly).
fn readout_run_setup() -> (tempfile::TempDir, usize, ReadoutConfig, duetdb::train::TrainConfig) {
    use duetdb::train::{Mode, TrainConfig};
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let root = tempfile::tempdir().unwrap();
    let from = root.path().join("from");
    PromptEmbedder::new(suffix_config(), &Device::Cpu).unwrap().save(&from).unwrap();
    let depth = PromptEmbedder::load(&from).unwrap().embedding_model().config().layers;
    let rc = ReadoutConfig { blocks: vec![depth / 2, depth], per_position: false };
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/train-pairs.jsonl");
    let mut cfg = TrainConfig::new(&data, "summary", "description", Mode::Readout);
    cfg.from = Some(from);
    (root, depth, rc, cfg)
}

/// `train --mode readout` over a saved checkpoint: a run on more pairs takes the rows an
/// earlier run computed (bit for bit) and embeds only the texts that run lacked; hard
/// negatives mined in the cached space train to a checkpoint that loads.
#[test]
fn a_larger_readout_run_reuses_the_inputs_of_a_smaller_one() {
    use duetdb::train::{train_readout, ReadoutRun};
    let (root, depth, rc, mut cfg) = readout_run_setup();
    (cfg.group_field, cfg.steps, cfg.batch, cfg.hard_negatives, cfg.eval_every) = (Some("source".into()), 3, 4, 2, 0);
    let run = |per: usize, inputs_from: Option<std::path::PathBuf>, out: &std::path::Path| {
        let mut computed = std::collections::BTreeMap::new();
        let r = ReadoutRun { readout: rc.clone(), pairs_per_source: Some(per), inputs_from };
        let s = train_readout(
            cfg.clone(),
            out,
            r,
            &mut |what, _, total| {
                computed.insert(what.to_string(), total);
            },
            &mut |l| assert!(l.loss.is_finite()),
        )
        .unwrap();
        assert_eq!(s.steps, 3);
        computed
    };
    let (small, large) = (root.path().join("small"), root.path().join("large"));
    let first = run(6, None, &small);
    assert!(first.get("train-queries").is_some_and(|&n| (1..=6).contains(&n)), "each distinct text once: {first:?}");
    let second = run(10, Some(small.clone()), &large);
    assert!(second.get("train-queries").is_some_and(|&n| (1..=4).contains(&n)), "only texts the first run lacked: {second:?}");
    let rows = |dir: &std::path::Path, n: usize| {
        let t = candle_core::safetensors::load(dir.join("train/inputs-train-queries.safetensors"), &Device::Cpu).unwrap();
        t["inputs"].narrow(0, 0, n).unwrap()
    };
    assert_eq!(max_abs_diff(&rows(&small, 6), &rows(&large, 6)).unwrap(), 0.0, "a larger cap draws a superset, rows reused as they were");
    let trained = PromptEmbedder::load(&large).unwrap();
    assert_eq!(trained.config().readout.as_ref(), Some(&rc));
    let other = ReadoutRun { readout: ReadoutConfig { blocks: vec![depth], per_position: false }, pairs_per_source: Some(6), inputs_from: Some(small) };
    let err = train_readout(cfg, &root.path().join("other"), other, &mut |_, _, _| {}, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("another checkpoint or readout shape"), "{err}");
}

/// `--average-last N` saves the mean of the last N steps' weights: at a constant rate, a
/// 3-step run averaging its last 2 steps holds the mean of a 2-step and a 3-step run's
/// readouts (the steps are the same), and its log ends with the mean's own line.
#[test]
fn averaging_the_last_steps_saves_the_mean_of_their_weights() {
    use duetdb::train::{train_readout, ReadoutRun};
    let (root, _, rc, mut cfg) = readout_run_setup();
    (cfg.group_field, cfg.batch, cfg.hard_negatives, cfg.eval_every) = (Some("source".into()), 4, 0, 0);
    (cfg.optim.warmup, cfg.optim.min_ratio, cfg.optim.lr) = (0, 1.0, 0.05);
    let first = root.path().join("steps-2");
    let run = |steps: u64, average_last: usize, out: &std::path::Path| {
        let mut c = cfg.clone();
        (c.steps, c.average_last) = (steps, average_last);
        let inputs_from = (out != first).then(|| first.clone());
        let r = ReadoutRun { readout: rc.clone(), pairs_per_source: Some(8), inputs_from };
        let mut lines = Vec::new();
        train_readout(c, out, r, &mut |_, _, _| {}, &mut |l| lines.push(l.clone())).unwrap();
        let w = PromptEmbedder::load(out).unwrap().readout().unwrap().weight().clone();
        (w, lines)
    };
    let (w2, _) = run(2, 0, &first);
    let (w3, plain) = run(3, 0, &root.path().join("steps-3"));
    let (mean, lines) = run(3, 2, &root.path().join("mean-2"));
    assert!(plain.iter().all(|l| !l.averaged));
    assert_eq!(lines.len(), 4, "three steps and the mean's line");
    assert!(lines[3].averaged && lines[3].step == 3 && !lines[2].averaged);
    let expected = ((&w2 + &w3).unwrap() / 2.0).unwrap();
    let moved = max_abs_diff(&w2, &w3).unwrap();
    assert!(moved > 1e-3, "the third step moved the weights ({moved})");
    // Saved readouts are rounded to f16.
    let off = max_abs_diff(&mean, &expected).unwrap();
    assert!(off < 2e-3 && off < moved / 4.0, "the saved weight is the mean of the last two steps' (off by {off}, steps moved {moved})");
}
