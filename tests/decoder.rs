//! The decoder runtime on real SmolLM2 weights (run `scripts/fetch-models.sh` first):
//! against candle-transformers' stock quantized llama, padding, both paths, the KV
//! cache, and gradients to soft input embeddings.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use duetdb::embed::decoder::{max_abs_diff, Decoder, Kernels};
use duetdb::embed::gguf::Gguf;
use duetdb::embed::tokenizer::TextTokenizer;
use std::sync::OnceLock;

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SmolLM2 and its tokenizer, loaded once; the tests call [`need_model!`] first.
fn model() -> &'static (Decoder, TextTokenizer) {
    static M: OnceLock<(Decoder, TextTokenizer)> = OnceLock::new();
    M.get_or_init(|| {
        let p = common::model(SMOLLM2, "").expect("checked by need_model! in the test");
        let dec = Decoder::load(&p, &Device::Cpu, DType::F32).unwrap();
        let tok = TextTokenizer::from_gguf(&Gguf::open(&p).unwrap()).unwrap();
        (dec, tok)
    })
}

fn hidden(texts: &[&str], path: Kernels) -> (Tensor, Vec<usize>) {
    let (dec, tok) = model();
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
    let (ids, pads) = dec.pad_left(&seqs, 0).unwrap();
    let h = dec.forward(&dec.embed_ids(&ids).unwrap(), &pads, None, path).unwrap();
    (h, pads)
}

#[test]
fn logits_match_candle_stock_model_and_predict_paris() {
    need_model!(SMOLLM2);
    let (dec, tok) = model();
    let ids = tok.encode("The capital of France is").unwrap();
    // The stock model with every weight dequantised to f32, as ours are.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let p = need_model!(SMOLLM2);
    let mut f = std::fs::File::open(&p).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut stock = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let reference = stock.forward(&input, 0).unwrap().squeeze(0).unwrap();

    let (h, _) = hidden(&["The capital of France is"], Kernels::Fast);
    let ours = dec.logits(&Decoder::last(&h).unwrap(), Kernels::Fast).unwrap().squeeze(0).unwrap();
    common::assert_logits(&ours, &reference, tok, " Paris");
}

#[test]
fn padded_batch_equals_one_text_at_a_time() {
    need_model!(SMOLLM2);
    // The f32 kernels' agreement (bfloat16 batches are checked in tests/precision.rs).
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let texts = ["ripgrep recursively searches directories for a regex pattern", "a music player", "The quick brown fox jumps over the lazy dog."];
    let (batch, pads) = hidden(&texts, Kernels::Fast);
    for (i, t) in texts.iter().enumerate() {
        let (alone, _) = hidden(&[t], Kernels::Fast);
        let n = alone.dim(1).unwrap();
        let row = batch.get(i).unwrap().narrow(0, pads[i], n).unwrap();
        let alone = alone.squeeze(0).unwrap();
        let diff = max_abs_diff(&row, &alone).unwrap();
        // Rounding only: a short text alone goes through the few-rows kernel with packed
        // weights, the batch through gemm with f32 weights, which sum in different orders (hidden states reach ~50).
        let scale = alone.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5 * scale, "text {i}: padded batch differs by {diff} (largest value {scale})");
    }
    // The texts alone took the packed path: all 7 projections of SmolLM2's 30 blocks
    // (Q4_1 throughout) have an exact byte-per-weight copy.
    if duetdb::embed::decoder::skinny::available() && std::env::var("DUETDB_PACKED").as_deref() != Ok("0") {
        assert_eq!(model().0.packed_projections(), 7 * 30);
    }
}

#[test]
fn fast_and_differentiable_paths_agree() {
    need_model!(SMOLLM2);
    // The f32 fast path against the differentiable one (bfloat16: tests/precision.rs).
    duetdb::embed::set_precision(duetdb::embed::Precision::F32);
    let texts = ["Instruct: represent this package description\nQuery: a terminal file manager", "short"];
    let (a, _) = hidden(&texts, Kernels::Fast);
    let (b, _) = hidden(&texts, Kernels::Differentiable);
    let diff = max_abs_diff(&a, &b).unwrap();
    println!("fast vs differentiable: {diff}");
    assert!(diff < 1e-3, "paths differ by {diff}");
}

#[test]
fn kv_cache_steps_match_the_full_forward() {
    need_model!(SMOLLM2);
    let (dec, tok) = model();
    let seqs = vec![tok.encode("Debian packages for Rust developers").unwrap(), tok.encode("vim").unwrap()];
    let (ids, pads) = dec.pad_left(&seqs, 0).unwrap();
    let emb = dec.embed_ids(&ids).unwrap();
    let t = emb.dim(1).unwrap();
    let full = dec.forward(&emb, &pads, None, Kernels::Fast).unwrap();
    let mut cache = dec.new_cache(&pads);
    let mut steps = vec![dec.forward(&emb.narrow(1, 0, t - 2).unwrap(), &pads, Some(&mut cache), Kernels::Fast).unwrap()];
    for j in t - 2..t {
        steps.push(dec.forward(&emb.narrow(1, j, 1).unwrap(), &pads, Some(&mut cache), Kernels::Fast).unwrap());
    }
    let stepped = Tensor::cat(&steps, 1).unwrap();
    // Only real positions are comparable (a pad query attends to itself alone).
    for (i, p) in pads.iter().enumerate() {
        let a = full.get(i).unwrap().narrow(0, *p, t - p).unwrap();
        let b = stepped.get(i).unwrap().narrow(0, *p, t - p).unwrap();
        assert!(max_abs_diff(&a, &b).unwrap() < 1e-4);
    }
    assert_eq!(cache.len(), t);
}

#[test]
fn gradients_reach_soft_inputs_and_match_finite_differences() {
    need_model!(SMOLLM2);
    let (dec, tok) = model();
    let d = dec.config().hidden;
    let ids = tok.encode("regex search").unwrap();
    let text = dec.embed_ids(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap()).unwrap();
    // Two soft tokens near real token embeddings, then the text.
    let soft0 = dec.embed_ids(&Tensor::new(&[[504u32, 1001]], &Device::Cpu).unwrap()).unwrap();
    let soft = Var::from_tensor(&soft0).unwrap();
    let dir = Tensor::randn(0f32, 1., d, &Device::Cpu).unwrap();
    let loss = |s: &Tensor, path: Kernels| -> Tensor {
        let x = Tensor::cat(&[s, &text], 1).unwrap();
        let h = dec.forward(&x, &[0], None, path).unwrap();
        Decoder::last(&h).unwrap().squeeze(0).unwrap().mul(&dir).unwrap().sum_all().unwrap()
    };
    let grads = loss(soft.as_tensor(), Kernels::Differentiable).backward().unwrap();
    let g = grads.get(soft.as_tensor()).expect("a gradient for the soft tokens");
    let g: Vec<Vec<Vec<f32>>> = g.to_vec3().unwrap();
    let base: Vec<f32> = soft0.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-2f32;
    let mut rng = fastrand::Rng::with_seed(3);
    let mut checked = 0;
    for _ in 0..6 {
        let (k, j) = (rng.usize(..2), rng.usize(..d));
        let at = |delta: f32| {
            let mut v = base.clone();
            v[k * d + j] += delta;
            let s = Tensor::from_vec(v, (1, 2, d), &Device::Cpu).unwrap();
            loss(&s, Kernels::Fast).to_scalar::<f32>().unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        let an = g[0][k][j];
        println!("soft[{k}][{j}]: analytic {an:.5} finite-difference {fd:.5}");
        assert!((an - fd).abs() <= 0.05 * an.abs().max(fd.abs()) + 0.02, "gradient mismatch at ({k},{j}): {an} vs {fd}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}
