//! all-MiniLM-L6-v2 through candle-transformers' BERT: the classic sentence-embedding
//! baseline (mean pooling over real tokens, L2-normalised).

use super::{Embedder, Kind};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;

/// SHA-256 of the pinned `model.safetensors` (ARCHITECTURE.md, "Models").
const MINILM_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// The length all-MiniLM-L6-v2 was trained with.
const MAX_TOKENS: usize = 256;
/// Texts per forward.
const BATCH: usize = 32;

/// A BERT sentence embedder (all-MiniLM-L6-v2).
pub struct BertEmbedder {
    model: BertModel,
    tok: tokenizers::Tokenizer,
    dim: usize,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder").field("dim", &self.dim).finish()
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
        let mut tok =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| Error::model_from(format!("tokenizer in {}", dir.display()), e))?;
        // The file asks for fixed padding; we pad (and mask) ourselves.
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| Error::model_from("tokenizer", e))?;
        let device = Device::Cpu;
        // SAFETY: the weights file is not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &cfg)?;
        Ok(Self { model, tok, dim: cfg.hidden_size, device })
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encs = self.tok.encode_batch(texts.to_vec(), true).map_err(|e| Error::model_from("tokenizer", e))?;
        let ids: Vec<Vec<u32>> = encs.iter().map(|e| e.get_ids().iter().copied().take(MAX_TOKENS).collect()).collect();
        let t = ids.iter().map(Vec::len).max().unwrap_or(1);
        let b = ids.len();
        let mut flat = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, row) in ids.iter().enumerate() {
            flat[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()].iter_mut().for_each(|m| *m = 1.0);
        }
        let input = Tensor::from_vec(flat, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let h = self.model.forward(&input, &input.zeros_like()?, Some(&mask.to_dtype(DType::U32)?))?;
        let m = mask.unsqueeze(2)?;
        let pooled = h.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norm)?.to_vec2()?)
    }
}

impl Embedder for BertEmbedder {
    fn embed(&self, texts: &[&str], _kind: Kind) -> Result<Vec<Vec<f32>>> {
        // Batches of similar lengths: a batch is padded to its longest text, and texts
        // in input order put a long one in nearly every batch (Debian descriptions: median
        // 64 tokens, cut at 256). Sorted by length, a batch pads to within a few tokens.
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, v) in chunk.iter().zip(self.embed_batch(&batch)?) {
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
