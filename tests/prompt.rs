//! PromptEmbedder on real SmolLM2 weights (run `scripts/fetch-models.sh` first).

use candle_core::{DType, Device, Tensor, D};
use duetdb::embed::decoder::lora::LoraConfig;
use duetdb::embed::decoder::{max_abs_diff, Decoder, Kernels};
use duetdb::embed::prompt::{PromptConfig, PromptEmbedder, Reshape};
use duetdb::embed::{model_path, Embedder, Kind};

fn embedder(cfg: PromptConfig) -> PromptEmbedder {
    PromptEmbedder::new(cfg, &Device::Cpu).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn relaxed_decoding_approaches_greedy_as_temperature_falls() {
    let prompt = "Instruct: Represent this document for retrieval\n".to_string();
    // Greedy decoding with real tokens, as the reference.
    let dec = Decoder::load(&model_path("SmolLM2-135M-Instruct.Q4_1.gguf").unwrap(), &Device::Cpu, DType::F32).unwrap();
    let e = embedder(PromptConfig { soft_tokens: 3, temperature: 1e-4, ..Default::default() });
    let tok =
        duetdb::embed::tokenizer::TextTokenizer::from_gguf(&duetdb::embed::gguf::Gguf::open(&model_path("SmolLM2-135M-Instruct.Q4_1.gguf").unwrap()).unwrap())
            .unwrap();
    let mut ids = tok.encode(&prompt).unwrap();
    let mut greedy = Vec::new();
    for _ in 0..3 {
        let x = dec.embed_ids(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()).unwrap();
        let h = dec.forward(&x, &[0], None, Kernels::Fast).unwrap();
        let next = dec.logits(&Decoder::last(&h).unwrap(), Kernels::Fast).unwrap().argmax(D::Minus1).unwrap().squeeze(0).unwrap().to_scalar::<u32>().unwrap();
        greedy.push(next);
        ids.push(next);
    }
    let greedy_emb = dec.embed_ids(&Tensor::new(greedy.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()).unwrap();
    // Identity alignment (P and M are the same model), so soft tokens are in P's space.
    let cold = e.soft_prompts(std::slice::from_ref(&prompt), Kernels::Fast).unwrap();
    let diff_cold = max_abs_diff(&cold, &greedy_emb).unwrap();
    let warm = embedder(PromptConfig { soft_tokens: 3, temperature: 1.0, ..Default::default() }).soft_prompts(&[prompt], Kernels::Fast).unwrap();
    let diff_warm = max_abs_diff(&warm, &greedy_emb).unwrap();
    println!("greedy tokens {:?}; |relaxed - greedy| at tau=1e-4: {diff_cold}, at tau=1: {diff_warm}", tok.decode(&greedy).unwrap());
    assert!(diff_cold < 1e-3, "tau -> 0 must give the greedy tokens' embeddings, differs by {diff_cold}");
    assert!(diff_warm > 10.0 * diff_cold.max(1e-6), "tau = 1 should be a real mixture");
}

#[test]
fn embedding_is_the_same_alone_and_in_a_padded_batch() {
    // f32's tolerances (bfloat16 documents: tests/precision.rs).
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let texts = ["ripgrep recursively searches directories for a regex pattern", "vim", "A music player daemon with a command line client and many plugins."];
    for condition_on_text in [false, true] {
        let e = embedder(PromptConfig { condition_on_text, ..Default::default() });
        let batch = e.embed(&texts, Kind::Passage).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let alone = e.embed(&[t], Kind::Passage).unwrap();
            let diff = alone[0].iter().zip(&batch[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            println!("condition_on_text={condition_on_text}, text {i}: {diff}");
            // Reading the text, P decodes 5 steps autoregressively over a 49k-way softmax:
            // float noise from differently shaped matrix products grows to ~5e-4 on a
            // unit vector. A masking error would show up as differences near 0.1.
            let tolerance = if condition_on_text { 1e-3 } else { 1e-4 };
            assert!(diff < tolerance, "condition_on_text={condition_on_text}, text {i}: {diff}");
            assert!((dot(&alone[0], &alone[0]) - 1.0).abs() < 1e-4, "L2-normalised");
        }
    }
}

#[test]
fn queries_and_passages_use_different_prompts_and_retrieval_works() {
    let e = PromptEmbedder::builtin("default").unwrap();
    let q = e.embed(&["play music from the command line"], Kind::Query).unwrap();
    let p = e.embed(&["play music from the command line"], Kind::Passage).unwrap();
    assert!(dot(&q[0], &p[0]) < 0.9999, "asymmetric instructions give different vectors");
    let docs = e
        .embed(
            &[
                "MPC is a command line client for the Music Player Daemon.",
                "GNU Fortran compiler for modules and coarrays.",
                "A library for parsing JSON in C.",
            ],
            Kind::Passage,
        )
        .unwrap();
    let scores: Vec<f32> = docs.iter().map(|d| dot(&q[0], d)).collect();
    assert!(scores[0] > scores[1] && scores[0] > scores[2], "scores {scores:?}");
}

#[test]
fn checkpoint_roundtrip_and_backbone_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = embedder(PromptConfig { soft_tokens: 2, ..Default::default() });
    e.save(dir.path()).unwrap();
    let back = PromptEmbedder::load(dir.path()).unwrap();
    assert_eq!(back.fingerprint(), e.fingerprint());
    assert_eq!(back.embed(&["hello"], Kind::Query).unwrap(), e.embed(&["hello"], Kind::Query).unwrap());
    assert_ne!(embedder(PromptConfig { soft_tokens: 3, ..Default::default() }).fingerprint(), e.fingerprint());
    let spec = back.spec().unwrap();
    assert_eq!(duetdb::embed::from_spec(&spec).unwrap().fingerprint(), e.fingerprint());

    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    cfg["embedding"]["sha256"] = "00".repeat(32).into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = PromptEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("SHA-256") && err.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && err.contains("fetch-models"), "{err}");
    cfg["embedding"]["file"] = "no-such-model.gguf".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = PromptEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no-such-model.gguf") && err.contains("fetch-models"), "{err}");
}

#[test]
fn gradients_flow_through_m_to_the_soft_prompt() {
    let e = embedder(PromptConfig { condition_on_text: true, soft_tokens: 2, ..Default::default() });
    let v = e.embed_tensor(&["regex search tool"], Kind::Query, Kernels::Differentiable).unwrap();
    let fast = e.embed_tensor(&["regex search tool"], Kind::Query, Kernels::Fast).unwrap();
    assert!(max_abs_diff(&v, &fast).unwrap() < 1e-3);
    // A loss on the embedding has a gradient with respect to P's input embeddings path:
    // check through a variable soft prompt fed straight to M.
    let soft = candle_core::Var::from_tensor(&e.soft_prompts(&["Instruct: x\nQuery: regex search tool".into()], Kernels::Fast).unwrap()).unwrap();
    let ids = vec![vec![1u32, 2, 3]];
    let out = e.embed_batch(&ids, Some(soft.as_tensor()), Kernels::Differentiable).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let gs = g.get(soft.as_tensor()).expect("gradient reaches the soft tokens");
    assert!(gs.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
}

/// P reads a batch's common opening (the instruction) once and continues every text
/// from its keys and values: the soft prompts and the adapters' gradients must be those
/// of each text read alone, from its first token.
#[test]
fn a_shared_instruction_gives_the_soft_prompts_and_gradients_of_each_text_alone() {
    let e = embedder(PromptConfig { condition_on_text: true, soft_tokens: 2, lora: Some(LoraConfig::default()), ..Default::default() });
    let lora = e.lora().unwrap().unwrap();
    // Adapters away from their neutral start, so that every factor gets a gradient.
    for v in lora.vars() {
        v.set(&Tensor::randn(0f32, 0.02, v.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    let texts = ["ripgrep recursively searches directories for a regex pattern", "vim", "A music player daemon with a command line client"];
    let prompts: Vec<String> = texts.iter().map(|t| format!("Instruct: Represent this search query\nQuery: {t}")).collect();
    let weights = Tensor::randn(0f32, 1.0, (texts.len(), 2, 576), &Device::Cpu).unwrap();
    let batch = e.soft_prompts(&prompts, Kernels::Differentiable).unwrap();
    let grads = (&batch * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let mut alone_grads = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let one = e.soft_prompts(std::slice::from_ref(p), Kernels::Differentiable).unwrap();
        let diff = max_abs_diff(&one, &batch.narrow(0, i, 1).unwrap()).unwrap();
        let scale = one.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-3 * scale.max(1.0), "text {i}: soft prompt differs by {diff} (largest value {scale})");
        alone_grads.push((&one * weights.narrow(0, i, 1).unwrap()).unwrap().sum_all().unwrap().backward().unwrap());
    }
    let (mut compared, mut worst) = (0, 0f32);
    for v in lora.vars() {
        let g = grads.get(v.as_tensor()).expect("the batch's loss reaches every adapter factor");
        let sum = alone_grads.iter().map(|a| a.get(v.as_tensor()).unwrap().clone()).reduce(|a, b| (a + b).unwrap()).unwrap();
        let diff = max_abs_diff(g, &sum).unwrap();
        let scale = sum.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(scale > 0.0);
        worst = worst.max(diff / scale);
        assert!(diff <= 5e-3 * scale, "gradient differs by {diff} (largest value {scale})");
        compared += 1;
    }
    println!("largest gradient difference, relative to the gradient's largest value: {worst}");
    assert_eq!(compared, 30 * 2 * 2, "A and B of the q and v adapters in 30 blocks");
}

#[test]
fn lora_adapters_start_neutral_pass_gradients_and_roundtrip() {
    let plain = embedder(PromptConfig { soft_tokens: 2, ..Default::default() });
    let e = embedder(PromptConfig { soft_tokens: 2, lora: Some(LoraConfig::default()), ..Default::default() });
    let text = ["regex search tool"];
    // B = 0: the adapted P writes the same soft prompt as P alone.
    assert_eq!(e.embed(&text, Kind::Query).unwrap(), plain.embed(&text, Kind::Query).unwrap());
    assert_ne!(e.fingerprint(), plain.fingerprint(), "adapters are part of the identity");

    // The default mode's soft prompt reads only the instruction; on the differentiable
    // path it is recomputed, so a loss on the embedding reaches P's adapters (B gets a
    // gradient; A's is zero while B = 0, as in LoRA).
    let lora = e.lora().unwrap().unwrap();
    let out = e.embed_tensor(&text, Kind::Query, Kernels::Differentiable).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    let bs: Vec<_> = lora.vars().into_iter().skip(1).step_by(2).collect();
    assert_eq!(bs.len(), 30 * 2, "q and v adapters in each of SmolLM2's 30 blocks");
    let gsum: f32 = bs.iter().map(|b| grads.get(b.as_tensor()).map_or(0.0, |g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())).sum();
    assert!(gsum > 0.0, "no gradient reached the adapters");

    // Move B as a training step would; the cached prompt must be dropped to see it.
    for b in &bs {
        b.set(&Tensor::randn(0f32, 0.05, b.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    let stale = e.embed(&text, Kind::Query).unwrap();
    e.clear_prompt_cache();
    let trained = e.embed(&text, Kind::Query).unwrap();
    assert_ne!(trained, stale, "the adapters change the soft prompt");

    let dir = tempfile::tempdir().unwrap();
    e.save(dir.path()).unwrap();
    assert!(dir.path().join("prompting_lora.safetensors").exists());
    let back = PromptEmbedder::load(dir.path()).unwrap();
    assert_eq!(back.embed(&text, Kind::Query).unwrap(), trained);
    // Trained values are part of the fingerprint (the config alone is the same).
    let fresh = embedder(PromptConfig { soft_tokens: 2, lora: Some(LoraConfig::default()), ..Default::default() });
    assert_ne!(back.fingerprint(), fresh.fingerprint());

    std::fs::remove_file(dir.path().join("prompting_lora.safetensors")).unwrap();
    let err = PromptEmbedder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("prompting_lora.safetensors"), "{err}");
}

#[test]
#[ignore = "needs the 491 MB Qwen2.5 GGUF: scripts/fetch-models.sh qwen2.5"]
fn least_squares_alignment_maps_shared_tokens_across_backbones() {
    use duetdb::embed::gguf::Gguf;
    use duetdb::embed::prompt::{qwen25, smollm2};
    use duetdb::embed::tokenizer::TextTokenizer;
    let e = embedder(PromptConfig { embedding: qwen25(), ..Default::default() });
    let (w, b) = e.alignment();
    assert_eq!(w.dims(), &[576, 896]);
    // Map SmolLM2's embeddings of 500 shared tokens (part of the fit: this checks the
    // solve, not generalisation) and check that the nearest Qwen embedding among those
    // 500 is the same token's, far above chance (1 in 500).
    let tp = TextTokenizer::from_gguf(&Gguf::open(&model_path(&smollm2().file).unwrap()).unwrap()).unwrap();
    let tm = TextTokenizer::from_gguf(&Gguf::open(&model_path(&qwen25().file).unwrap()).unwrap()).unwrap();
    let dp = Decoder::load(&model_path(&smollm2().file).unwrap(), &Device::Cpu, DType::F32).unwrap();
    let dm = Decoder::load(&model_path(&qwen25().file).unwrap(), &Device::Cpu, DType::F32).unwrap();
    let vp = tp.vocab();
    let vm = tm.vocab();
    let shared: Vec<(u32, u32)> = {
        let mut v: Vec<(u32, u32)> = vp.iter().filter_map(|(s, i)| vm.get(s).map(|j| (*i, *j))).filter(|(i, _)| *i > 1000).collect();
        v.sort_unstable();
        v.into_iter().step_by(37).take(500).collect()
    };
    let ip = Tensor::new(shared.iter().map(|x| x.0).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let im = Tensor::new(shared.iter().map(|x| x.1).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let mapped = dp.token_embeddings().index_select(&ip, 0).unwrap().matmul(w).unwrap().broadcast_add(b).unwrap();
    let target = dm.token_embeddings().index_select(&im, 0).unwrap();
    let norm = |t: &Tensor| t.broadcast_div(&t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    let sims = norm(&mapped).matmul(&norm(&target).t().unwrap()).unwrap();
    let best: Vec<u32> = sims.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    let hits = best.iter().enumerate().filter(|(i, j)| *i as u32 == **j).count();
    println!("nearest-neighbour accuracy of the fitted map: {hits}/500 (chance: 1)"); // 484/500 when written
    assert!(hits > 50, "only {hits}/500");
}

#[test]
fn very_long_texts_are_cut_not_refused() {
    // Debian has descriptions of 81k characters; both P's prompt and M's input are cut
    // to `max_text_tokens` instead of overflowing the model's positions.
    let long = "duetdb stores vectors in memory-mapped files. ".repeat(1300);
    for condition_on_text in [false, true] {
        let e = embedder(PromptConfig { condition_on_text, soft_tokens: 2, ..Default::default() });
        let v = e.embed(&[long.as_str()], Kind::Passage).unwrap();
        assert_eq!(v[0].len(), 576);
    }
}

#[test]
fn databases_of_earlier_defaults_keep_their_embedder() {
    // `default` was first the untrained embedder, then the trained one on SmolLM2 alone
    // (now `smollm2`), then SmolLM2 prompting Gemma3 trained on Debian alone (`debian`),
    // then on four sources (`general`), then `general` with a first and a second readout
    // (checkpoint directories of the repository, not built in). Databases that recorded
    // `default` with one of those fingerprints must get that embedder back, not today's
    // default.
    let untrained = duetdb::embed::from_spec("untrained").unwrap();
    let smollm2 = duetdb::embed::from_spec("smollm2").unwrap();
    let debian = duetdb::embed::from_spec("debian").unwrap();
    let general = duetdb::embed::from_spec("general").unwrap();
    let default = duetdb::embed::from_spec("default").unwrap();
    assert_eq!(default.dim(), 640, "today's default embeds with Gemma3-270M");
    assert_eq!(debian.dim(), 640);
    assert_eq!(smollm2.dim(), 576);
    assert_eq!(general.dim(), 640);
    let first_readout = duetdb::embed::from_spec(concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/readout-4500")).unwrap();
    assert_eq!(first_readout.dim(), 640);
    let second_readout = duetdb::embed::from_spec(concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/readout-12k")).unwrap();
    for old in [&untrained, &smollm2, &debian, &general, &first_readout, &second_readout] {
        assert_ne!(old.fingerprint(), default.fingerprint());
        let back = duetdb::embed::from_record("default", &old.fingerprint()).unwrap();
        assert_eq!(back.fingerprint(), old.fingerprint());
        assert_eq!(back.spec(), old.spec());
        let v = back.embed(&["fortran compiler"], Kind::Query).unwrap();
        assert_eq!(v, old.embed(&["fortran compiler"], Kind::Query).unwrap());
    }
    let new = duetdb::embed::from_record("default", &default.fingerprint()).unwrap();
    assert_eq!(new.fingerprint(), default.fingerprint());
}

#[test]
fn shipped_soft_prompts_embed_without_p_and_give_the_same_vectors() {
    // `checkpoints/smollm2` ships its two constant prompts: opened from them, it must not
    // load P, and must embed exactly as the same checkpoint without the file, whose
    // prompts P computes.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/smollm2");
    let tmp = tempfile::tempdir().unwrap();
    let copy = |to: &std::path::Path, with_prompts: bool| {
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap();
            if with_prompts || f.file_name() != "soft_prompts.safetensors" {
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
    };
    // The shipped prompts are f32: compare with P's forward in f32.
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    copy(&with, true);
    copy(&without, false);
    let fast = PromptEmbedder::load(&with).unwrap();
    let slow = PromptEmbedder::load(&without).unwrap();
    assert!(!fast.prompting_loaded(), "P was loaded although the prompts were shipped");
    assert!(slow.prompting_loaded());
    assert_eq!(fast.fingerprint(), slow.fingerprint());
    let texts = ["fortran compiler modules", "MPC is a command line client for the Music Player Daemon."];
    // Equal up to float rounding, not bit for bit: the shipped prompts were computed on
    // another CPU, and the kernels' SIMD paths (AVX2, AVX-512) round differently. On an
    // AMD EPYC with AVX-512 the two differ by about 1e-7.
    for kind in [Kind::Query, Kind::Passage] {
        let (a, b) = (fast.embed(&texts, kind).unwrap(), slow.embed(&texts, kind).unwrap());
        let d = a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(a.len() == b.len() && d < 1e-5, "{kind:?}: the vectors differ by {d}");
    }
    assert!(!fast.prompting_loaded(), "embedding loaded P");
    assert!(fast.lora().unwrap().is_some() && fast.prompting_loaded(), "P loads when asked for");
    assert!(!PromptEmbedder::builtin("smollm2").unwrap().prompting_loaded());

    // A prompts file that does not belong to these parameters is ignored: P computes them.
    let (w, b) = slow.alignment();
    let bumped = (w + 1e-3).unwrap();
    let t: std::collections::HashMap<String, Tensor> = [("weight".to_string(), bumped), ("bias".to_string(), b.clone())].into();
    candle_core::safetensors::save(&t, with.join("alignment.safetensors")).unwrap();
    let stale = PromptEmbedder::load(&with).unwrap();
    assert!(stale.prompting_loaded(), "a stale prompts file was used");
    assert_ne!(stale.fingerprint(), slow.fingerprint());
    assert_ne!(stale.embed(&texts, Kind::Query).unwrap(), slow.embed(&texts, Kind::Query).unwrap());
}

#[test]
fn a_reshaped_checkpoint_is_its_own_embedder_and_survives_a_save() {
    // `m_layers` pools after block n of M: another function from text to vector, so
    // another fingerprint, kept by a saved checkpoint. (`general`: the default's readout
    // reads block 18, which a cut M does not have.)
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/general");
    let whole = PromptEmbedder::load(&dir).unwrap();
    let cut = PromptEmbedder::load_reshaped(&dir, Reshape { m_layers: Some(9), ..Reshape::default() }).unwrap();
    assert_eq!(cut.config().m_layers, Some(9));
    assert_ne!(cut.fingerprint(), whole.fingerprint());
    let texts = ["regular expression search tool", "GNU C compiler"];
    let (a, b) = (cut.embed(&texts, Kind::Passage).unwrap(), whole.embed(&texts, Kind::Passage).unwrap());
    assert!(dot(&a[0], &b[0]) < 0.999, "block 9's vector equals block 18's");
    let tmp = tempfile::tempdir().unwrap();
    cut.save(tmp.path()).unwrap();
    let back = PromptEmbedder::load(tmp.path()).unwrap();
    assert_eq!(back.fingerprint(), cut.fingerprint());
    assert!(
        max_abs_diff(&Tensor::new(back.embed(&texts, Kind::Passage).unwrap(), &Device::Cpu).unwrap(), &Tensor::new(a, &Device::Cpu).unwrap()).unwrap() < 1e-5
    );
    let err = PromptEmbedder::load_reshaped(&dir, Reshape { m_layers: Some(99), ..Reshape::default() }).expect_err("Gemma3-270M has 18 blocks").to_string();
    assert!(err.contains("99 blocks"), "{err}");
    // Ten soft tokens instead of five: P writes five more after the same first five
    // (relaxed decoding), so the pooled vector moves, and the fingerprint says so.
    let ten = PromptEmbedder::load_reshaped(&dir, Reshape { soft_tokens: Some(10), ..Reshape::default() }).unwrap();
    assert_eq!(ten.config().soft_tokens, 10);
    assert_ne!(ten.fingerprint(), whole.fingerprint());
    let t = ten.embed(&texts[..1], Kind::Passage).unwrap();
    assert_eq!(t[0].len(), b[0].len());
    assert!(dot(&t[0], &b[0]) < 0.9999, "ten soft tokens pooled to five's vector");
    let err = PromptEmbedder::load_reshaped(&dir, Reshape { soft_tokens: Some(0), ..Reshape::default() }).expect_err("0 soft tokens").to_string();
    assert!(err.contains("--soft-tokens 0"), "{err}");
    // P and M one model: P must run whole, so a depth is refused.
    let err = PromptEmbedder::new(PromptConfig { m_layers: Some(3), ..Default::default() }, &Device::Cpu).expect_err("m_layers with P = M").to_string();
    assert!(err.contains("m_layers"), "{err}");
}
