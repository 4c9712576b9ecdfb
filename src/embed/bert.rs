//! all-MiniLM-L6-v2: the classic sentence-embedding baseline (mean pooling over real
//! tokens, L2-normalised), with our own BERT forward.
//!
//! candle-transformers' `BertModel` computes the same function, but at about an eighth of
//! PyTorch's speed on two cores (`benches/minilm.sh`): its softmax and exact GELU run
//! element by element through libm, and every op allocates. This forward fuses the three
//! attention projections into one product, folds the score scale into the query weights,
//! and uses the fused softmax and layer norm and the AVX2 GELU of `decoder/activation.rs`.

use super::decoder::activation::{self, FastActivation};
use super::decoder::{ops, Activation, Kernels};
use super::{Embedder, Kind};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;
use std::path::Path;

/// SHA-256 of the pinned `model.safetensors` (ARCHITECTURE.md, "Models").
const MINILM_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// The length all-MiniLM-L6-v2 was trained with.
const MAX_TOKENS: usize = 256;
/// Most texts per forward.
const BATCH: usize = 32;
/// Largest temporary tensor of a forward, in f32 elements (4 MiB). glibc serves
/// allocations above 32 MiB with a fresh `mmap`, which the kernel zeroes page by page and
/// which is unmapped again on free: with batches of 32 texts of 256 tokens (attention
/// scores of 100 MB) page faults took a quarter of the time (`perf`). Of the budgets
/// tried on 300 Debian descriptions, 4 MiB was the fastest (44.0 documents/s, against
/// 33.7 at 32 MiB and 41.4 at 2 MiB): the temporaries also stay in cache.
const MAX_TEMP_ELEMS: usize = 1 << 20;

/// The fields of `config.json` the forward reads.
#[derive(Debug, Clone, Deserialize)]
struct Config {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f64,
    hidden_act: String,
}

/// A weight (out, in) and its bias.
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn load(vb: VarBuilder, out: usize, inn: usize) -> Result<Self> {
        Ok(Self { w: vb.get((out, inn), "weight")?, b: vb.get(out, "bias")? })
    }
    /// `x w^T + b` for `x` (rows, in).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w.t()?)?.broadcast_add(&self.b)?)
    }
}

struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        Ok(Self { w: vb.get(d, "weight")?, b: vb.get(d, "bias")?, eps: eps as f32 })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, self.eps)?)
    }
}

/// One encoder layer.
struct Layer {
    /// Query, key and value projections stacked (3d, d); the query's rows scaled by
    /// `1/sqrt(head_dim)`, so that `q k^T` is the scaled score.
    qkv: Linear,
    out: Linear,
    ln_attn: LayerNorm,
    up: Linear,
    down: Linear,
    ln_out: LayerNorm,
}

/// A BERT sentence embedder (all-MiniLM-L6-v2).
pub struct BertEmbedder {
    word: Tensor,
    position: Tensor,
    /// Token type 0's embedding: every token is of type 0.
    token_type: Tensor,
    ln_embed: LayerNorm,
    layers: Vec<Layer>,
    tok: tokenizers::Tokenizer,
    dim: usize,
    heads: usize,
    intermediate: usize,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder").field("dim", &self.dim).field("layers", &self.layers.len()).finish()
    }
}

impl BertEmbedder {
    /// Loads all-MiniLM-L6-v2 from its directory (`config.json`, `tokenizer.json`,
    /// `model.safetensors`), checking the weights' SHA-256.
    pub fn load(dir: &Path) -> Result<Self> {
        super::threads::pin_cpu_threads();
        let weights = dir.join("model.safetensors");
        super::verify_sha256(&weights, MINILM_SHA256, "minilm")?;
        let cfg: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).map_err(|e| Error::io(dir.join("config.json"), e))?)
            .map_err(|e| Error::corrupt_from(dir.join("config.json"), "invalid JSON", e))?;
        if cfg.hidden_act != "gelu" || cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::corrupt(dir.join("config.json"), format!("not a BERT this forward computes ({cfg:?})")));
        }
        let mut tok =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| Error::model_from(format!("tokenizer in {}", dir.display()), e))?;
        // The file asks for fixed padding; we pad (and mask) ourselves.
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| Error::model_from("tokenizer", e))?;
        let device = Device::Cpu;
        // SAFETY: the weights file is not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let e = vb.pp("embeddings");
        let word = e.get((e.get_unchecked("word_embeddings.weight")?.dim(0)?, d), "word_embeddings.weight")?;
        let position = e.get((cfg.max_position_embeddings, d), "position_embeddings.weight")?;
        let token_type = e.get((2, d), "token_type_embeddings.weight")?.get(0)?;
        let ln_embed = LayerNorm::load(e.pp("LayerNorm"), d, eps)?;
        let scale = 1.0 / ((d / cfg.num_attention_heads) as f64).sqrt();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention.self");
                let (q, k, v) = (Linear::load(a.pp("query"), d, d)?, Linear::load(a.pp("key"), d, d)?, Linear::load(a.pp("value"), d, d)?);
                let qkv = Linear { w: Tensor::cat(&[(q.w * scale)?, k.w, v.w], 0)?, b: Tensor::cat(&[(q.b * scale)?, k.b, v.b], 0)? };
                Ok(Layer {
                    qkv,
                    out: Linear::load(l.pp("attention.output.dense"), d, d)?,
                    ln_attn: LayerNorm::load(l.pp("attention.output.LayerNorm"), d, eps)?,
                    up: Linear::load(l.pp("intermediate.dense"), cfg.intermediate_size, d)?,
                    down: Linear::load(l.pp("output.dense"), d, cfg.intermediate_size)?,
                    ln_out: LayerNorm::load(l.pp("output.LayerNorm"), d, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { word, position, token_type, ln_embed, layers, tok, dim: d, heads: cfg.num_attention_heads, intermediate: cfg.intermediate_size, device })
    }

    /// Token ids of each text, cut at [`MAX_TOKENS`].
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self.tok.encode_batch(texts.to_vec(), true).map_err(|e| Error::model_from("tokenizer", e))?;
        Ok(encs.iter().map(|e| e.get_ids().iter().copied().take(MAX_TOKENS).collect()).collect())
    }

    /// How many texts of `t` tokens (padded) one forward takes: at most [`BATCH`], and
    /// few enough that the attention scores (texts x heads x t x t) and the feed-forward
    /// activations (texts x t x intermediate) stay under [`MAX_TEMP_ELEMS`].
    fn batch_for(&self, t: usize) -> usize {
        let t = t.max(1);
        let per_text = (self.heads * t * t).max(self.intermediate * t);
        (MAX_TEMP_ELEMS / per_text).clamp(1, BATCH)
    }

    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(if activation::wanted(x) { x.apply_op1_no_bwd(&FastActivation(Activation::GeluErf))? } else { x.gelu_erf()? })
    }

    /// Mean-pooled, normalised last hidden states of a batch of token-id rows.
    fn embed_batch(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let t = ids.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
        let b = ids.len();
        let (d, h) = (self.dim, self.heads);
        let dh = d / h;
        let mut flat = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        let mut bias = vec![f32::MIN; b * t];
        for (i, row) in ids.iter().enumerate() {
            flat[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()].iter_mut().for_each(|m| *m = 1.0);
            bias[i * t..i * t + row.len()].iter_mut().for_each(|m| *m = 0.0);
        }
        let input = Tensor::from_vec(flat, b * t, &self.device)?;
        // Padded keys get a score of f32::MIN: no weight in the softmax.
        let key_bias = Tensor::from_vec(bias, (b, 1, 1, t), &self.device)?;
        let pos = self.position.narrow(0, 0, t)?;
        let x = self.word.index_select(&input, 0)?.reshape((b, t, d))?.broadcast_add(&pos)?.broadcast_add(&self.token_type)?;
        let mut x = self.ln_embed.forward(&x.reshape((b * t, d))?)?;
        for l in &self.layers {
            let qkv = l.qkv.forward(&x)?.reshape((b, t, 3, h, dh))?;
            let part = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()?) };
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            let scores = q.matmul(&k.t()?)?.broadcast_add(&key_bias)?;
            let p = ops::softmax(&scores, Kernels::Fast)?;
            let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((b * t, d))?;
            x = l.ln_attn.forward(&(l.out.forward(&ctx)? + &x)?)?;
            let ff = l.down.forward(&self.gelu(&l.up.forward(&x)?)?)?;
            x = l.ln_out.forward(&(ff + &x)?)?;
        }
        let hs = x.reshape((b, t, d))?;
        let m = Tensor::from_vec(mask, (b, t, 1), &self.device)?;
        let pooled = hs.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?;
        Ok(super::normalize_rows(&pooled)?.to_vec2()?)
    }
}

impl Embedder for BertEmbedder {
    fn embed(&self, texts: &[&str], _kind: Kind) -> Result<Vec<Vec<f32>>> {
        // Batches of similar lengths: a batch is padded to its longest text, and texts
        // in input order put a long one in nearly every batch (Debian descriptions: median
        // 64 tokens, cut at 256). Sorted by length, a batch pads to within a few tokens.
        let ids = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut chunks = Vec::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let (chunk, next) = rest.split_at(self.batch_for(ids[rest[0]].len()).min(rest.len()));
            chunks.push(chunk);
            rest = next;
        }
        // Batches run side by side on rayon's pool. Each product of a batch also splits
        // across the pool, and with every thread busy those pieces stay on the thread
        // that made them: the threads stop waiting for each other between the many small
        // products of one batch (attention's are per head), about 15% of the time when
        // batches ran one after the other. Batches are independent and a product's split
        // depends on the thread count only, so the vectors are the same either way.
        let vectors: Vec<Vec<Vec<f32>>> = chunks
            .par_iter()
            .map(|chunk| {
                let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                self.embed_batch(&batch)
            })
            .collect::<Result<_>>()?;
        let mut out = vec![Vec::new(); texts.len()];
        for (chunk, vs) in chunks.iter().zip(vectors) {
            for (&i, v) in chunk.iter().zip(vs) {
                out[i] = v;
            }
        }
        Ok(out)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn fingerprint(&self) -> String {
        format!("minilm-l6-v2:{}:t{MAX_TOKENS}", &MINILM_SHA256[..16])
    }
    fn spec(&self) -> Option<String> {
        Some("minilm".into())
    }
}
