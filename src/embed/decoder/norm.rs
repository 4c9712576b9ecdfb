//! RMS norm on the fast path, eight lanes at a time over many rows a task.
//!
//! candle's fused `rms_norm` sums each row's squares one element after another (a
//! chain of dependent adds) and hands every row to rayon as a task of its own: Gemma3's
//! six norms a block, over rows of 256 to 640 values, took about 4% of its f32 forward
//! (`perf`, docs/benchmarks.md). Same function: `x / sqrt(mean(x^2) + eps) * w`, with
//! the sum in another order and the division as a multiplication by the reciprocal
//! (within a few units in the last place of candle's).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// Values a parallel task takes (whole rows): enough work to pay for the hand-off.
const TASK: usize = 16 * 1024;

/// Whether the fast path should use [`FastRmsNorm`] on `x`: f32 on a CPU with AVX2 and
/// FMA, unless `DUETDB_FAST_NORM=0` (for benchmarks that compare both).
pub fn wanted(x: &candle_core::Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && *ON.get_or_init(|| std::env::var("DUETDB_FAST_NORM").map_or(true, |v| v != "0") && super::skinny::available())
}

/// RMS norm over the last dimension of `x`, scaled by the second input `w` (its size),
/// as a candle op without a backward (the fast path only). Needs AVX2 and FMA.
pub struct FastRmsNorm {
    /// Added to the mean of squares.
    pub eps: f32,
}

impl CustomOp2 for FastRmsNorm {
    fn name(&self) -> &'static str {
        "fast-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else { bail!("fast-rms-norm takes f32") };
        let (Some((a, b)), Some((wa, wb))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else { bail!("fast-rms-norm takes contiguous inputs") };
        let (x, w) = (&x[a..b], &w[wa..wb]);
        let d = w.len();
        if l1.dims().last() != Some(&d) || d == 0 {
            bail!("fast-rms-norm: input of shape {:?} for a scale of {d}", l1.dims());
        }
        if !super::skinny::available() {
            bail!("fast-rms-norm needs AVX2 and FMA");
        }
        let mut y = vec![0f32; x.len()];
        let rows = (TASK / d).max(1);
        y.par_chunks_mut(rows * d).zip(x.par_chunks(rows * d)).for_each(|(ys, xs)| {
            for (y, x) in ys.chunks_exact_mut(d).zip(xs.chunks_exact(d)) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA are checked above.
                unsafe {
                    row(x, w, self.eps, y)
                };
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// One row: `y = x / sqrt(mean(x^2) + eps) * w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    let whole = n / 32 * 32;
    let (px, pw, py) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    // Four independent sums, so the adds do not wait on each other.
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in (0..whole).step_by(32) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 8 j + 8 <= whole <= n`.
            let v = unsafe { _mm256_loadu_ps(px.add(i + 8 * j)) };
            *acc = _mm256_fmadd_ps(v, v, *acc);
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: eight lanes into eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    let sum: f32 = lanes.iter().sum::<f32>() + x[whole..].iter().map(|v| v * v).sum::<f32>();
    let scale = 1.0 / (sum / n as f32 + eps).sqrt();
    let sv = _mm256_set1_ps(scale);
    let eights = n / 8 * 8;
    for i in (0..eights).step_by(8) {
        // SAFETY: `i + 8 <= n` for `x`, `w` and `y`, all of length `n`.
        unsafe { _mm256_storeu_ps(py.add(i), _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(px.add(i)), sv), _mm256_loadu_ps(pw.add(i)))) };
    }
    for i in eights..n {
        y[i] = x[i] * scale * w[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Against candle's fused op and its plain one, for row lengths with every remainder.
    #[test]
    fn matches_candles_rms_norm() -> Result<()> {
        if !super::super::skinny::available() {
            return Ok(()); // candle's op is the one used on such CPUs
        }
        for (rows, d) in [(1, 640), (3, 256), (40, 7), (1000, 33), (5, 1)] {
            let x = (Tensor::randn(0f32, 1., (rows, d), &Device::Cpu)? * 3.0)?;
            let w = Tensor::randn(0f32, 1., d, &Device::Cpu)?;
            let ours = x.apply_op2_no_bwd(&w, &FastRmsNorm { eps: 1e-6 })?;
            for theirs in [candle_nn::ops::rms_norm(&x, &w, 1e-6)?, candle_nn::ops::rms_norm_slow(&x, &w, 1e-6)?] {
                let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?;
                let diff = (&ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff <= 4.0 * f32::EPSILON * scale, "{rows}x{d}: {diff} (values up to {scale})");
            }
        }
        Ok(())
    }
}
