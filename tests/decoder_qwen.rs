//! Qwen2.5-Coder-0.5B (opt-in: `scripts/fetch-models.sh qwen2.5`, then
//! `cargo test --release --test decoder_qwen -- --ignored`): the tokenizer built from
//! the GGUF against an independent tokenizer.json, and logits against
//! candle-transformers' stock quantized qwen2.

mod common;

use candle_core::{DType, Device, Tensor};
use duetdb::embed::decoder::{max_abs_diff, Decoder, Kernels};
use duetdb::embed::gguf::Gguf;
use duetdb::embed::tokenizer::TextTokenizer;

const QWEN: &str = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf";

/// Strings that exercise the pre-tokenizer: contractions, digits, CJK, emoji,
/// whitespace runs, newlines, code and special tokens.
const TRICKY: &[&str] = &[
    "Hello, world! It's 2026 and we're testing 12345 tokens.",
    "fn main() {\n    println!(\"{}\", x.len());\n}\n\n\t\ttabs",
    "日本語のテキストと中文混合 text 🚀🔥 émigré naïve",
    "   leading spaces and trailing   ",
    "<|im_start|>user\nWhat is ripgrep?<|im_end|>",
    "URL: https://example.org/a?b=c&d=e#frag — em-dash… ellipsis",
];

#[test]
#[ignore = "needs the 491 MB Qwen2.5 GGUF and the reference tokenizer: scripts/fetch-models.sh qwen2.5"]
fn tokenizer_from_gguf_matches_reference_tokenizer_json() {
    let ours = TextTokenizer::from_gguf(&Gguf::open(&need_model!(QWEN, "qwen2.5")).unwrap()).unwrap();
    let reference = TextTokenizer::from_file(&need_model!("qwen-reference-tokenizer.json", "qwen2.5"), None, None).unwrap();
    for s in TRICKY {
        assert_eq!(ours.encode(s).unwrap(), reference.encode(s).unwrap(), "ids differ for {s:?}");
        assert_eq!(ours.decode(&ours.encode(s).unwrap()).unwrap(), *s);
    }
}

#[test]
#[ignore = "needs the 491 MB Qwen2.5 GGUF: scripts/fetch-models.sh qwen2.5"]
fn logits_match_candle_stock_qwen2_and_predict_paris() {
    let p = need_model!(QWEN, "qwen2.5");
    let tok = TextTokenizer::from_gguf(&Gguf::open(&p).unwrap()).unwrap();
    let dec = Decoder::load(&p, &Device::Cpu, DType::F32).unwrap();
    let ids = tok.encode("The capital of France is").unwrap();
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mut f = std::fs::File::open(&p).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut stock = candle_transformers::models::quantized_qwen2::ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let reference = stock.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let reference = if reference.rank() == 2 { reference.get(reference.dim(0).unwrap() - 1).unwrap() } else { reference };

    let emb = dec.embed_ids(&input).unwrap();
    let h = dec.forward(&emb, &[0], None, Kernels::Fast).unwrap();
    let ours = dec.logits(&Decoder::last(&h).unwrap(), Kernels::Fast).unwrap().squeeze(0).unwrap();
    common::assert_logits(&ours, &reference, &tok, " Paris");
    let (a, b) = (dec.forward(&emb, &[0], None, Kernels::Fast).unwrap(), dec.forward(&emb, &[0], None, Kernels::Differentiable).unwrap());
    assert!(max_abs_diff(&a, &b).unwrap() < 1e-3);
}
