//! AdamW with a warm-up and cosine schedule and global-norm clipping, whose whole state
//! (moments and step) is saved and restored exactly, so a resumed run continues as if
//! it had never stopped. (candle-nn's AdamW keeps its moments private.)

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Optimiser hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate of the adapters.
    pub lr: f64,
    /// Peak learning rate of the alignment matrix and bias.
    pub lr_align: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the second moment's root.
    pub eps: f64,
    /// Decoupled weight decay of the adapters (the alignment is not decayed: it starts
    /// at a meaningful map, the identity or a least-squares fit, not at zero).
    pub weight_decay: f64,
    /// Steps of linear warm-up.
    pub warmup: u64,
    /// Total steps: the rate follows a cosine from the peak down to `min_ratio` of it.
    pub total: u64,
    /// Final rate as a fraction of the peak.
    pub min_ratio: f64,
    /// Largest global gradient norm; larger gradients are scaled down to it.
    pub clip: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, lr_align: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, warmup: 50, total: 1000, min_ratio: 0.1, clip: 1.0 }
    }
}

impl AdamWConfig {
    /// The rate multiplier at `step` (0-based): warm-up, then cosine decay.
    pub fn schedule(&self, step: u64) -> f64 {
        if step < self.warmup {
            return (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// One parameter under optimisation.
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    align: bool,
}

/// AdamW over named variables.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
    /// The step at which the moments were last zero: bias correction counts from here,
    /// so moments that restart mid-run are corrected as in a first step.
    moments_from: u64,
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// The learning rate used: the adapters' one, or the alignment's where the
    /// alignment is all that trains (a transfer), so a transfer's log shows its own rate.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

impl AdamW {
    /// An optimiser for `params` (names starting with `align.` get `lr_align` and no decay).
    pub fn new(cfg: AdamWConfig, params: Vec<(String, Var)>) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let z = var.as_tensor().zeros_like()?;
                Ok(Slot { align: name.starts_with("align."), name, var, m: z.clone(), v: z })
            })
            .collect::<Result<_>>()?;
        Ok(Self { cfg, slots, step: 0, moments_from: 0 })
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.slots.iter().map(|s| s.var.elem_count()).sum()
    }

    /// One update from gradients by parameter name (a missing one counts as zero), with
    /// clipping by the global norm.
    pub fn step(&mut self, grads: &HashMap<String, Tensor>) -> Result<StepReport> {
        let mut sq = 0f64;
        for g in grads.values() {
            sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::model(format!("gradient norm is {grad_norm} at step {}: the loss diverged", self.step)));
        }
        let clip = if grad_norm > self.cfg.clip { self.cfg.clip / grad_norm } else { 1.0 };
        let c = &self.cfg;
        let rate = c.schedule(self.step);
        let t = (self.step + 1 - self.moments_from).min(i32::MAX as u64) as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.name) else { continue };
            // Detached throughout: a gradient can carry its autograd history, and moments
            // built on it would keep every step's graph alive.
            let g = (g.detach() * clip)?;
            s.m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let lr = rate * if s.align { c.lr_align } else { c.lr };
            let update = ((&s.m / bc1)? / ((&s.v / bc2)?.sqrt()? + c.eps)?)?;
            let decay = if s.align { 0.0 } else { c.weight_decay };
            let p = s.var.as_tensor().detach();
            let next = ((&p * (1.0 - lr * decay))? - (update * lr)?)?;
            s.var.set(&next)?;
        }
        self.step += 1;
        let only_align = self.slots.iter().all(|s| s.align);
        Ok(StepReport { lr: rate * if only_align { c.lr_align } else { c.lr }, grad_norm })
    }

    /// Writes the moments (the parameters themselves live in the embedder's checkpoint).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t = HashMap::new();
        for s in &self.slots {
            t.insert(format!("{}.m", s.name), s.m.clone());
            t.insert(format!("{}.v", s.name), s.v.clone());
        }
        t.insert(MOMENTS_FROM.to_string(), Tensor::new(&[self.moments_from as f64], &candle_core::Device::Cpu)?);
        candle_core::safetensors::save(&t, path)?;
        Ok(())
    }

    /// Continues after `step` steps with zero moments: a run whose optimizer state was
    /// not kept (only its parameters were committed) resumes its schedule where it was.
    pub fn restart_at(&mut self, step: u64) {
        self.step = step;
        self.moments_from = step;
    }

    /// Restores moments written by [`AdamW::save`] after `step` steps.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let mut t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| Error::corrupt_from(path, "unreadable safetensors", e))?;
        for s in &mut self.slots {
            let mut take = |k: &str| {
                let name = format!("{}.{k}", s.name);
                let x = t.remove(&name).ok_or_else(|| Error::corrupt(path, format!("no tensor `{name}`")))?;
                if x.dims() != s.var.dims() {
                    return Err(Error::corrupt(path, format!("`{name}` has shape {:?}, expected {:?}", x.dims(), s.var.dims())));
                }
                Ok::<_, Error>(x)
            };
            s.m = take("m")?;
            s.v = take("v")?;
        }
        // Absent in states written before moments could restart: they never did.
        self.moments_from = match t.remove(MOMENTS_FROM) {
            Some(x) => x.to_vec1::<f64>().map_err(|e| Error::corrupt_from(path, "unexpected tensor", e))?.first().map_or(0, |&v| v as u64),
            None => 0,
        };
        self.step = step;
        Ok(())
    }
}

/// The name under which [`AdamW::save`] records where the moments started.
const MOMENTS_FROM: &str = "__moments_from";

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = AdamWConfig { warmup: 10, total: 110, min_ratio: 0.1, ..Default::default() };
        assert!((c.schedule(0) - 0.1).abs() < 1e-12);
        assert!((c.schedule(9) - 1.0).abs() < 1e-12);
        assert!((c.schedule(10) - 1.0).abs() < 1e-12);
        assert!((c.schedule(60) - 0.55).abs() < 1e-12);
        assert!((c.schedule(110) - 0.1).abs() < 1e-12);
        assert!((c.schedule(500) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn first_step_moves_by_the_learning_rate_against_the_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1f32, -1.0], &dev)?)?;
        let cfg = AdamWConfig { lr: 0.1, lr_align: 0.1, warmup: 1, weight_decay: 0.0, clip: 100.0, ..Default::default() };
        let mut opt = AdamW::new(cfg, vec![("p.w".into(), w.clone())])?;
        let g = HashMap::from([("p.w".to_string(), Tensor::new(&[2f32, -3.0], &dev)?)]);
        opt.step(&g)?;
        let got: Vec<f32> = w.as_tensor().to_vec1()?;
        // Adam's first update is lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|).
        assert!((got[0] - 0.9).abs() < 1e-5 && (got[1] + 0.9).abs() < 1e-5, "{got:?}");
        Ok(())
    }

    #[test]
    fn the_reported_rate_is_the_trained_parameters_own() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = AdamWConfig { lr: 1e-3, lr_align: 0.1, warmup: 1, ..Default::default() };
        let var = || Var::from_tensor(&Tensor::new(&[1f32], &dev)?);
        let g = |n: &str| HashMap::from([(n.to_string(), Tensor::new(&[1f32], &dev).unwrap())]);
        // A transfer trains the alignment alone: its log must show A''s rate, not the adapters'.
        let mut align_only = AdamW::new(cfg.clone(), vec![("align.weight".into(), var()?)])?;
        assert!((align_only.step(&g("align.weight"))?.lr - 0.1).abs() < 1e-12);
        let mut both = AdamW::new(cfg, vec![("align.weight".into(), var()?), ("p.w".into(), var()?)])?;
        assert!((both.step(&g("p.w"))?.lr - 1e-3).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn clipping_bounds_the_global_norm() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[0f32, 0.0], &dev)?)?;
        let mut opt = AdamW::new(AdamWConfig { clip: 1.0, ..Default::default() }, vec![("p.w".into(), w)])?;
        let r = opt.step(&HashMap::from([("p.w".to_string(), Tensor::new(&[3f32, 4.0], &dev)?)]))?;
        assert!((r.grad_norm - 5.0).abs() < 1e-9);
        let nan = HashMap::from([("p.w".to_string(), Tensor::new(&[f32::NAN, 0.0], &dev)?)]);
        assert!(opt.step(&nan).is_err(), "a NaN gradient stops training with an error");
        Ok(())
    }

    #[test]
    fn restarted_moments_move_like_a_first_step_and_survive_a_save() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1f32], &dev)?)?;
        let cfg = AdamWConfig { lr: 0.1, lr_align: 0.1, warmup: 1, total: 10_000, min_ratio: 1.0, weight_decay: 0.0, clip: 100.0, ..Default::default() };
        let mut opt = AdamW::new(cfg.clone(), vec![("p.w".into(), w.clone())])?;
        opt.restart_at(550);
        let g = HashMap::from([("p.w".to_string(), Tensor::new(&[2f32], &dev)?)]);
        opt.step(&g)?;
        // Without restarting the bias correction, zero moments at step 551 would move w by
        // about 3.2 times the rate.
        let got = w.as_tensor().to_vec1::<f32>()?[0];
        assert!((got - 0.9).abs() < 1e-5, "{got}");
        assert_eq!(opt.step_count(), 551);
        let dir = tempfile::tempdir().unwrap();
        opt.save(&dir.path().join("o.safetensors"))?;
        let mut back = AdamW::new(cfg, vec![("p.w".into(), w.clone())])?;
        back.load(&dir.path().join("o.safetensors"), 551)?;
        assert_eq!(back.moments_from, 550);
        Ok(())
    }
}
