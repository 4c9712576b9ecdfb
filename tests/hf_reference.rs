//! Our tokenizer and forward against Hugging Face `transformers` (PyTorch) on the same
//! GGUF files, recorded by `scripts/record-hf-fixtures.py` into fixtures/hf-*.json.

mod common;

use candle_core::{DType, Device, Tensor};
use duetdb::embed::decoder::{Decoder, Kernels};
use duetdb::embed::gguf::Gguf;
use duetdb::embed::tokenizer::TextTokenizer;

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    hidden: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    model: String,
    cases: Vec<Case>,
}

fn check(fixture: &str) {
    let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(common::repo_root().join("fixtures").join(fixture)).unwrap()).unwrap();
    let fetch = if fx.model.starts_with("Qwen") { "qwen2.5" } else { "" };
    let path = need_model!(&fx.model, fetch);
    let tok = TextTokenizer::from_gguf(&Gguf::open(&path).unwrap()).unwrap();
    let dec = Decoder::load(&path, &Device::Cpu, DType::F32).unwrap();
    for case in &fx.cases {
        assert_eq!(tok.encode(&case.text).unwrap(), case.ids, "token ids for {:?}", case.text);
        let ids = Tensor::new(case.ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let h = dec.forward(&dec.embed_ids(&ids).unwrap(), &[0], None, Kernels::Fast).unwrap().squeeze(0).unwrap();
        let ours: Vec<Vec<f32>> = h.to_vec2().unwrap();
        let (mut worst, mut scale) = (0f32, 0f32);
        for (a, b) in ours.iter().zip(&case.hidden) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
                scale = scale.max(y.abs());
            }
        }
        println!("{:?}: max |difference| {worst} (values up to {scale})", case.text);
        // Stated tolerance: 1e-3 of the largest hidden value (the two stacks sum in
        // different orders over 30 layers of f32).
        assert!(worst <= 1e-3 * scale, "hidden states of {:?} differ by {worst} (scale {scale})", case.text);
    }
}

#[test]
fn smollm2_matches_transformers() {
    check("hf-smollm2.json");
}

#[test]
#[ignore = "needs the 491 MB Qwen2.5 GGUF: scripts/fetch-models.sh qwen2.5"]
fn qwen25_matches_transformers() {
    check("hf-qwen2.5.json");
}
