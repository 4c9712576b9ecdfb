//! Low-rank adapters (LoRA) on a frozen decoder's projections.
//!
//! An adapted projection computes `x W^T + scale * (x A^T) B^T` with `A` (rank, in)
//! and `B` (out, rank), `scale = alpha / rank`. `B` starts at zero, so a fresh adapter
//! leaves the model unchanged; `A` starts uniform in `±1/sqrt(in)` (PEFT's default).
//! Only `A` and `B` are trainable: they are [`Var`]s, and the frozen weight's product
//! goes through [`super::ops::linear`], which computes no weight gradient.
//!
//! The adapters are not part of the [`super::Decoder`]: one loaded model can serve
//! as the adapted Prompting LLM and as the frozen Embedding LLM at the same time,
//! the adapters being passed to [`super::Decoder::forward_adapted`] by the caller.

use super::{Decoder, Kernels};
use crate::error::{Error, Result};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// A projection of a transformer block that an adapter can modify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Attention query projection.
    Q,
    /// Attention key projection.
    K,
    /// Attention value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
}

impl Target {
    const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Shape of a set of adapters; stored in a checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r of every adapter.
    pub rank: usize,
    /// Scaling numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f32,
    /// The projections adapted in every block.
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16, on the query and value projections (the LoRA paper's choice).
    fn default() -> Self {
        Self { rank: 8, alpha: 16.0, targets: vec![Target::Q, Target::V] }
    }
}

/// One adapter: `A` (rank, in), `B` (out, rank).
#[derive(Debug, Clone)]
struct Pair {
    a: Var,
    b: Var,
}

/// Adapters for every block of one decoder.
#[derive(Debug, Clone)]
pub struct Lora {
    cfg: LoraConfig,
    scale: f64,
    /// `layers[i][target.index()]`.
    layers: Vec<[Option<Pair>; 7]>,
}

impl Lora {
    /// Fresh adapters for `dec` (B = 0: the adapted model equals the frozen one),
    /// with `A` drawn from a generator seeded by `seed`.
    pub fn new(cfg: LoraConfig, dec: &Decoder, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let dev = dec.device();
        let rank = cfg.rank;
        Self::build(cfg, dec, |_, _, out_dim, in_dim| {
            let bound = 1.0 / (in_dim as f32).sqrt();
            let a: Vec<f32> = (0..rank * in_dim).map(|_| rng.random_range(-bound..bound)).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (rank, in_dim), dev)?)?;
            Ok(Pair { a, b: Var::zeros((out_dim, rank), DType::F32, dev)? })
        })
    }

    /// Adapters for every block and target of `cfg`, each pair made by
    /// `make(block, target, out, in)`.
    fn build(cfg: LoraConfig, dec: &Decoder, mut make: impl FnMut(usize, Target, usize, usize) -> Result<Pair>) -> Result<Self> {
        Self::check(&cfg)?;
        let mut layers = Vec::with_capacity(dec.blocks.len());
        for (i, blk) in dec.blocks.iter().enumerate() {
            let mut slots: [Option<Pair>; 7] = Default::default();
            for &t in &cfg.targets {
                let (out_dim, in_dim) = blk.weight(t).dims2()?;
                slots[t.index()] = Some(make(i, t, out_dim, in_dim)?);
            }
            layers.push(slots);
        }
        Ok(Self { scale: cfg.alpha as f64 / cfg.rank as f64, cfg, layers })
    }

    fn check(cfg: &LoraConfig) -> Result<()> {
        if cfg.rank == 0 {
            return Err(Error::invalid("LoRA rank must be at least 1"));
        }
        if cfg.targets.is_empty() {
            return Err(Error::invalid("LoRA needs at least one target projection"));
        }
        Ok(())
    }

    /// The shape of these adapters.
    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    /// The trainable tensors (every `A` and `B`), for an optimiser.
    pub fn vars(&self) -> Vec<Var> {
        self.pairs().flat_map(|(_, _, p)| [p.a.clone(), p.b.clone()]).collect()
    }

    /// The trainable tensors by their checkpoint names (see [`Lora::tensors`]).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.pairs()
            .flat_map(|(i, t, p)| [(format!("blk.{i}.{}.lora_a", t.name()), p.a.clone()), (format!("blk.{i}.{}.lora_b", t.name()), p.b.clone())])
            .collect()
    }

    fn pairs(&self) -> impl Iterator<Item = (usize, Target, &Pair)> {
        self.layers.iter().enumerate().flat_map(|(i, slots)| Target::ALL.iter().filter_map(move |&t| slots[t.index()].as_ref().map(|p| (i, t, p))))
    }

    /// The tensors by name, `blk.{i}.{target}.lora_a` / `.lora_b`, as stored in a
    /// checkpoint.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, t, p) in self.pairs() {
            out.insert(format!("blk.{i}.{}.lora_a", t.name()), p.a.as_tensor().clone());
            out.insert(format!("blk.{i}.{}.lora_b", t.name()), p.b.as_tensor().clone());
        }
        out
    }

    /// Writes the adapters as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors(), path)?;
        Ok(())
    }

    /// Reads adapters written by [`Lora::save`] for `dec`; every tensor the config
    /// calls for must be there with the right shape.
    pub fn load(cfg: LoraConfig, dec: &Decoder, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(cfg, dec, &bytes, path)
    }

    /// [`Lora::load`] from the bytes of such a file; `path` names it in errors.
    pub fn from_bytes(cfg: LoraConfig, dec: &Decoder, bytes: &[u8], path: &Path) -> Result<Self> {
        Self::check(&cfg)?;
        let mut tensors = candle_core::safetensors::load_buffer(bytes, dec.device()).map_err(|e| Error::corrupt_from(path, "unreadable safetensors", e))?;
        let rank = cfg.rank;
        let lora = Self::build(cfg, dec, |i, t, out_dim, in_dim| {
            let mut take = |part: &str, shape: [usize; 2]| -> Result<Var> {
                let name = format!("blk.{i}.{}.{part}", t.name());
                let x = tensors.remove(&name).ok_or_else(|| Error::corrupt(path, format!("no tensor `{name}`")))?;
                if x.dims() != shape {
                    return Err(Error::corrupt(path, format!("`{name}` has shape {:?}, expected {shape:?}", x.dims())));
                }
                Ok(Var::from_tensor(&x.to_dtype(DType::F32)?)?)
            };
            Ok(Pair { a: take("lora_a", [rank, in_dim])?, b: take("lora_b", [out_dim, rank])? })
        })?;
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::corrupt(path, format!("unexpected tensor `{extra}` (the config names other targets)")));
        }
        Ok(lora)
    }

    /// Whether these adapters fit a decoder with `layers` blocks.
    pub(super) fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// `scale * (x A^T) B^T` for block `layer`'s projection `t`, if adapted. On the
    /// fast path the adapters are detached (no graph is recorded for inference).
    pub(super) fn delta(&self, layer: usize, t: Target, x: &Tensor, path: Kernels) -> Result<Option<Tensor>> {
        let Some(p) = &self.layers[layer][t.index()] else { return Ok(None) };
        let (a, b) = match path {
            Kernels::Fast => (p.a.as_tensor().detach(), p.b.as_tensor().detach()),
            Kernels::Differentiable => (p.a.as_tensor().clone(), p.b.as_tensor().clone()),
        };
        Ok(Some((x.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)? * self.scale)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_have_distinct_names_and_slots() {
        let names: std::collections::HashSet<_> = Target::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), Target::ALL.len());
        for (i, t) in Target::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }

    #[test]
    fn rank_zero_and_no_targets_are_refused() {
        assert!(Lora::check(&LoraConfig { rank: 0, ..LoraConfig::default() }).is_err());
        assert!(Lora::check(&LoraConfig { targets: vec![], ..LoraConfig::default() }).is_err());
        assert!(Lora::check(&LoraConfig::default()).is_ok());
    }
}
