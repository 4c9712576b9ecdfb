//! Backbone transfer on real weights: only the new alignment changes (P, its adapters and
//! the new Embedding LLM bit for bit unchanged), a killed transfer resumes exactly, and a
//! checkpoint naming a missing or wrong backbone file fails with an error naming it before
//! any work; the `compose` start carries the source's alignment into the new backbone;
//! a text-conditioned source transfers with P run as at inference.
//! Source: the shipped SmolLM2 checkpoint (`checkpoints/smollm2`).

mod common;

use duetdb::embed::prompt::{gemma3, smollm2, AlignInit, PromptEmbedder};
use duetdb::embed::{Embedder, Kind};
use duetdb::train::{Mode, TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/smollm2")
}

fn tiny(steps: u64, backbone: duetdb::embed::prompt::Backbone, init: AlignInit) -> TrainConfig {
    let mut c = common::tiny_run(Mode::Transfer, steps);
    c.from = Some(source());
    c.backbone = Some(backbone);
    c.align_init = Some(init);
    c
}

fn only_the_alignment_changes(backbone: duetdb::embed::prompt::Backbone, init: AlignInit) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut t = Trainer::create(tiny(2, backbone.clone(), init), &out).unwrap();
    assert_eq!(t.parameter_count(), 576 * t.embedder().dim() + t.embedder().dim(), "A' and its bias are all that is trained");
    let p_before = t.embedder().lora().unwrap().unwrap().tensors();
    let m_before = t.embedder().embedding_model().weights_digest().unwrap();
    let a_before = t.embedder().alignment().0.to_vec2::<f32>().unwrap();
    t.run(&mut |_| {}).unwrap();
    assert_eq!(t.embedder().embedding_model().weights_digest().unwrap(), m_before, "M' changed");
    let p_after = t.embedder().lora().unwrap().unwrap().tensors();
    for (name, x) in &p_before {
        let y = &p_after[name];
        assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "P's adapter {name} changed");
    }
    assert_ne!(t.embedder().alignment().0.to_vec2::<f32>().unwrap(), a_before, "A' did not move");
    // The saved checkpoint names both backbones and reproduces the vectors.
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["prompting"]["file"], smollm2().file);
    assert_eq!(cfg["embedding"]["sha256"], backbone.sha256);
    let loaded = PromptEmbedder::load(&out).unwrap();
    let texts = ["regex search in files"];
    assert_eq!(loaded.embed(&texts, Kind::Query).unwrap(), t.embedder().embed(&texts, Kind::Query).unwrap());
}

#[test]
fn transfer_trains_only_the_new_alignment() {
    // The new backbone here is SmolLM2 itself, started from a zero alignment: every part
    // of a transfer runs, on the model CI has.
    only_the_alignment_changes(smollm2(), AlignInit::Zero);
}

#[test]
fn transfer_to_gemma3_trains_only_the_new_alignment() {
    only_the_alignment_changes(gemma3(), AlignInit::LeastSquares);
}

fn args(out: &Path, steps: u64) -> Vec<String> {
    let mut a = common::tiny_run_args("transfer", steps);
    let src = source().display().to_string();
    a.extend(["--from", &src, "--backbone", "smollm2", "--align-init", "zero", "--out"].map(String::from));
    a.push(out.display().to_string());
    a
}

#[test]
fn a_killed_transfer_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let bin = env!("CARGO_BIN_EXE_duetdb");
    assert!(Command::new(bin).args(args(&whole, 4)).stdout(Stdio::null()).status().unwrap().success());
    let mut child = Command::new(bin).args(args(&killed, 4)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let logged = |d: &Path| std::fs::read_to_string(d.join("train/log.jsonl")).map_or(0, |t| t.lines().count());
    let t = Instant::now();
    while logged(&killed) < 2 && t.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(logged(&killed) < 4, "the run ended before the kill");
    let st = Command::new(bin).args(["transfer", "--resume", "--out"]).arg(&killed).stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
    assert_eq!(common::train_state_bytes(&whole), common::train_state_bytes(&killed), "A', P's adapters or the optimiser state differ after the resume");
}

#[test]
fn a_missing_or_wrong_backbone_is_named_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    // A backbone file that does not exist.
    let bin = env!("CARGO_BIN_EXE_duetdb");
    let mut a = args(&tmp.path().join("none"), 1);
    let i = a.iter().position(|x| x == "smollm2").unwrap();
    a[i] = tmp.path().join("nowhere.gguf").display().to_string();
    let o = Command::new(bin).args(&a).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("nowhere.gguf"), "{err}");
    assert!(!tmp.path().join("none").exists(), "nothing is started");
    // A backbone alone, by name: SmolLM2 by name is the built-in `m-mean`.
    let err = duetdb::embed::from_spec("m-mean:nowhere").err().expect("no such backbone").to_string();
    assert!(err.contains("nowhere") && err.contains("gemma3"), "{err}");
    assert_eq!(duetdb::embed::from_spec("m-mean:smollm2").unwrap().fingerprint(), duetdb::embed::from_spec("m-mean").unwrap().fingerprint());
    // A transferred checkpoint whose config names a file with another SHA-256, or one
    // that is not there: loading it, and resuming its run, name the file.
    let out = tmp.path().join("run");
    Trainer::create(tiny(1, smollm2(), AlignInit::Zero), &out).unwrap();
    let path = out.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["embedding"]["sha256"] = "00".repeat(32).into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = PromptEmbedder::load(&out).expect_err("a wrong SHA-256").to_string();
    assert!(err.contains(&smollm2().file) && err.to_lowercase().contains("sha"), "{err}");
    cfg["embedding"]["file"] = "Missing-Model.gguf".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = PromptEmbedder::load(&out).expect_err("a missing file").to_string();
    assert!(err.contains("Missing-Model.gguf"), "{err}");
    let latest = std::fs::read_to_string(out.join("train/latest")).unwrap();
    std::fs::write(out.join("train").join(latest.trim()).join("config.json"), cfg.to_string()).unwrap();
    let err = Trainer::resume(&out).err().expect("resume checks the backbone").to_string();
    assert!(err.contains("Missing-Model.gguf"), "{err}");
}

#[test]
fn a_composed_alignment_carries_the_source_into_the_new_backbone() {
    // Equal to f32 rounding: bfloat16 documents would amplify the prompts' last-bit
    // differences (tests/precision.rs bounds those).
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let texts = ["regex search in files", "a library for reading PNG images"];
    // Onto the source's own Embedding LLM, composing gives back the source's alignment:
    // the source's vectors before any training (to float rounding: the source embeds with
    // its shipped prompts, the transfer runs P).
    let src = PromptEmbedder::load(&source()).unwrap();
    let same = PromptEmbedder::transfer(&source(), smollm2(), AlignInit::Composed).unwrap();
    for kind in [Kind::Query, Kind::Passage] {
        let (a, b) = (src.embed(&texts, kind).unwrap(), same.embed(&texts, kind).unwrap());
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{kind:?}: {x} against {y}");
        }
    }
    // Onto Gemma3: the source's trained alignment followed by the least-squares map from
    // SmolLM2 into Gemma3 (which is the `lstsq` start, since the source's P and M are one
    // model); not the `lstsq` start itself, which drops what the source's alignment learnt.
    let lstsq = PromptEmbedder::transfer(&source(), gemma3(), AlignInit::LeastSquares).unwrap();
    let comp = PromptEmbedder::transfer(&source(), gemma3(), AlignInit::Composed).unwrap();
    let ((ws, bs), (lw, lb), (cw, cb)) = (src.alignment(), lstsq.alignment(), comp.alignment());
    let want_w = ws.matmul(lw).unwrap().to_vec2::<f32>().unwrap();
    let want_b = (bs.unsqueeze(0).unwrap().matmul(lw).unwrap().squeeze(0).unwrap() + lb).unwrap().to_vec1::<f32>().unwrap();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()));
    assert_eq!(cw.dims(), [576, 640]);
    assert!(close(&cw.to_vec2::<f32>().unwrap().concat(), &want_w.concat()), "A' is not A then the least-squares map");
    assert!(close(&cb.to_vec1::<f32>().unwrap(), &want_b), "the bias is not carried through");
    assert!(
        !close(&cw.to_vec2::<f32>().unwrap().concat(), &lw.to_vec2::<f32>().unwrap().concat()),
        "composing changed nothing: is the source's alignment the identity?"
    );
}

#[test]
fn a_text_conditioned_source_transfers_with_p_run_as_at_inference() {
    // A source whose P reads each text (a one-step `prompt-text` run). Its transfer keeps
    // P and its adapters frozen, so training runs P without an autograd graph: the
    // vectors on the differentiable path must be those of inference, and only A' moves.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("source");
    Trainer::create(common::tiny_run(Mode::PromptText, 1), &src).unwrap().run(&mut |_| {}).unwrap();
    let mut c = common::tiny_run(Mode::Transfer, 2);
    c.from = Some(src.clone());
    c.backbone = Some(smollm2());
    c.align_init = Some(AlignInit::Zero);
    let out = tmp.path().join("transfer");
    let mut t = Trainer::create(c, &out).unwrap();
    let p_before = t.embedder().lora().unwrap().unwrap().tensors();
    let a_before = t.embedder().alignment().0.to_vec2::<f32>().unwrap();
    t.run(&mut |_| {}).unwrap();
    let p_after = t.embedder().lora().unwrap().unwrap().tensors();
    for (name, x) in &p_before {
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            p_after[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "P's adapter {name} changed"
        );
    }
    assert_ne!(t.embedder().alignment().0.to_vec2::<f32>().unwrap(), a_before, "A' did not move");
    let texts = ["regex search in files", "a library for reading PNG images"];
    let e = t.embedder();
    assert!(e.config().condition_on_text, "the source reads the text");
    let fast = e.embed_texts(&texts, Kind::Passage, duetdb::embed::decoder::Kernels::Fast, 16).unwrap();
    let diff = e.embed_texts(&texts, Kind::Passage, duetdb::embed::decoder::Kernels::Differentiable, 16).unwrap();
    let gap = duetdb::embed::decoder::max_abs_diff(&fast, &diff).unwrap();
    assert!(gap < 1e-4, "training's vectors differ from inference's by {gap}");
    // And their graph starts at the alignment: nothing of P is differentiated.
    let grads = diff.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(e.alignment().0).is_some(), "no gradient reaches A'");
    for (name, var) in e.parameters().unwrap().iter().filter(|(n, _)| n.starts_with("p.")) {
        assert!(grads.get(var.as_tensor()).is_none(), "P's {name} is in the graph");
    }
    // Texts reach the vector through P: two texts get different soft prompts, so a
    // constant-prompt shortcut would be wrong here.
    let v = fast.to_vec2::<f32>().unwrap();
    assert_ne!(v[0], v[1]);
}
