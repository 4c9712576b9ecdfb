//! The readout: a trained linear map from M's states at the soft positions to the vector.
//!
//! Without it, the vector is the mean of the soft positions' final states (pooling
//! `mean_soft`). In the instruction-only mode the soft prompt is one constant per kind, so
//! a checkpoint's only free parameters at inference are those 2 x K vectors (issue 30,
//! docs/training.md): M, frozen, does the rest. A readout adds capacity where it costs
//! nothing at inference: it reads the soft positions' states after several of M's blocks
//! (one forward computes them all, [`Decoder::forward_tail_at`]), each position on its own
//! or their mean, and maps them with one matrix to M's width. Its weights start as stacked
//! identities, so an untrained readout over the last block's mean is the plain vector.
//!
//! It is trained on vectors computed once (M and the prompts frozen: no gradient needs M),
//! by `duetdb train --mode readout` (`crate::train::readout`).

use super::*;

/// File name of the readout's weights in a checkpoint directory.
pub(super) const READOUT_FILE: &str = "readout.safetensors";

/// Which of M's states at the soft positions a readout reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadoutConfig {
    /// Block counts after which the soft positions' states are read (1 to M's depth; the
    /// depth itself is the final state), in this order.
    pub blocks: Vec<usize>,
    /// Each soft position on its own (K vectors a block) instead of their mean (one).
    pub per_position: bool,
}

impl ReadoutConfig {
    /// Vectors of M's width that one text's input to the readout holds.
    pub fn groups(&self, soft_tokens: usize) -> usize {
        self.blocks.len() * if self.per_position { soft_tokens } else { 1 }
    }

    /// The readout's input from the states `read` (one (b, K, d) tensor per entry of
    /// `blocks`): per group (a position, or the positions' mean, of one block) the unit
    /// vector, the groups side by side and scaled by 1/sqrt(groups), (b, groups x d).
    /// Unit groups keep a block with large states from drowning the others.
    pub fn inputs(&self, read: &[Tensor]) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(read.len());
        let mut groups = 0;
        for s in read {
            let s = if self.per_position { s.clone() } else { s.mean_keepdim(1)? };
            groups += s.dim(1)?;
            parts.push(crate::embed::normalize_rows(&s)?.flatten_from(1)?);
        }
        Ok((Tensor::cat(&parts, 1)? / (groups.max(1) as f64).sqrt())?)
    }
}

/// A readout's configuration and weight, (groups x d_e, d_e).
#[derive(Debug, Clone)]
pub struct Readout {
    cfg: ReadoutConfig,
    weight: Tensor,
}

impl Readout {
    /// A readout whose output is the sum of its input groups (stacked identities): over
    /// the last block's mean alone, exactly the vector without a readout.
    pub fn identity(cfg: ReadoutConfig, soft_tokens: usize, d: usize, device: &Device) -> Result<Self> {
        let g = cfg.groups(soft_tokens);
        let eye = Tensor::eye(d, DType::F32, device)?;
        let weight = Tensor::cat(&vec![eye; g], 0)?;
        Ok(Self { cfg, weight })
    }

    /// A readout with the given weight, rounded to half precision (f16) as it is stored:
    /// the vectors of a readout just trained are those of its saved checkpoint, and the
    /// file is half the size (it ships inside the crate for the default). Its shape must
    /// be (groups x d, d).
    pub fn new(cfg: ReadoutConfig, weight: Tensor, soft_tokens: usize, d: usize) -> Result<Self> {
        let want = [cfg.groups(soft_tokens) * d, d];
        if weight.dims() != want {
            return Err(Error::model(format!("readout weight has shape {:?}, expected {want:?}", weight.dims())));
        }
        Ok(Self { cfg, weight: weight.to_dtype(DType::F16)?.to_dtype(DType::F32)? })
    }

    /// Reads a checkpoint's `readout.safetensors` (tensor `weight`).
    pub(super) fn from_bytes(cfg: ReadoutConfig, bytes: &[u8], path: &Path, soft_tokens: usize, d: usize, device: &Device) -> Result<Self> {
        let t = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| Error::corrupt_from(path, "unreadable safetensors", e))?;
        let w = t.get("weight").cloned().ok_or_else(|| Error::corrupt(path, "no tensor `weight`"))?;
        Self::new(cfg, w, soft_tokens, d).map_err(|e| Error::corrupt(path, e.to_string()))
    }

    /// Writes the weight as safetensors to `path`, in f16 (exact: it was rounded so).
    pub(super) fn save(&self, path: &Path) -> Result<()> {
        let t: HashMap<String, Tensor> = [("weight".to_string(), self.weight.to_dtype(DType::F16)?)].into();
        Ok(candle_core::safetensors::save(&t, path)?)
    }

    /// The configuration.
    pub fn config(&self) -> &ReadoutConfig {
        &self.cfg
    }

    /// The weight, (groups x d_e, d_e).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The vectors of inputs `x` (b, groups x d) through `weight`, L2-normalised, (b, d).
    /// Training passes its own weight variable; inference the readout's.
    pub fn apply_with(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        crate::embed::normalize_rows(&x.matmul(weight)?)
    }

    /// The vectors of the states `read`: [`ReadoutConfig::inputs`], then the weight.
    pub fn apply(&self, read: &[Tensor]) -> Result<Tensor> {
        Self::apply_with(&self.cfg.inputs(read)?, &self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    #[test]
    fn an_identity_readout_over_the_last_mean_is_the_plain_vector() -> Result<()> {
        let dev = Device::Cpu;
        let states = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let r = Readout::identity(ReadoutConfig { blocks: vec![18], per_position: false }, 5, 8, &dev)?;
        let got = r.apply(std::slice::from_ref(&states))?;
        let mean = states.mean(1)?;
        let want = mean.broadcast_div(&mean.sqr()?.sum_keepdim(1)?.sqrt()?)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "identity readout differs from the normalised mean by {diff}");
        Ok(())
    }

    #[test]
    fn features_have_one_unit_group_per_block_and_position() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = ReadoutConfig { blocks: vec![9, 18], per_position: true };
        assert_eq!(cfg.groups(5), 10);
        let r = Readout::identity(cfg, 5, 4, &dev)?;
        assert_eq!(r.weight().dims(), [40, 4]);
        let read = [Tensor::randn(0f32, 3.0, (2, 5, 4), &dev)?, Tensor::randn(0f32, 0.1, (2, 5, 4), &dev)?];
        let x = r.config().inputs(&read)?;
        assert_eq!(x.dims(), [2, 40]);
        // Each group of 4 has norm 1/sqrt(10), whatever the scale of its block's states.
        let g = x.reshape((2, 10, 4))?.sqr()?.sum(D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(g.iter().all(|&n| (n - 0.1).abs() < 1e-5), "group norms squared {g:?}, expected 0.1");
        Ok(())
    }

    #[test]
    fn a_weight_of_the_wrong_shape_is_refused() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((8, 8), DType::F32, &dev).unwrap();
        let err = Readout::new(ReadoutConfig { blocks: vec![6, 18], per_position: false }, w, 5, 8).unwrap_err();
        assert!(err.to_string().contains("readout weight has shape [8, 8], expected [16, 8]"), "{err}");
    }
}
