//! Decoder throughput on real Debian descriptions, driven by `benches/decoder.sh`.
//!
//! Usage: `decoder_bench MODEL.gguf TEXTS.jsonl PLAN_OUT.json [TOKEN_BUDGET] [MAX_TOKENS]`.
//! Tokenizes the texts (truncated to MAX_TOKENS), sorts them by length and batches them
//! so that batch size x longest row <= TOKEN_BUDGET; writes that plan for the anchors
//! (PyTorch, llama.cpp) so that all run the same work; then measures this machine's
//! f32 matmul peak and our fast-path forward in real (unpadded) tokens per second.

use candle_core::{DType, Device, Tensor};
use duetdb::embed::decoder::{Decoder, Kernels};
use duetdb::embed::gguf::Gguf;
use duetdb::embed::tokenizer::TextTokenizer;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (model, texts, plan_out) = (&a[1], &a[2], &a[3]);
    let budget: usize = a.get(4).map_or(2048, |s| s.parse().unwrap());
    let max_tokens: usize = a.get(5).map_or(256, |s| s.parse().unwrap());
    let dev = Device::Cpu;
    let dec = Decoder::load(std::path::Path::new(model), &dev, DType::F32).unwrap();
    // Gemma3's GGUF carries a SentencePiece vocabulary: its tokenizer.json comes from
    // TOKENIZER (models/gemma3-tokenizer.json).
    let gguf = Gguf::open(std::path::Path::new(model)).unwrap();
    let tok = match std::env::var("TOKENIZER") {
        Ok(p) => TextTokenizer::from_file(std::path::Path::new(&p), gguf.meta_u32("tokenizer.ggml.bos_token_id").ok(), None).unwrap(),
        Err(_) => TextTokenizer::from_gguf(&gguf).unwrap(),
    };
    let mut seqs: Vec<Vec<u32>> = std::fs::read_to_string(texts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .map(|t| tok.encode(&t).unwrap().into_iter().take(max_tokens).collect())
        .collect();
    seqs.sort_by_key(Vec::len);
    let mut batches: Vec<Vec<Vec<u32>>> = vec![];
    for s in seqs {
        match batches.last_mut() {
            Some(b) if (b.len() + 1) * s.len() <= budget => b.push(s),
            _ => batches.push(vec![s]),
        }
    }
    let tokens: usize = batches.iter().flatten().map(Vec::len).sum();
    std::fs::write(plan_out, serde_json::to_string(&serde_json::json!({"batches": batches})).unwrap()).unwrap();

    // This machine's f32 matmul peak, as candle reaches it: measured before each round,
    // since on a shared machine it moves by up to 1.5x within minutes.
    let n = 1024;
    let x = Tensor::randn(0f32, 1., (n, n), &dev).unwrap();
    let _ = x.matmul(&x).unwrap();
    let peak = || {
        median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..4 {
                        let _ = x.matmul(&x).unwrap();
                    }
                    4.0 * 2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect(),
        )
    };

    // `tail`: None for the whole forward over the padded batches (what the anchors
    // run); Some(n) for the forward an embedder runs, which reads each row's last n
    // positions (the default's 5 soft tokens) and skips the padding (`unpadded.rs`).
    let run = |tail: Option<usize>| {
        let t = Instant::now();
        for b in &batches {
            let (ids, pads) = dec.pad_left(b, 0).unwrap();
            let x = dec.embed_ids(&ids).unwrap();
            // As documents are embedded: in the process's precision (DUETDB_PRECISION).
            let h = duetdb::embed::decoder::bf16::for_documents(|| match tail {
                None => dec.forward(&x, &pads, None, Kernels::Fast).unwrap(),
                Some(n) => dec.forward_tail(&x, &pads, Kernels::Fast, None, n).unwrap(),
            });
            std::hint::black_box(h);
        }
        tokens as f64 / t.elapsed().as_secs_f64()
    };
    run(None); // warm-up
    let (mut peaks, mut rates, mut tails) = (vec![], vec![], vec![]);
    for _ in 0..3 {
        peaks.push(peak());
        rates.push(run(None));
        tails.push(run(Some(5)));
    }
    let peak = median(peaks.clone());
    let params = dec.matmul_params();
    let bound = peak * 1e9 / (2.0 * params as f64);
    let round = |v: &[f64]| v.iter().map(|r| r.round()).collect::<Vec<_>>();
    eprintln!(
        "duetdb: {tokens} tokens in {} batches (budget {budget}); tokens/s {:?}, median {:.0}; embedding forward {:?}, median {:.0}; f32 matmul peak {:?}, median {peak:.1} GFLOP/s -> bound {bound:.0} tokens/s ({params} matmul params)",
        batches.len(),
        round(&rates),
        median(rates.clone()),
        round(&tails),
        median(tails.clone()),
        round(&peaks),
    );
    println!(
        "{}",
        serde_json::json!({"tokens": tokens, "batches": batches.len(), "budget": budget, "tokens_per_s": rates,
            "median": median(rates), "tail_tokens_per_s": tails, "tail_median": median(tails.clone()),
            "peaks": peaks, "matmul_gflops": peak, "matmul_params": params, "bound_tokens_per_s": bound})
    );
}
