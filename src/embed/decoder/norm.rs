//! RMS norm on the fast path, eight lanes at a time over many rows a task.
//!
//! candle's fused `rms_norm` sums each row's squares one element after another (a
//! chain of dependent adds) and hands every row to rayon as a task of its own: Gemma3's
//! six norms a block, over rows of 256 to 640 values, took about 4% of its f32 forward
//! (`perf`, docs/benchmarks.md). Same function: `x / sqrt(mean(x^2) + eps) * w`, with
//! the sum in another order and the division as a multiplication by the reciprocal
//! (within a few units in the last place of candle's).

use super::fresh;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};
use std::mem::MaybeUninit;

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
        Ok((CpuStorage::F32(normed(self.name(), (s1, l1), (s2, l2), None, self.eps)?), l1.shape().clone()))
    }
}

/// `r + rms_norm(x) * w` for inputs `x`, `w` and `r` (of `x`'s shape) in one pass: the
/// residual add after Gemma3's post-attention and post-MLP norms, as a candle op
/// without a backward (the fast path only). The same numbers as [`FastRmsNorm`] then
/// an add, bit for bit. Needs AVX2 and FMA.
pub struct FastAddRmsNorm {
    /// Added to the mean of squares.
    pub eps: f32,
}

impl CustomOp3 for FastAddRmsNorm {
    fn name(&self) -> &'static str {
        "fast-add-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        if l3.dims() != l1.dims() {
            bail!("fast-add-rms-norm: a residual of shape {:?} for an input of {:?}", l3.dims(), l1.dims());
        }
        Ok((CpuStorage::F32(normed(self.name(), (s1, l1), (s2, l2), Some((s3, l3)), self.eps)?), l1.shape().clone()))
    }
}

/// The values of `x` normed and scaled by `w` over its last dimension, plus the residual
/// when given: checks the inputs, then rows side by side on rayon's threads.
fn normed(
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    residual: Option<(&CpuStorage, &Layout)>,
    eps: f32,
) -> Result<Vec<f32>> {
    let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else { bail!("{op} takes f32") };
    let (Some((a, b)), Some((wa, wb))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else { bail!("{op} takes contiguous inputs") };
    let (x, w) = (&x[a..b], &w[wa..wb]);
    let r = match residual {
        Some((CpuStorage::F32(r), l)) => match l.contiguous_offsets() {
            Some((ra, rb)) => Some(&r[ra..rb]),
            None => bail!("{op} takes contiguous inputs"),
        },
        Some(_) => bail!("{op} takes f32"),
        None => None,
    };
    let d = w.len();
    if l1.dims().last() != Some(&d) || d == 0 {
        bail!("{op}: input of shape {:?} for a scale of {d}", l1.dims());
    }
    if !super::skinny::available() {
        bail!("{op} needs AVX2 and FMA");
    }
    let rows = (TASK / d).max(1);
    // SAFETY: `row` writes every value of each of the chunk's whole rows.
    Ok(unsafe {
        fresh::filled(x.len(), rows * d, |first, ys| {
            for (i, y) in ys.chunks_exact_mut(d).enumerate() {
                let at = first + i * d;
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA are checked above.
                row(&x[at..at + d], w, eps, r.map(|r| &r[at..at + d]), y);
            }
        })
    })
}

/// One row: `y = x / sqrt(mean(x^2) + eps) * w`, plus `r` when given.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row(x: &[f32], w: &[f32], eps: f32, r: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let n = x.len();
    let whole = n / 32 * 32;
    let (px, pw, py) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr() as *mut f32);
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
        // SAFETY: `i + 8 <= n` for `x`, `w`, `r` and `y`, all of length `n`.
        unsafe {
            let v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(px.add(i)), sv), _mm256_loadu_ps(pw.add(i)));
            let v = match r {
                Some(r) => _mm256_add_ps(_mm256_loadu_ps(r.as_ptr().add(i)), v),
                None => v,
            };
            _mm256_storeu_ps(py.add(i), v)
        };
    }
    for i in eights..n {
        let v = x[i] * scale * w[i];
        y[i].write(r.map_or(v, |r| r[i] + v));
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

    /// The residual add folded in: the norm then candle's add, bit for bit.
    #[test]
    fn the_added_norm_is_the_norm_then_the_add() -> Result<()> {
        if !super::super::skinny::available() {
            return Ok(()); // the unfused ops are the ones used on such CPUs
        }
        for (rows, d) in [(1, 640), (40, 7), (100, 33)] {
            let x = (Tensor::randn(0f32, 1., (rows, d), &Device::Cpu)? * 3.0)?;
            let r = Tensor::randn(0f32, 1., (rows, d), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1., d, &Device::Cpu)?;
            let ours = x.apply_op3_no_bwd(&w, &r, &FastAddRmsNorm { eps: 1e-6 })?.flatten_all()?.to_vec1::<f32>()?;
            let theirs = (&r + x.apply_op2_no_bwd(&w, &FastRmsNorm { eps: 1e-6 })?)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(ours, theirs, "{rows}x{d}");
        }
        let x = Tensor::zeros((2, 8), candle_core::DType::F32, &Device::Cpu)?;
        let err = x.apply_op3_no_bwd(&Tensor::ones(8, candle_core::DType::F32, &Device::Cpu)?, &x.narrow(0, 0, 1)?, &FastAddRmsNorm { eps: 1e-6 }).unwrap_err();
        assert!(err.to_string().contains("residual of shape [1, 8]"), "{err}");
        Ok(())
    }
}
