//! Building a decoder: reading a GGUF's hyper-parameters and weights, and cutting a
//! loaded model to its first blocks.

use super::*;

/// Longest sequence a decoder accepts, whatever its GGUF allows (memory for the masks).
const MAX_POSITIONS: usize = 8192;

impl Decoder {
    /// Loads a llama or qwen2 GGUF, dequantising every weight to `dtype` on `device`
    /// (f32 on CPU; f16/bf16 are for GPUs).
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        crate::embed::threads::pin_cpu_threads();
        let mut g = Gguf::open(path)?;
        let arch_name = g.meta_str("general.architecture")?.to_string();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma3" => Arch::Gemma3,
            other => return Err(Error::model(format!("{}: architecture `{other}` is not supported (llama, qwen2, gemma3)", path.display()))),
        };
        let a = |k: &str| format!("{arch_name}.{k}");
        let hidden = g.meta_u32(&a("embedding_length"))? as usize;
        let heads = g.meta_u32(&a("attention.head_count"))? as usize;
        let tok_embd = g.tensor("token_embd.weight", device, dtype)?;
        let gemma = arch == Arch::Gemma3;
        let cfg = DecoderConfig {
            arch,
            hidden,
            layers: g.meta_u32(&a("block_count"))? as usize,
            heads,
            kv_heads: g.meta_u32(&a("attention.head_count_kv"))? as usize,
            head_dim: g.meta_u32(&a("attention.key_length")).map(|v| v as usize).unwrap_or(hidden / heads),
            rope_base: g.meta_f32(&a("rope.freq_base")).unwrap_or(10_000.0),
            eps: g.meta_f32(&a("attention.layer_norm_rms_epsilon"))? as f64,
            vocab: tok_embd.dim(0)?,
            max_positions: (g.meta_u32(&a("context_length")).unwrap_or(4096) as usize).min(MAX_POSITIONS),
            embed_scale: if gemma { (hidden as f64).sqrt() } else { 1.0 },
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            sliding_window: if gemma { Some(g.meta_u32(&a("attention.sliding_window"))? as usize) } else { None },
            // Not stored in the GGUF; Gemma3's config has sliding_window_pattern = 6.
            sliding_pattern: g.meta_u32(&a("attention.sliding_window_type")).map(|v| v as usize).unwrap_or(6),
            rope_base_local: g.meta_f32(&a("rope.local_freq_base")).unwrap_or(10_000.0),
        };
        let output = if g.has_tensor("output.weight") { g.tensor("output.weight", device, dtype)? } else { tok_embd.clone() };
        let norm = g.tensor("output_norm.weight", device, dtype)?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let mut t = |n: &str| g.tensor(&format!("blk.{i}.{n}"), device, dtype);
            let bias = match arch {
                Arch::Qwen2 => Some((t("attn_q.bias")?, t("attn_k.bias")?, t("attn_v.bias")?)),
                _ => None,
            };
            let (qk_norm, post_norms) = if gemma {
                (Some((t("attn_q_norm.weight")?, t("attn_k_norm.weight")?)), Some((t("post_attention_norm.weight")?, t("post_ffw_norm.weight")?)))
            } else {
                (None, None)
            };
            blocks.push(Block {
                attn_norm: t("attn_norm.weight")?,
                wq: t("attn_q.weight")?,
                wk: t("attn_k.weight")?,
                wv: t("attn_v.weight")?,
                bias,
                qk_norm,
                post_norms,
                sliding: cfg.sliding_window.is_some() && (i + 1) % cfg.sliding_pattern != 0,
                wo: t("attn_output.weight")?,
                ffn_norm: t("ffn_norm.weight")?,
                w_gate: t("ffn_gate.weight")?,
                w_up: t("ffn_up.weight")?,
                w_down: t("ffn_down.weight")?,
                packed: Default::default(),
                bf16: Default::default(),
                int8: Default::default(),
            });
        }
        let (cos, sin) = rope_tables(cfg.head_dim, cfg.rope_base, cfg.max_positions, device, dtype)?;
        let local = match cfg.sliding_window {
            Some(_) => Some(rope_tables(cfg.head_dim, cfg.rope_base_local, cfg.max_positions, device, dtype)?),
            None => None,
        };
        Ok(Self { cfg, tok_embd, output, norm, blocks, cos, sin, local, device: device.clone(), dtype })
    }

    /// The same model cut after its first `n` blocks: the final norm then reads block
    /// `n`'s output. Shares the weights (tensors are reference-counted); the fast paths'
    /// copies of the kept blocks are built again on first use.
    pub fn first_blocks(&self, n: usize) -> Result<Decoder> {
        if n == 0 || n > self.blocks.len() {
            return Err(Error::invalid(format!("{n} blocks asked of a decoder with {} (1 to {})", self.blocks.len(), self.blocks.len())));
        }
        let blocks = self.blocks[..n]
            .iter()
            .map(|b| Block {
                attn_norm: b.attn_norm.clone(),
                wq: b.wq.clone(),
                wk: b.wk.clone(),
                wv: b.wv.clone(),
                bias: b.bias.clone(),
                qk_norm: b.qk_norm.clone(),
                post_norms: b.post_norms.clone(),
                sliding: b.sliding,
                wo: b.wo.clone(),
                ffn_norm: b.ffn_norm.clone(),
                w_gate: b.w_gate.clone(),
                w_up: b.w_up.clone(),
                w_down: b.w_down.clone(),
                packed: Default::default(),
                bf16: Default::default(),
                int8: Default::default(),
            })
            .collect();
        let cfg = DecoderConfig { layers: n, ..self.cfg.clone() };
        Ok(Decoder {
            cfg,
            tok_embd: self.tok_embd.clone(),
            output: self.output.clone(),
            norm: self.norm.clone(),
            blocks,
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            local: self.local.clone(),
            device: self.device.clone(),
            dtype: self.dtype,
        })
    }
}

fn rope_tables(head_dim: usize, base: f32, n: usize, device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim / 2).map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32)).collect();
    let inv = Tensor::from_vec(inv, (1, head_dim / 2), device)?;
    let pos = Tensor::arange(0u32, n as u32, device)?.to_dtype(DType::F32)?.reshape((n, 1))?;
    let f = pos.broadcast_mul(&inv)?;
    Ok((f.cos()?.to_dtype(dtype)?.contiguous()?, f.sin()?.to_dtype(dtype)?.contiguous()?))
}
