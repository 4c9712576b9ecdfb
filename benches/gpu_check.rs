//! The GPU check of issue 29, driven by `benches/gpu_check.sh`: runs on a machine that
//! receives only this binary (built with `--features cuda`), so it makes its own models.
//!
//! Usage: `gpu_check DIR [LAYERS] [BATCHES]`
//!
//! 1. Correctness: a small random decoder of Gemma3's architecture (written to
//!    `DIR/gemma3-small.gguf`) runs the same padded batch on the CPU and on the device
//!    `duetdb::embed::device()` names (`--device`/`DUETDB_DEVICE`); the mean-pooled,
//!    normalised vectors are compared (largest absolute difference of a component).
//! 2. Throughput: a decoder of Gemma3-270M's exact shape (hidden 640, 18 layers, 4 query
//!    heads and 1 KV head of 256, MLP 2048, vocabulary 262,144; `LAYERS` fewer for a smoke
//!    run) with random f16 weights, written to `DIR/gemma3-270m-random.gguf`, embeds
//!    `BATCHES` batches of 64 documents of 83 positions (a Debian description's mean, with
//!    the 5 soft tokens) on the device: documents/s and tokens/s.
//!
//! Prints one JSON line. Random weights measure speed and agreement, never quality.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, D};
use duetdb::embed::decoder::{Decoder, Kernels};
use std::path::Path;
use std::time::Instant;

struct Shape {
    hidden: usize,
    layers: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
}

/// Writes a GGUF of Gemma3's architecture with random weights: matrices in f16 (the
/// GGUF type candle's CUDA backend dequantizes fastest), norms in f32.
fn write_random_gemma3(path: &Path, s: &Shape, seed: u64) -> candle_core::Result<()> {
    use rand::{Rng, SeedableRng};
    let cpu = Device::Cpu;
    // candle's CPU backend cannot be seeded: uniform values from a seeded generator, with
    // the spread of a normal of the given standard deviation.
    let rng = std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(seed));
    let random = |n: usize, sd: f32| -> Vec<f32> {
        let a = sd * 3f32.sqrt();
        let mut r = rng.borrow_mut();
        (0..n).map(|_| r.random_range(-a..a)).collect()
    };
    let (h, hd, q, kv) = (s.hidden, s.head_dim, s.heads * s.head_dim, s.head_dim);
    let mat = |out: usize, inn: usize| -> candle_core::Result<QTensor> {
        let sd = 1.0 / (inn as f32).sqrt();
        QTensor::quantize(&Tensor::from_vec(random(out * inn, sd), (out, inn), &cpu)?, GgmlDType::F16)
    };
    let norm = |n: usize| -> candle_core::Result<QTensor> { QTensor::quantize(&Tensor::from_vec(random(n, 0.1), n, &cpu)?, GgmlDType::F32) };
    let mut tensors: Vec<(String, QTensor)> = vec![("token_embd.weight".into(), mat(s.vocab, h)?), ("output_norm.weight".into(), norm(h)?)];
    for i in 0..s.layers {
        let b = |n: &str| format!("blk.{i}.{n}");
        tensors.push((b("attn_q.weight"), mat(q, h)?));
        tensors.push((b("attn_k.weight"), mat(kv, h)?));
        tensors.push((b("attn_v.weight"), mat(kv, h)?));
        tensors.push((b("attn_output.weight"), mat(h, q)?));
        tensors.push((b("ffn_gate.weight"), mat(s.ffn, h)?));
        tensors.push((b("ffn_up.weight"), mat(s.ffn, h)?));
        tensors.push((b("ffn_down.weight"), mat(h, s.ffn)?));
        for n in ["attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"] {
            tensors.push((b(&format!("{n}.weight")), norm(h)?));
        }
        tensors.push((b("attn_q_norm.weight"), norm(hd)?));
        tensors.push((b("attn_k_norm.weight"), norm(hd)?));
    }
    use gguf_file::Value::{String as S, F32, U32};
    let meta: Vec<(&str, gguf_file::Value)> = vec![
        ("general.architecture", S("gemma3".into())),
        ("gemma3.context_length", U32(32768)),
        ("gemma3.embedding_length", U32(h as u32)),
        ("gemma3.block_count", U32(s.layers as u32)),
        ("gemma3.feed_forward_length", U32(s.ffn as u32)),
        ("gemma3.attention.head_count", U32(s.heads as u32)),
        ("gemma3.attention.head_count_kv", U32(1)),
        ("gemma3.attention.key_length", U32(hd as u32)),
        ("gemma3.attention.value_length", U32(hd as u32)),
        ("gemma3.attention.layer_norm_rms_epsilon", F32(1e-6)),
        ("gemma3.rope.freq_base", F32(1_000_000.0)),
        ("gemma3.attention.sliding_window", U32(512)),
    ];
    let meta_refs: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    gguf_file::write(&mut f, &meta_refs, &tensor_refs)
}

/// Random token ids, `rows` rows of `len` positions, the first `pad[i]` of row `i` padding.
fn batch(dec: &Decoder, rows: usize, len: usize, seed: u32) -> duetdb::Result<Tensor> {
    let vocab = dec.config().vocab as u32;
    let ids: Vec<u32> = (0..(rows * len) as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97)) % vocab).collect();
    dec.embed_ids(&Tensor::from_vec(ids, (rows, len), dec.device())?)
}

/// Mean over the real (unpadded) positions, normalised: the vectors compared.
fn pooled(h: &Tensor, pad: &[usize]) -> duetdb::Result<Vec<Vec<f32>>> {
    let h = h.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let mut out = Vec::new();
    for (i, &p) in pad.iter().enumerate() {
        let row = h.get(i)?;
        let real = row.narrow(0, p, row.dim(0)? - p)?.mean(0)?;
        let norm = real.sqr()?.sum_all()?.sqrt()?;
        out.push(real.broadcast_div(&norm)?.to_vec1::<f32>()?);
    }
    Ok(out)
}

fn main() -> duetdb::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let dir = Path::new(a.get(1).map(String::as_str).unwrap_or("bench-out/gpu"));
    let layers: usize = a.get(2).map_or(18, |s| s.parse().expect("LAYERS is a number"));
    let batches: usize = a.get(3).map_or(20, |s| s.parse().expect("BATCHES is a number"));
    std::fs::create_dir_all(dir).map_err(|e| duetdb::Error::io(dir, e))?;
    let device = duetdb::embed::device()?;
    let on = format!("{device:?}");

    // 1. The same batch on the CPU and on the device.
    let small = dir.join("gemma3-small.gguf");
    write_random_gemma3(&small, &Shape { hidden: 128, layers: 3, heads: 2, head_dim: 64, ffn: 256, vocab: 4096 }, 7)?;
    let pad = [0usize, 3, 9, 17];
    let mut vectors = Vec::new();
    for d in [Device::Cpu, device.clone()] {
        let dec = Decoder::load(&small, &d, DType::F32)?;
        let x = batch(&dec, pad.len(), 40, 1)?;
        vectors.push(pooled(&dec.forward(&x, &pad, None, Kernels::Fast)?, &pad)?);
    }
    let max_diff = vectors[0].iter().flatten().zip(vectors[1].iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);

    // 2. Gemma3-270M's shape, random weights, on the device.
    let big = dir.join("gemma3-270m-random.gguf");
    write_random_gemma3(&big, &Shape { hidden: 640, layers, heads: 4, head_dim: 256, ffn: 2048, vocab: 262_144 }, 11)?;
    // f32 (what the PromptEmbedder loads today) and, on a GPU, bfloat16.
    let dtypes = if device.is_cpu() { vec![DType::F32] } else { vec![DType::F32, DType::BF16] };
    let (rows, len) = (64usize, 83usize);
    let mut speed = serde_json::Map::new();
    for dtype in dtypes {
        let dec = Decoder::load(&big, &device, dtype)?;
        let x = batch(&dec, rows, len, 2)?.to_dtype(dtype)?;
        let pad = vec![0usize; rows];
        for _ in 0..2 {
            dec.forward_tail(&x, &pad, Kernels::Fast, None, 5)?.to_device(&Device::Cpu)?;
        }
        let t = Instant::now();
        for _ in 0..batches {
            // Copying the pooled soft positions back waits for the device to finish.
            dec.forward_tail(&x, &pad, Kernels::Fast, None, 5)?.mean(D::Minus2)?.to_device(&Device::Cpu)?;
        }
        let docs_per_s = (batches * rows) as f64 / t.elapsed().as_secs_f64();
        speed.insert(format!("{dtype:?}").to_lowercase(), serde_json::json!({"docs_per_s": docs_per_s, "tokens_per_s": docs_per_s * len as f64}));
    }
    let line = serde_json::json!({
        "device": on, "layers": layers, "batch": rows, "positions": len, "speed": speed,
        "max_abs_diff_vs_cpu": max_diff, "check_rows": vectors[0].len(),
    });
    println!("{line}");
    Ok(())
}
