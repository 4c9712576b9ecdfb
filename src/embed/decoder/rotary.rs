//! Rotary embedding (the NeoX, half-split layout of Gemma3 and Qwen2) on the fast path,
//! many rows a task.
//!
//! candle's fused `rope` makes each (sequence, head) one rayon task and indexes every
//! element through bounds-checked arithmetic: 3% of Gemma3's f32 forward (`perf`,
//! docs/benchmarks.md), and a single task for the one key head of an unpadded batch
//! (`unpadded.rs`: one sequence). Same arithmetic, element for element, so the same
//! numbers bit for bit.

use super::fresh;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape};
use std::mem::MaybeUninit;

/// Values a parallel task takes (whole rows): enough work to pay for the hand-off.
const TASK: usize = 16 * 1024;

/// Whether the fast path should use [`FastRope`] on `x`: f32 on the CPU, unless
/// `DUETDB_FAST_ROPE=0` (for benchmarks that compare both).
pub fn wanted(x: &candle_core::Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && *ON.get_or_init(|| std::env::var("DUETDB_FAST_ROPE").map_or(true, |v| v != "0"))
}

/// `x` (b, heads, t, d) rotated by `cos` and `sin` (b, t, d/2): for each pair `(i, i +
/// d/2)`, `(x1 cos - x2 sin, x1 sin + x2 cos)`, as candle's `rotary_emb::rope` with
/// batched tables. `x` may be any layout whose last dimension is contiguous (such as
/// heads moved in front of the positions); the output is contiguous. A candle op
/// without a backward (the fast path only).
pub struct FastRope;

impl CustomOp3 for FastRope {
    fn name(&self) -> &'static str {
        "fast-rope"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(cos), CpuStorage::F32(sin)) = (s1, s2, s3) else { bail!("fast-rope takes f32") };
        let (Some((ca, cb)), Some((sa, sb))) = (l2.contiguous_offsets(), l3.contiguous_offsets()) else { bail!("fast-rope takes contiguous tables") };
        let (cos, sin) = (&cos[ca..cb], &sin[sa..sb]);
        let (b, h, t, d) = l1.shape().dims4()?;
        let &[s_b, s_h, s_t, 1] = l1.stride() else { bail!("fast-rope takes an input whose last dimension is contiguous") };
        if d % 2 != 0 || l2.dims() != [b, t, d / 2] || l3.dims() != [b, t, d / 2] {
            bail!("fast-rope: input {:?} with tables {:?} and {:?}", l1.dims(), l2.dims(), l3.dims());
        }
        let (half, x0) = (d / 2, l1.start_offset());
        if d == 0 {
            return Ok((CpuStorage::F32(vec![]), l1.shape().clone()));
        }
        let rows = (TASK / d).max(1);
        // SAFETY: `rotate` writes every value of each of the chunk's whole rows.
        let y = unsafe {
            fresh::filled(b * h * t * d, rows * d, |first, ys| {
                for (r, y) in ys.chunks_exact_mut(d).enumerate() {
                    // Output row `first / d + r` is (sequence, head, position); the input
                    // is read through its strides, the tables by sequence and position.
                    let row = first / d + r;
                    let (bi, hi, ti) = (row / (h * t), row / t % h, row % t);
                    let from = x0 + bi * s_b + hi * s_h + ti * s_t;
                    let at = (bi * t + ti) * half;
                    rotate(&x[from..from + d], &cos[at..at + half], &sin[at..at + half], y);
                }
            })
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// One row: the first half and the second half rotated together, pair by pair.
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], y: &mut [MaybeUninit<f32>]) {
    let (x1, x2) = x.split_at(cos.len());
    let (y1, y2) = y.split_at_mut(cos.len());
    for (((((y1, y2), &a), &b), &c), &s) in y1.iter_mut().zip(y2.iter_mut()).zip(x1).zip(x2).zip(cos).zip(sin) {
        y1.write(a * c - b * s);
        y2.write(a * s + b * c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Bit for bit candle's fused rope, for several sequences, heads and positions.
    #[test]
    fn is_candles_rope_bit_for_bit() -> Result<()> {
        for (b, h, t, d) in [(1, 4, 37, 256), (3, 1, 5, 8), (2, 2, 300, 64)] {
            let x = Tensor::randn(0f32, 1., (b, h, t, d), &Device::Cpu)?;
            let cos = Tensor::randn(0f32, 1., (b, t, d / 2), &Device::Cpu)?;
            let sin = Tensor::randn(0f32, 1., (b, t, d / 2), &Device::Cpu)?;
            let ours = x.apply_op3_no_bwd(&cos, &sin, &FastRope)?.flatten_all()?.to_vec1::<f32>()?;
            let theirs = candle_nn::rotary_emb::rope(&x, &cos, &sin)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(ours, theirs, "({b}, {h}, {t}, {d})");
            // Heads moved in front of the positions (a view, as the decoder hands it).
            let moved = x.transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
            assert!(h == 1 || !moved.is_contiguous(), "a moved view");
            let ours = moved.apply_op3_no_bwd(&cos, &sin, &FastRope)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(ours, theirs, "moved ({b}, {h}, {t}, {d})");
        }
        Ok(())
    }
}
