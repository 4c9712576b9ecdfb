//! `x · wᵀ` when `x` has only a few rows: a query (one text of ~12 tokens) or a
//! decoding step. gemm, which candle uses, is built for large products; with 4-16
//! rows it ran a SmolLM2 forward at 33-44 ms, against 14 ms for one row
//! (`benches/forward_scaling.rs`), though reading the weights once bounds it. This
//! kernel streams each weight row from memory once and reuses it from L1 for every
//! tile of four `x` rows, with AVX2/FMA, split over threads by blocks of weight rows.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// Rows of `x` for which [`SkinnyMatmul`] is used instead of gemm, from
/// `benches/forward_scaling.rs` on the 2-core development machine (SmolLM2 forward,
/// gemm -> this kernel: 4 rows 32.9 -> 24.5 ms, 8: 39.9 -> 24.7, 12: 40.5 -> 34.4,
/// 16: 44.3 -> 39.8, 32: 68.5 -> 72.1; one row: gemm's own gemv is faster, 13.9 ms
/// against 17.8).
pub const ROWS: std::ops::RangeInclusive<usize> = 2..=16;

/// Weight rows per parallel task: such a block (at most 64 x 4864 f32, 1.2 MB, for
/// the widest MLP here) stays in cache while every tile of `x` passes over it.
const BLOCK: usize = 64;

/// x rows per tile: 2 x 4 accumulators, 6 loads per 8 FMAs (2 x 6 measured no faster).
const XT: usize = 4;

/// Whether this CPU can run the kernel (x86-64 with AVX2 and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x (..., in) · w (out, in)ᵀ -> (..., out)` for contiguous f32 tensors on the CPU;
/// no backward (the fast path only). Check [`available`] first.
pub struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else { bail!("skinny-matmul takes f32 tensors") };
        let (Some((x0, x1)), Some((w0, w1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else { bail!("skinny-matmul takes contiguous tensors") };
        let (out, inn) = l2.shape().dims2()?;
        let mut dims = l1.dims().to_vec();
        if dims.last() != Some(&inn) {
            bail!("skinny-matmul: x has shape {dims:?}, weight {:?}", l2.dims());
        }
        let rows = l1.shape().elem_count() / inn;
        *dims.last_mut().expect("x has a last dimension") = out;
        if !available() {
            bail!("skinny-matmul needs AVX2 and FMA");
        }
        Ok((CpuStorage::F32(skinny(&x[x0..x1], rows, &w[w0..w1], out, inn)), Shape::from(dims)))
    }
}

/// `y (rows, out) = x (rows, inn) · w (out, inn)ᵀ`, row-major slices.
fn skinny(x: &[f32], rows: usize, w: &[f32], out: usize, inn: usize) -> Vec<f32> {
    // Each task fills its weight rows' outputs for every x row: (out, rows), then one
    // transpose.
    let mut yt = vec![0f32; out * rows];
    if rows > 0 {
        yt.par_chunks_mut(BLOCK * rows).enumerate().for_each(|(i, yb)| {
            let n = yb.len() / rows;
            let wb = &w[i * BLOCK * inn..(i * BLOCK + n) * inn];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: callers check `available()`; slices are in bounds by construction.
            unsafe {
                block(x, rows, wb, n, inn, yb)
            }
        });
    }
    untranspose(&yt, rows, out)
}

/// `y (rows, out)` from the kernels' weight-row-major `yt (out, rows)`.
pub(super) fn untranspose(yt: &[f32], rows: usize, out: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * out];
    for (o, col) in yt.chunks_exact(rows.max(1)).enumerate().take(out) {
        for (r, v) in col.iter().enumerate() {
            y[r * out + o] = *v;
        }
    }
    y
}

/// One block: `yb (n, rows)` from `wb (n, inn)`, with AVX-512 where the CPU has it
/// (and `DUETDB_AVX512=0` does not switch it off, for benchmarks that compare both).
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]).
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn block(x: &[f32], rows: usize, wb: &[f32], n: usize, inn: usize, yb: &mut [f32]) {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f") && std::env::var("DUETDB_AVX512").map_or(true, |v| v != "0")) {
        block_avx512(x, rows, wb, n, inn, yb)
    } else {
        block_avx2(x, rows, wb, n, inn, yb)
    }
}

/// [`block`] with 16-lane registers: tiles of 4 weight rows x 4 x rows (16
/// accumulators of the 32 registers, 8 loads per 16 FMAs), masked loads for the tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(x: &[f32], rows: usize, wb: &[f32], n: usize, inn: usize, yb: &mut [f32]) {
    assert!(x.len() >= rows * inn && wb.len() >= n * inn && yb.len() >= n * rows);
    let mut o = 0;
    while o < n {
        let wr = if n - o >= 4 { 4 } else { 1 };
        let mut r = 0;
        while r < rows {
            let xr = (rows - r).min(4);
            let t = Tile { x: x.as_ptr(), w: wb.as_ptr(), inn, rows, r, o };
            match (wr, xr) {
                (4, 4) => t.run512::<4, 4>(yb),
                (4, 3) => t.run512::<4, 3>(yb),
                (4, 2) => t.run512::<4, 2>(yb),
                (4, _) => t.run512::<4, 1>(yb),
                (_, 4) => t.run512::<1, 4>(yb),
                (_, 3) => t.run512::<1, 3>(yb),
                (_, 2) => t.run512::<1, 2>(yb),
                _ => t.run512::<1, 1>(yb),
            }
            r += xr;
        }
        o += wr;
    }
}

/// One block: `yb (n, rows)` from `wb (n, inn)`, tiles of 2 weight rows x 4 x rows
/// (8 accumulators, 6 loads per 8 FMAs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(x: &[f32], rows: usize, wb: &[f32], n: usize, inn: usize, yb: &mut [f32]) {
    assert!(x.len() >= rows * inn && wb.len() >= n * inn && yb.len() >= n * rows);
    // Weight rows outer, x tiles inner: each weight row comes from memory once and is
    // reused from L1 by every x tile while the prefetcher streams the next ones.
    let mut o = 0;
    while o < n {
        let wr = (n - o).min(2);
        let mut r = 0;
        while r < rows {
            let xr = (rows - r).min(XT);
            let t = Tile { x: x.as_ptr(), w: wb.as_ptr(), inn, rows, r, o };
            match (wr, xr) {
                (2, 4) => t.run::<2, 4>(yb),
                (2, 3) => t.run::<2, 3>(yb),
                (2, 2) => t.run::<2, 2>(yb),
                (2, _) => t.run::<2, 1>(yb),
                (_, 4) => t.run::<1, 4>(yb),
                (_, 3) => t.run::<1, 3>(yb),
                (_, 2) => t.run::<1, 2>(yb),
                _ => t.run::<1, 1>(yb),
            }
            r += xr;
        }
        o += wr;
    }
}

/// Where a tile starts: x rows from `r`, weight rows from `o`.
#[cfg(target_arch = "x86_64")]
struct Tile {
    x: *const f32,
    w: *const f32,
    inn: usize,
    rows: usize,
    r: usize,
    o: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// Dot products of WR weight rows with XR x rows into `yb[(o + a) * rows + r + b]`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // `acc[a][b]` pairs two loops' indices
    unsafe fn run<const WR: usize, const XR: usize>(&self, yb: &mut [f32]) {
        use std::arch::x86_64::*;
        let Tile { x, w, inn, rows, r, o } = *self;
        let mut acc = [[_mm256_setzero_ps(); XR]; WR];
        let mut k = 0;
        while k + 8 <= inn {
            let mut wv = [_mm256_setzero_ps(); WR];
            for (a, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(w.add((o + a) * inn + k));
            }
            for b in 0..XR {
                let xv = _mm256_loadu_ps(x.add((r + b) * inn + k));
                for a in 0..WR {
                    acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
                }
            }
            k += 8;
        }
        for a in 0..WR {
            for b in 0..XR {
                // Horizontal sum of the 8 lanes, then the tail of `inn`.
                let v = acc[a][b];
                let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                let mut s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
                for kk in k..inn {
                    s += *w.add((o + a) * inn + kk) * *x.add((r + b) * inn + kk);
                }
                yb[(o + a) * rows + r + b] = s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// [`Tile::run`] with 16 lanes; the tail of `inn` through masked loads.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // `acc[a][b]` pairs two loops' indices
    unsafe fn run512<const WR: usize, const XR: usize>(&self, yb: &mut [f32]) {
        use std::arch::x86_64::*;
        let Tile { x, w, inn, rows, r, o } = *self;
        let mut acc = [[_mm512_setzero_ps(); XR]; WR];
        let mut k = 0;
        while k < inn {
            let mask: __mmask16 = if inn - k >= 16 { 0xffff } else { (1u16 << (inn - k)) - 1 };
            let mut wv = [_mm512_setzero_ps(); WR];
            for (a, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, w.add((o + a) * inn + k));
            }
            for b in 0..XR {
                let xv = _mm512_maskz_loadu_ps(mask, x.add((r + b) * inn + k));
                for a in 0..WR {
                    acc[a][b] = _mm512_fmadd_ps(wv[a], xv, acc[a][b]);
                }
            }
            k += 16;
        }
        for a in 0..WR {
            for b in 0..XR {
                yb[(o + a) * rows + r + b] = _mm512_reduce_add_ps(acc[a][b]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_matmul_for_every_tile_shape() -> Result<()> {
        if !available() {
            return Ok(()); // nothing to compare: the fast path uses gemm on such CPUs
        }
        let dev = Device::Cpu;
        // Odd sizes reach every tile variant and the scalar tail of `inn`.
        for (rows, out, inn) in [(1, 1, 8), (3, 5, 13), (4, 130, 64), (7, 65, 100), (13, 129, 576), (32, 64, 24)] {
            let x = Tensor::randn(0f32, 1., (rows, inn), &dev)?;
            let w = Tensor::randn(0f32, 1., (out, inn), &dev)?;
            let got = x.apply_op2_no_bwd(&w, &SkinnyMatmul)?;
            let want = x.matmul(&w.t()?)?;
            // Relative to the largest output: sums of 576 products reach ~80, where f32
            // rounding in another summation order alone is ~1e-4.
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = (got - want.clone())?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5 * scale, "rows {rows} out {out} in {inn}: max diff {diff} (largest output {scale})");
            // Both kernels, whichever `block` picks on this CPU.
            let (xs, ws) = (x.flatten_all()?.to_vec1::<f32>()?, w.flatten_all()?.to_vec1::<f32>()?);
            let want = want.t()?.flatten_all()?.to_vec1::<f32>()?;
            type Kernel = unsafe fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);
            let kernels: [(&str, Kernel, bool); 2] = [("avx2", block_avx2, true), ("avx512", block_avx512, std::arch::is_x86_feature_detected!("avx512f"))];
            for (name, kernel, ok) in kernels {
                if !ok {
                    continue;
                }
                let mut yt = vec![0f32; out * rows];
                // SAFETY: the CPU has the kernel's features (checked above).
                unsafe { kernel(&xs, rows, &ws, out, inn, &mut yt) };
                let diff = yt.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(diff < 1e-5 * scale, "{name}: rows {rows} out {out} in {inn}: max diff {diff}");
            }
        }
        let x3 = Tensor::randn(0f32, 1., (2, 3, 16), &dev)?;
        let w = Tensor::randn(0f32, 1., (5, 16), &dev)?;
        assert_eq!(x3.apply_op2_no_bwd(&w, &SkinnyMatmul)?.dims(), [2, 3, 5]);
        assert!(Tensor::zeros((2, 3), candle_core::DType::F64, &dev)?
            .apply_op2_no_bwd(&Tensor::zeros((2, 3), candle_core::DType::F64, &dev)?, &SkinnyMatmul)
            .is_err());
        Ok(())
    }
}
