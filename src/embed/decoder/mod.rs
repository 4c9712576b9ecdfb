//! Decoder LLMs (llama: SmolLM2, qwen2: Qwen2.5, gemma3: Gemma3) with our own forward: input is token
//! embeddings (so soft tokens can be fed), output is every last-layer hidden state,
//! logits on request; batches are left-padded; a KV cache serves step-by-step
//! decoding. Two paths, [`Kernels::Fast`] (fused ops) and [`Kernels::Differentiable`]
//! (ops with a backward; frozen weights get no gradient).
//!
//! candle-transformers' quantized models return last-token logits from token ids and
//! keep their weights private, hence this forward (ARCHITECTURE.md, "What we learned about candle").

pub mod activation;
pub mod amx;
pub mod attention;
pub mod bf16;
mod cache;
pub mod fresh;
pub mod int8;
mod load;
pub mod lora;
pub mod norm;
pub mod ops;
pub mod packed;
pub mod rotary;
pub mod skinny;
mod unpadded;

pub use cache::KvCache;
use lora::{Lora, Target};

use super::gguf::Gguf;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use packed::{PackedMatmul, PackedWeight};
use std::path::Path;
use std::sync::OnceLock;

/// Which implementation of the ops to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Fused kernels, no backward: inference.
    Fast,
    /// Differentiable ops: gradients flow to the input embeddings.
    Differentiable,
}

/// Model family, from `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama (SmolLM2): interleaved rotary embeddings in GGUF, no biases.
    Llama,
    /// Qwen2 (Qwen2.5): NeoX rotary layout, q/k/v biases.
    Qwen2,
    /// Gemma3: scaled input embeddings, per-head q/k norms, norms after attention
    /// and MLP too, GELU MLP, sliding-window layers with their own rotary base.
    Gemma3,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (llama, qwen2).
    Silu,
    /// GELU, tanh approximation (gemma3's `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU, exact (`x Phi(x)` with the error function: BERT's `gelu`); not a decoder's,
    /// but computed by the same fast kernels (`activation.rs`).
    GeluErf,
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Family.
    pub arch: Arch,
    /// Hidden size d.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Rotary base.
    pub rope_base: f32,
    /// RMS norm epsilon.
    pub eps: f64,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence the rotary tables cover.
    pub max_positions: usize,
    /// Input embeddings are the token-embedding rows times this (sqrt(d) for gemma3).
    pub embed_scale: f64,
    /// MLP gate activation.
    pub activation: Activation,
    /// Window of the sliding-window layers, if any.
    pub sliding_window: Option<usize>,
    /// Every `sliding_pattern`-th layer is global, the others slide (gemma3: 6).
    pub sliding_pattern: usize,
    /// Rotary base of the sliding-window layers.
    pub rope_base_local: f32,
}

struct Block {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    bias: Option<(Tensor, Tensor, Tensor)>,
    qk_norm: Option<(Tensor, Tensor)>,
    post_norms: Option<(Tensor, Tensor)>,
    sliding: bool,
    wo: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    /// Byte-per-weight copies of the seven projections for few-row products, built on
    /// first use (`None` for a matrix that is not of the packed form).
    packed: [OnceLock<Option<PackedWeight>>; 7],
    /// Bfloat16 copies of the seven projections for many-row products when that
    /// precision is asked for (`bf16.rs`), built on first use.
    bf16: [OnceLock<bf16::Bf16Weight>; 7],
    /// Panels of the file's codes for many-row products in the `int8` precision
    /// (`int8.rs`), built on first use from the packed copy (`None` where there is none).
    int8: [OnceLock<Option<int8::Int8Weight>>; 7],
}

impl Block {
    /// The frozen weight of a projection (out, in).
    fn weight(&self, t: Target) -> &Tensor {
        match t {
            Target::Q => &self.wq,
            Target::K => &self.wk,
            Target::V => &self.wv,
            Target::O => &self.wo,
            Target::Gate => &self.w_gate,
            Target::Up => &self.w_up,
            Target::Down => &self.w_down,
        }
    }

    /// The bfloat16 copy of a projection, built on first use.
    fn bf16(&self, t: Target) -> Result<&bf16::Bf16Weight> {
        if let Some(w) = self.bf16[t as usize].get() {
            return Ok(w);
        }
        let w = self.weight(t);
        let (out, inn) = w.dims2()?;
        let packed = bf16::Bf16Weight::new(&w.flatten_all()?.to_vec1::<f32>()?, out, inn);
        Ok(self.bf16[t as usize].get_or_init(|| packed))
    }

    /// The int8 panels of a projection, built on first use.
    fn int8(&self, t: Target) -> Option<&int8::Int8Weight> {
        self.int8[t as usize].get_or_init(|| self.packed(t).map(int8::Int8Weight::new)).as_ref()
    }

    /// The packed copy of a projection, built on first use.
    fn packed(&self, t: Target) -> Option<&PackedWeight> {
        self.packed[t as usize]
            .get_or_init(|| {
                let w = self.weight(t);
                let (out, inn) = w.dims2().ok()?;
                PackedWeight::exact(&w.flatten_all().ok()?.to_vec1::<f32>().ok()?, out, inn)
            })
            .as_ref()
    }
}

/// A decoder LLM with weights dequantised on a device.
pub struct Decoder {
    cfg: DecoderConfig,
    tok_embd: Tensor,
    output: Tensor,
    norm: Tensor,
    blocks: Vec<Block>,
    cos: Tensor,
    sin: Tensor,
    /// Rotary tables of the sliding-window layers (gemma3).
    local: Option<(Tensor, Tensor)>,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("cfg", &self.cfg).field("device", &self.device).finish()
    }
}

impl Decoder {
    /// Overrides the MLP activation; only for checking this forward against
    /// implementations that use another one (candle's quantized gemma3 uses SiLU).
    pub fn set_activation(&mut self, a: Activation) {
        self.cfg.activation = a;
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Weights used in matrix products per token (the blocks' projections; the
    /// embedding lookup is not a product): a forward costs about twice this in FLOPs
    /// per token, plus attention.
    pub fn matmul_params(&self) -> usize {
        self.blocks.iter().map(|b| [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down].iter().map(|t| t.elem_count()).sum::<usize>()).sum()
    }

    /// How many projections have a byte-per-weight copy for few-row products (built by
    /// the first such product; see [`packed`]). A diagnostic for tests and benchmarks.
    pub fn packed_projections(&self) -> usize {
        self.blocks.iter().flat_map(|b| b.packed.iter()).filter(|p| matches!(p.get(), Some(Some(_)))).count()
    }

    /// SHA-256 (hex) over every weight of the model, in a fixed order: equal digests mean
    /// bit-identical weights (training checks that a frozen model stayed frozen).
    pub fn weights_digest(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut eat = |t: &Tensor| -> Result<()> {
            for x in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
                h.update(x.to_le_bytes());
            }
            Ok(())
        };
        for t in [&self.tok_embd, &self.output, &self.norm] {
            eat(t)?;
        }
        for b in &self.blocks {
            for t in [&b.attn_norm, &b.wq, &b.wk, &b.wv, &b.wo, &b.ffn_norm, &b.w_gate, &b.w_up, &b.w_down] {
                eat(t)?;
            }
            for (x, y, z) in b.bias.iter() {
                eat(x)?;
                eat(y)?;
                eat(z)?;
            }
            for (x, y) in b.qk_norm.iter().chain(b.post_norms.iter()) {
                eat(x)?;
                eat(y)?;
            }
        }
        Ok(super::hex(&h.finalize()))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The token-embedding matrix (vocab, hidden). Input embeddings are its rows
    /// times [`DecoderConfig::embed_scale`].
    pub fn token_embeddings(&self) -> &Tensor {
        &self.tok_embd
    }

    /// Input embeddings of token ids (b, t) -> (b, t, hidden), scaled as the model
    /// expects its inputs.
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let e = self.tok_embd.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden))?;
        Ok(if self.cfg.embed_scale != 1.0 { (e * self.cfg.embed_scale)? } else { e })
    }

    /// A left-padded batch of token-id sequences: ids (b, t) padded with `pad` on the
    /// left, and the padding count of each row.
    pub fn pad_left(&self, seqs: &[Vec<u32>], pad: u32) -> Result<(Tensor, Vec<usize>)> {
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(seqs.len() * t);
        let mut pads = Vec::with_capacity(seqs.len());
        for s in seqs {
            pads.push(t - s.len());
            flat.extend(std::iter::repeat_n(pad, t - s.len()));
            flat.extend_from_slice(s);
        }
        Ok((Tensor::from_vec(flat, (seqs.len(), t), &self.device)?, pads))
    }

    /// A fresh cache for a batch with these left paddings.
    pub fn new_cache(&self, left_pad: &[usize]) -> KvCache {
        KvCache { layers: vec![None; self.cfg.layers], left_pad: left_pad.to_vec(), pad_at: 0, len: 0 }
    }

    /// Runs the decoder over `embeds` (b, t, hidden) and returns the final-normed
    /// last-layer hidden state of every position (b, t, hidden).
    ///
    /// Rows are left-padded by `left_pad[i]` positions, which no real token attends
    /// to and which do not count towards positions. With a cache, `embeds` continues
    /// the cached sequence (then `left_pad` must be the cache's).
    pub fn forward(&self, embeds: &Tensor, left_pad: &[usize], cache: Option<&mut KvCache>, path: Kernels) -> Result<Tensor> {
        self.forward_adapted(embeds, left_pad, cache, path, None)
    }

    /// [`Decoder::forward`] with low-rank adapters on the blocks' projections; on
    /// [`Kernels::Differentiable`] gradients reach the adapters' `A` and `B`.
    pub fn forward_adapted(&self, embeds: &Tensor, left_pad: &[usize], cache: Option<&mut KvCache>, path: Kernels, lora: Option<&Lora>) -> Result<Tensor> {
        self.forward_inner(embeds, left_pad, cache, path, lora, None, &mut [])
    }

    /// The final hidden states of the last `n` positions only, (b, n, d): what a caller
    /// that pools only over the end of each row (soft tokens after the text, or the last
    /// token, with left padding) reads. The last block computes its queries, attention
    /// output and MLP for those positions alone (its keys and values still cover every
    /// position), which saves most of one block of work. On the CPU, when every row holds
    /// its `n` positions, the batch's padding is skipped altogether (`unpadded.rs`): the
    /// rows' real positions run as one sequence, and attention row by row.
    pub fn forward_tail(&self, embeds: &Tensor, left_pad: &[usize], path: Kernels, lora: Option<&Lora>, n: usize) -> Result<Tensor> {
        let t = embeds.dim(1)?;
        if n == 0 || n > t {
            return Err(Error::invalid(format!("forward_tail of {n} positions in a sequence of {t}")));
        }
        self.forward_inner(embeds, left_pad, None, path, lora, Some(n), &mut [])
    }

    /// [`Decoder::forward_tail`] read after several blocks: for each count in `blocks`
    /// (1 to the model's depth, in any order), the states of the last `n` positions after
    /// that many blocks, through the final norm, (b, n, d) each. One forward computes
    /// them all, so reading earlier blocks costs nothing beyond the norm. A readout over
    /// several depths reads these (see `embed::prompt::readout`).
    pub fn forward_tail_at(&self, embeds: &Tensor, left_pad: &[usize], path: Kernels, lora: Option<&Lora>, n: usize, blocks: &[usize]) -> Result<Vec<Tensor>> {
        let t = embeds.dim(1)?;
        if n == 0 || n > t {
            return Err(Error::invalid(format!("forward_tail of {n} positions in a sequence of {t}")));
        }
        if let Some(&bad) = blocks.iter().find(|&&k| k == 0 || k > self.blocks.len()) {
            return Err(Error::invalid(format!("states after block {bad} asked of a decoder with {} (1 to {})", self.blocks.len(), self.blocks.len())));
        }
        let mut reads: Vec<(usize, Option<Tensor>)> = blocks.iter().map(|&k| (k, None)).collect();
        let last = self.forward_inner(embeds, left_pad, None, path, lora, Some(n), &mut reads)?;
        reads.into_iter().map(|(_, s)| s.map_or_else(|| Ok(last.clone()), Ok)).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_inner(
        &self,
        embeds: &Tensor,
        left_pad: &[usize],
        cache: Option<&mut KvCache>,
        path: Kernels,
        lora: Option<&Lora>,
        tail: Option<usize>,
        reads: &mut [(usize, Option<Tensor>)],
    ) -> Result<Tensor> {
        if let Some(l) = lora {
            if l.layer_count() != self.blocks.len() {
                return Err(Error::model(format!("adapters for {} blocks, model has {}", l.layer_count(), self.blocks.len())));
            }
        }
        let (b, t, d) = embeds.dims3()?;
        if d != self.cfg.hidden || left_pad.len() != b {
            return Err(Error::Dimension { expected: self.cfg.hidden, found: d });
        }
        if let Some(c) = &cache {
            if c.left_pad != left_pad {
                return Err(Error::invalid("left padding differs from the cache's"));
            }
        }
        if let (Kernels::Fast, None, None, Some(n)) = (path, &cache, lora, tail) {
            if unpadded::wanted(&self.device, t, left_pad, n) {
                return self.forward_unpadded(embeds, left_pad, n, reads);
            }
        }
        let past = cache.as_ref().map_or(0, |c| c.len);
        let pad_at = cache.as_ref().map_or(0, |c| c.pad_at);
        if past + t > self.cfg.max_positions {
            return Err(Error::invalid(format!("sequence of {} positions exceeds the model's {}", past + t, self.cfg.max_positions)));
        }
        // Positions count real tokens only (padding sits at `pad_at`, before each row's
        // first token of this chunk or of the cached sequence); pads get some position,
        // which is harmless since nothing sees them.
        let pos: Vec<u32> = (0..b).flat_map(|i| (past..past + t).map(move |j| j.saturating_sub(left_pad[i]) as u32)).collect();
        let pos = Tensor::from_vec(pos, b * t, &self.device)?;
        let hd2 = self.cfg.head_dim / 2;
        let table = |(c, s): (&Tensor, &Tensor)| -> Result<(Tensor, Tensor)> {
            Ok((c.index_select(&pos, 0)?.reshape((b, t, hd2))?, s.index_select(&pos, 0)?.reshape((b, t, hd2))?))
        };
        let global = table((&self.cos, &self.sin))?;
        let local = match &self.local {
            Some((c, s)) => Some(table((c, s))?),
            None => None,
        };
        let global_mask = self.mask(b, t, past, pad_at, left_pad, None)?;
        let local_mask = match self.cfg.sliding_window {
            Some(w) => Some(self.mask(b, t, past, pad_at, left_pad, Some(w))?),
            None => None,
        };
        let mut cache = cache;
        let mut x = embeds.clone();
        for (li, blk) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[li]);
            let (rope, mask) = match (blk.sliding, &local, &local_mask) {
                (true, Some(r), Some(m)) => (r, m),
                _ => (&global, &global_mask),
            };
            let last = (li + 1 == self.blocks.len()).then_some(tail).flatten();
            x = self.block(blk, li, lora, &x, &rope.0, &rope.1, mask, slot, path, last)?;
            // States read before the last block: the tail positions, through the final
            // norm as the last block's are (the last block's come from the return value).
            if li + 1 < self.blocks.len() && reads.iter().any(|(k, _)| *k == li + 1) {
                let n = tail.unwrap_or(t);
                let h = ops::rms_norm(&x.narrow(1, t - n, n)?, &self.norm, self.cfg.eps, path)?;
                reads.iter_mut().filter(|(k, _)| *k == li + 1).for_each(|(_, s)| *s = Some(h.clone()));
            }
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok(ops::rms_norm(&x, &self.norm, self.cfg.eps, path)?)
    }

    /// Additive attention mask (b, 1, t, past + t): a query sees earlier non-pad keys
    /// (row i's pads are `pad_at..pad_at + left_pad[i]`), within `window` positions when
    /// given; a pad query sees itself, since a row of -inf only would make softmax NaN.
    fn mask(&self, b: usize, t: usize, past: usize, pad_at: usize, left_pad: &[usize], window: Option<usize>) -> Result<Tensor> {
        let total = past + t;
        let mut mask = vec![0f32; b * t * total];
        for (i, &pad) in left_pad.iter().enumerate() {
            // Position of a real index: the pads before it do not count.
            let position = |k: usize| if k >= pad_at + pad { k - pad } else { k };
            for q in 0..t {
                let qa = past + q;
                for k in 0..total {
                    let is_pad = (pad_at..pad_at + pad).contains(&k);
                    let visible = k <= qa && !is_pad && window.is_none_or(|w| position(qa) - position(k) <= w);
                    if !(visible || k == qa) {
                        mask[(i * t + q) * total + k] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(mask, (b, 1, t, total), &self.device)?.to_dtype(self.dtype)?)
    }

    /// A projection of block `li`: the frozen product (in the precision and kernel the
    /// input's rows call for), plus the adapter's update when there is one.
    fn project(&self, blk: &Block, li: usize, lora: Option<&Lora>, x: &Tensor, t: Target, path: Kernels) -> Result<Tensor> {
        let int8 = if path == Kernels::Fast && int8::wanted(x) { blk.int8(t) } else { None };
        let y = if let Some(w) = int8 {
            x.contiguous()?.apply_op1_no_bwd(&int8::Int8Matmul(w))?
        } else if path == Kernels::Fast && bf16::wanted(x) {
            x.contiguous()?.apply_op1_no_bwd(&bf16::Bf16Matmul(blk.bf16(t)?))?
        } else {
            let packed = if path == Kernels::Fast && packed::wanted(x) { blk.packed(t) } else { None };
            match packed {
                Some(p) => x.contiguous()?.apply_op1_no_bwd(&PackedMatmul(p))?,
                None => ops::linear(x, blk.weight(t), path)?,
            }
        };
        Ok(match lora.map(|l| l.delta(li, t, x, path)).transpose()?.flatten() {
            Some(d) => (y + d)?,
            None => y,
        })
    }

    /// A block's queries (b, heads, t, head_dim), keys and values (b, kv_heads, t,
    /// head_dim, contiguous) of `x` (b, t, d): normed, projected, rotated.
    #[allow(clippy::too_many_arguments)]
    fn qkv(&self, blk: &Block, li: usize, lora: Option<&Lora>, x: &Tensor, cos: &Tensor, sin: &Tensor, path: Kernels) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let h = ops::rms_norm(x, &blk.attn_norm, c.eps, path)?;
        let proj = |t| self.project(blk, li, lora, &h, t, path);
        let (mut q, mut k, mut v) = (proj(Target::Q)?, proj(Target::K)?, proj(Target::V)?);
        if let Some((bq, bk, bv)) = &blk.bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        let q = q.reshape((b, t, c.heads, c.head_dim))?;
        let k = k.reshape((b, t, c.kv_heads, c.head_dim))?;
        // The per-head norms before the heads move in front of the positions: a head's
        // values are the same either way, and the norm reads them in place. The rotary
        // embedding then reads the moved view and writes the new layout (one pass).
        let (q, k) = match &blk.qk_norm {
            Some((qn, kn)) => (ops::rms_norm(&q, qn, c.eps, path)?, ops::rms_norm(&k, kn, c.eps, path)?),
            None => (q, k),
        };
        let (q, k) = (q.transpose(1, 2)?, k.transpose(1, 2)?);
        let v = v.reshape((b, t, c.kv_heads, c.head_dim))?.transpose(1, 2)?.contiguous()?;
        let interleaved = c.arch == Arch::Llama;
        Ok((ops::rope(&q, cos, sin, interleaved, path)?, ops::rope(&k, cos, sin, interleaved, path)?, v))
    }

    /// The rest of a block after attention: `y` (b, t, heads x head_dim) through the
    /// output projection and its norm, added to `x` (b, t, d), then the MLP and its
    /// residual.
    fn finish(&self, blk: &Block, li: usize, lora: Option<&Lora>, x: &Tensor, y: &Tensor, path: Kernels) -> Result<Tensor> {
        let c = &self.cfg;
        let attn = self.project(blk, li, lora, y, Target::O, path)?;
        let x = match &blk.post_norms {
            Some((post_attn, _)) => ops::add_rms_norm(x, &attn, post_attn, c.eps, path)?,
            None => (x + attn)?,
        };
        let h = ops::rms_norm(&x, &blk.ffn_norm, c.eps, path)?;
        let gate = self.project(blk, li, lora, &h, Target::Gate, path)?;
        let up = self.project(blk, li, lora, &h, Target::Up, path)?;
        let gated = match c.activation {
            a if path == Kernels::Fast && activation::wanted(&gate) => gate.contiguous()?.apply_op2_no_bwd(&up.contiguous()?, &activation::GatedProduct(a))?,
            Activation::Silu => (gate.silu()? * up)?,
            Activation::GeluTanh => (gate.gelu()? * up)?,
            Activation::GeluErf => (gate.gelu_erf()? * up)?,
        };
        let mlp = self.project(blk, li, lora, &gated, Target::Down, path)?;
        Ok(match &blk.post_norms {
            Some((_, post_ffn)) => ops::add_rms_norm(&x, &mlp, post_ffn, c.eps, path)?,
            None => (&x + mlp)?,
        })
    }

    /// Grouped-query attention of queries `q` (b, heads, tq, hd) over keys and values
    /// (b, kv_heads, tk, hd) with an additive mask broadcast to (b, heads, tq, tk):
    /// (b, tq, heads x hd). The `rep` query heads of a kv head become rows of one
    /// product (head h uses kv head h / rep, as in repeat_kv), so k and v are not copied
    /// per query head.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, path: Kernels) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, _, t, _) = q.dims4()?;
        let rep = c.heads / c.kv_heads;
        let total = k.dim(2)?;
        let q = q.contiguous()?.reshape((b, c.kv_heads, rep * t, c.head_dim))?;
        let att = (q.matmul(&k.contiguous()?.t()?)? / (c.head_dim as f64).sqrt())?;
        let att = att.reshape((b, c.heads, t, total))?.broadcast_add(mask)?;
        let att = ops::softmax(&att, path)?.reshape((b, c.kv_heads, rep * t, total))?;
        let y = att.matmul(&v.contiguous()?)?.reshape((b, c.heads, t, c.head_dim))?;
        Ok(y.transpose(1, 2)?.reshape((b, t, c.heads * c.head_dim))?)
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        blk: &Block,
        li: usize,
        lora: Option<&Lora>,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        path: Kernels,
        tail: Option<usize>,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let (q, k, v) = self.qkv(blk, li, lora, x, cos, sin, path)?;
        // Only the last `tail` positions' outputs are read: their queries alone attend.
        let (q, mask, x) = match tail {
            Some(n) if n < t => (q.narrow(2, t - n, n)?, mask.narrow(2, t - n, n)?, x.narrow(1, t - n, n)?),
            _ => (q, mask.clone(), x.clone()),
        };
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        let y = self.attend(&q, &k, &v, &mask, path)?;
        self.finish(blk, li, lora, &x, &y, path)
    }

    /// Next-token logits (..., vocab) from hidden states.
    pub fn logits(&self, hidden: &Tensor, path: Kernels) -> Result<Tensor> {
        Ok(ops::linear(hidden, &self.output, path)?)
    }

    /// Hidden state of each row's last position (b, hidden).
    pub fn last(hidden: &Tensor) -> Result<Tensor> {
        let t = hidden.dim(1)?;
        Ok(hidden.narrow(1, t - 1, 1)?.squeeze(1)?)
    }
}

/// The largest absolute element-wise difference of two tensors of one shape, as f32
/// (for comparing forwards against references).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(D::Minus1)?.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}
