//! A byte-per-weight copy of a frozen weight matrix, for the few-row products of a
//! query (ARCHITECTURE.md, "What we learned about candle": a one-text forward reads every weight once, so its time
//! is the time to stream the weights from memory).
//!
//! The GGUF weights are 4-, 5-, 6- or 8-bit codes: inside each block of 32 (16 for
//! Q6_K) they take evenly spaced values `zero + step * code`. Dequantised to f32 they
//! cost 4 bytes a weight; this copy keeps one byte (`code`) and a step and zero per
//! block, and is built only when it gives back every f32 weight exactly (to float
//! rounding), so the fast path computes the same function with about a third of the
//! bytes. A matrix that is not of that form (random test weights) keeps its f32 path.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

/// Rows of `x` for which the packed product is used: a query's text plus its soft
/// tokens. Batches of documents are compute-bound and stay on gemm's f32 path. Up to 16
/// until 2026-12-05: queries of 17-32 positions (38% of the Debian summaries in
/// `benches/embedder.sh`) then took gemm's f32 path, p90 117-123 ms a query on the Xeon
/// without its tiles against 49 ms with this range (docs/benchmarks.md).
pub const ROWS: std::ops::RangeInclusive<usize> = 1..=32;

/// Whether a fast-path product with input `x` should use the packed weights: few rows,
/// f32 on a CPU with AVX2 and FMA, and not switched off by `DUETDB_PACKED=0` (for
/// benchmarks that compare both).
pub fn wanted(x: &candle_core::Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1);
    ROWS.contains(&rows)
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && *ON.get_or_init(|| std::env::var("DUETDB_PACKED").map_or(true, |v| v != "0") && super::skinny::available())
}

/// Weights per block along the input dimension, tried in this order: 32 (Q4_0/1,
/// Q5_0/1, Q8_0, and Q4_K/Q5_K's sub-blocks), then 16 (Q6_K's sub-blocks, each with its
/// own scale).
pub const BLOCKS: [usize; 2] = [32, 16];

/// A weight matrix (out, in) as `zero[b] + step[b] * code` per block of inputs.
#[derive(Debug)]
pub struct PackedWeight {
    out: usize,
    inn: usize,
    /// Inputs per block: one of [`BLOCKS`].
    block: usize,
    /// Two codes a byte when every code fits in 4 bits (blocks of 32 only): byte `j` of
    /// a block's 16 holds code `j` in its low half and code `j + 16` in its high half.
    nibbles: bool,
    codes: Vec<u8>,
    /// `(step, zero)` of each block, row-major: `out * inn / block` entries.
    blocks: Vec<(f32, f32)>,
}

impl PackedWeight {
    /// The packed copy of `w` (out, in), row-major, or `None` when, for every block size
    /// in [`BLOCKS`], some block is not evenly spaced in at most 256 levels (or `in` is
    /// not a multiple of the size).
    pub fn exact(w: &[f32], out: usize, inn: usize) -> Option<Self> {
        BLOCKS.iter().find_map(|&size| Self::with_block(w, out, inn, size))
    }

    fn with_block(w: &[f32], out: usize, inn: usize, size: usize) -> Option<Self> {
        if inn == 0 || !inn.is_multiple_of(size) || w.len() != out * inn {
            return None;
        }
        // Blocks per parallel task.
        const TASK: usize = 256;
        let mut codes = vec![0u8; w.len()];
        let mut blocks = vec![(0f32, 0f32); w.len() / size];
        let ok = codes.par_chunks_mut(size * TASK).zip(blocks.par_chunks_mut(TASK)).enumerate().all(|(i, (cs, bs))| {
            let w = &w[i * size * TASK..];
            cs.chunks_mut(size).zip(bs.iter_mut()).enumerate().all(|(j, (c, b))| match block(&w[j * size..(j + 1) * size], c) {
                Some(sz) => {
                    *b = sz;
                    true
                }
                None => false,
            })
        });
        if !ok {
            return None;
        }
        // Q4 formats: half the bytes again.
        if size == 32 && codes.par_iter().all(|&c| c < 16) {
            let halves = codes.par_chunks(32).flat_map_iter(|b| (0..16).map(move |j| b[j] | (b[j + 16] << 4))).collect();
            return Some(Self { out, inn, block: size, nibbles: true, codes: halves, blocks });
        }
        Some(Self { out, inn, block: size, nibbles: false, codes, blocks })
    }

    /// Rows and columns: (out, in).
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inn)
    }

    /// Inputs per block (32 or 16).
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// Bits a code takes: 4 (two a byte) or 8.
    pub fn code_bits(&self) -> usize {
        if self.nibbles {
            4
        } else {
            8
        }
    }

    /// The code of weight `k` in row-major order.
    fn code(&self, k: usize) -> u8 {
        if self.nibbles {
            let byte = self.codes[k / 32 * 16 + k % 16];
            if k % 32 < 16 {
                byte & 15
            } else {
                byte >> 4
            }
        } else {
            self.codes[k]
        }
    }

    /// The code of the weight at (o, i).
    pub(crate) fn code_at(&self, o: usize, i: usize) -> u8 {
        self.code(o * self.inn + i)
    }

    /// `(step, zero)` of block `b` (inputs `b * block_size()..`) of row `o`.
    pub(crate) fn block_at(&self, o: usize, b: usize) -> (f32, f32) {
        self.blocks[o * self.inn / self.block + b]
    }

    /// The weight at (o, i), as the kernel sees it.
    pub fn get(&self, o: usize, i: usize) -> f32 {
        let (s, z) = self.blocks[(o * self.inn + i) / self.block];
        s.mul_add(self.code(o * self.inn + i) as f32, z)
    }
}

/// `(step, zero)` with `v[i] == zero + step * codes[i]` (within float rounding) for one
/// block, writing the codes; `None` if there is no such step with codes up to 255.
fn block(v: &[f32], codes: &mut [u8]) -> Option<(f32, f32)> {
    let (mn, mx) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    if !mn.is_finite() || !mx.is_finite() {
        return None;
    }
    if mx == mn {
        codes.fill(0);
        return Some((0.0, mn));
    }
    // Rounding in the dequantisation (f16 scales times codes, plus a minimum) is a few
    // ulps of the block's largest magnitude.
    let tol = mn.abs().max(mx.abs()) * 2f32.powi(-19);
    // Any gap between two values is a whole number of steps. The gap above the minimum
    // costs one pass and is almost always one to four steps; only where it is not does
    // the smallest gap between neighbours need a sort (building the copies of a model
    // took 2 s of sorting before this first try).
    let above_min = v.iter().map(|&x| x - mn).filter(|&d| d > 0.0).fold(f32::INFINITY, f32::min);
    if let Some(r) = fit(v, codes, mn, mx, above_min, tol) {
        return Some(r);
    }
    let mut sorted = [0f32; 32];
    sorted[..v.len()].copy_from_slice(v);
    let sorted = &mut sorted[..v.len()];
    sorted.sort_unstable_by(f32::total_cmp);
    let gap = sorted.windows(2).map(|p| p[1] - p[0]).filter(|&d| d > 0.0).fold(f32::INFINITY, f32::min);
    fit(v, codes, mn, mx, gap, tol)
}

/// The step `gap / j` for the first `j` in 1..=4 that reproduces every value of the
/// block from `mn` within `tol`, writing the codes.
fn fit(v: &[f32], codes: &mut [u8], mn: f32, mx: f32, gap: f32, tol: f32) -> Option<(f32, f32)> {
    'step: for j in 1..=4 {
        // The whole range over its number of steps: a far more accurate step than the
        // gap itself.
        let n = ((mx - mn) / (gap / j as f32)).round();
        if n > 255.0 {
            return None;
        }
        let s = (mx - mn) / n;
        for (c, &x) in codes.iter_mut().zip(v) {
            let k = ((x - mn) / s).round();
            if (s.mul_add(k, mn) - x).abs() > tol {
                continue 'step;
            }
            *c = k as u8;
        }
        return Some((s, mn));
    }
    None
}

/// `x (..., in) · wᵀ -> (..., out)` for a contiguous f32 `x` on the CPU, with `w` packed;
/// no backward (the fast path only). Needs AVX2 and FMA ([`super::skinny::available`]).
pub struct PackedMatmul<'a>(pub &'a PackedWeight);

impl CustomOp1 for PackedMatmul<'_> {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s else { bail!("packed-matmul takes an f32 input") };
        let Some((x0, x1)) = l.contiguous_offsets() else { bail!("packed-matmul takes a contiguous input") };
        let w = self.0;
        let mut dims = l.dims().to_vec();
        if dims.last() != Some(&w.inn) {
            bail!("packed-matmul: x has shape {dims:?}, weight ({}, {})", w.out, w.inn);
        }
        if !super::skinny::available() {
            bail!("packed-matmul needs AVX2 and FMA");
        }
        let rows = l.shape().elem_count() / w.inn;
        *dims.last_mut().expect("x has a last dimension") = w.out;
        Ok((CpuStorage::F32(matmul(&x[x0..x1], rows, w)), Shape::from(dims)))
    }
}

/// Weight rows per parallel task (64 x 4864 bytes at most here: stays in L2).
const ROWS_PER_TASK: usize = 64;

/// Weight rows dequantised at a time into a scratch buffer that stays in L1 (4 x 1536
/// f32 = 24 KB at most here) while every x row passes over it.
const ROWS_PER_SCRATCH: usize = 4;

/// `y (rows, out) = x (rows, in) · wᵀ`.
fn matmul(x: &[f32], rows: usize, w: &PackedWeight) -> Vec<f32> {
    let out = w.out;
    let mut yt = vec![0f32; out * rows];
    if rows > 0 {
        yt.par_chunks_mut(ROWS_PER_TASK * rows).enumerate().for_each(|(i, yb)| {
            let mut scratch = vec![0f32; ROWS_PER_SCRATCH * w.inn];
            for (j, ys) in yb.chunks_mut(ROWS_PER_SCRATCH * rows).enumerate() {
                let (o, n) = (i * ROWS_PER_TASK + j * ROWS_PER_SCRATCH, ys.len() / rows);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: callers check `available()`; `dequantise` and `block_avx2`
                // assert that their slices are long enough.
                unsafe {
                    dequantise(w, o, n, &mut scratch);
                    super::skinny::block(x, rows, &scratch, n, w.inn, ys);
                }
            }
        });
    }
    super::skinny::untranspose(&yt, rows, out)
}

/// Weight rows `o..o + n` as f32 into `dst`: `zero + step * code`, eight at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dequantise(w: &PackedWeight, o: usize, n: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let len = n * w.inn;
    let first = o * w.inn / w.block;
    let blocks = &w.blocks[first..first + len / w.block];
    assert!(dst.len() >= len && w.codes.len() * if w.nibbles { 2 } else { 1 } >= (o + n) * w.inn);
    let code_bytes = if w.nibbles { 16 } else { w.block };
    let codes = w.codes.as_ptr().add(first * code_bytes);
    for (b, &(s, z)) in blocks.iter().enumerate() {
        let (step, zero) = (_mm256_set1_ps(s), _mm256_set1_ps(z));
        let out = dst.as_mut_ptr().add(b * w.block);
        if w.nibbles {
            let v = _mm_loadu_si128(codes.add(b * 16) as *const __m128i);
            let mask = _mm_set1_epi8(15);
            let (lo, hi) = (_mm_and_si128(v, mask), _mm_and_si128(_mm_srli_epi16(v, 4), mask));
            put(out, lo, step, zero);
            put(out.add(8), _mm_srli_si128(lo, 8), step, zero);
            put(out.add(16), hi, step, zero);
            put(out.add(24), _mm_srli_si128(hi, 8), step, zero);
        } else {
            for part in 0..w.block / 8 {
                put(out.add(part * 8), _mm_loadl_epi64(codes.add(b * w.block + part * 8) as *const __m128i), step, zero);
            }
        }
    }
}

/// Eight codes (the low 8 bytes of `c`) as `zero + step * code` at `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn put(out: *mut f32, c: std::arch::x86_64::__m128i, step: std::arch::x86_64::__m256, zero: std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    _mm256_storeu_ps(out, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), step, zero));
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Weights of the GGUF form: per block of `size`, a random step and zero, and codes
    /// below `levels`.
    fn quantised(out: usize, inn: usize, levels: u32, size: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut w = Vec::with_capacity(out * inn);
        for _ in 0..out * inn / size {
            let step = (next() % 1000) as f32 * 1e-5 + 1e-4;
            let zero = -((next() % 1000) as f32) * 1e-4;
            for _ in 0..size {
                w.push(step * (next() % levels) as f32 + zero);
            }
        }
        w
    }

    #[test]
    fn packs_gguf_style_blocks_exactly_and_refuses_others() {
        // (levels, block size): Q4, Q5, Q8 blocks of 32; Q6_K-like blocks of 16.
        for (levels, size) in [(16, 32), (32, 32), (256, 32), (64, 16)] {
            let w = quantised(8, 64, levels, size, levels as u64);
            let p = PackedWeight::exact(&w, 8, 64).expect("evenly spaced blocks pack");
            assert_eq!(p.block_size(), size, "levels {levels}");
            assert_eq!(p.code_bits(), if levels <= 16 { 4 } else { 8 }, "levels {levels}");
            for o in 0..8 {
                for i in 0..64 {
                    let (got, want) = (p.get(o, i), w[o * 64 + i]);
                    let block = w[o * 64 + i / size * size..][..size].iter().fold(0f32, |m, x| m.max(x.abs()));
                    assert!((got - want).abs() <= block * 4e-6, "levels {levels} ({o}, {i}): {got} vs {want}");
                }
            }
        }
        let random: Vec<f32> = (0..8 * 64).map(|i| ((i * 7919) % 1013) as f32 * 0.37f32.sqrt()).collect();
        assert!(PackedWeight::exact(&random, 8, 64).is_none(), "random weights are not of the packed form");
        assert!(PackedWeight::exact(&quantised(2, 40, 16, 8, 1), 2, 40).is_none(), "40 inputs are not whole blocks");
        let constant = vec![0.5f32; 64];
        assert_eq!(PackedWeight::exact(&constant, 2, 32).map(|p| p.get(1, 31)), Some(0.5));
    }

    #[test]
    fn matches_matmul_for_every_tile_shape() -> Result<()> {
        if !super::super::skinny::available() {
            return Ok(()); // the fast path never uses this kernel on such CPUs
        }
        let dev = Device::Cpu;
        for (rows, out, inn) in [(1, 1, 32), (3, 5, 64), (4, 130, 64), (7, 65, 96), (13, 129, 576), (16, 3, 32)] {
            // Odd rows get Q6_K-like blocks of 16.
            let wv = if rows % 2 == 1 { quantised(out, inn, 64, 16, rows as u64) } else { quantised(out, inn, 16, 32, rows as u64) };
            let p = PackedWeight::exact(&wv, out, inn).expect("packs");
            let x = Tensor::randn(0f32, 1., (rows, inn), &dev)?;
            let w = Tensor::from_vec(wv, (out, inn), &dev)?;
            let got = x.apply_op1_no_bwd(&PackedMatmul(&p))?;
            let want = x.matmul(&w.t()?)?;
            // Rounding in another summation order is bounded by the sum of the products'
            // magnitudes, not by the output: a sum that cancels to ~0.01 can still differ
            // by 1e-7 (CI saw exactly that with the output as the scale).
            let scale = x.abs()?.matmul(&w.abs()?.t()?)?.max_all()?.to_scalar::<f32>()?.max(1e-3);
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5 * scale, "rows {rows} out {out} in {inn}: max diff {diff} (largest sum of magnitudes {scale})");
        }
        let p = PackedWeight::exact(&quantised(5, 32, 16, 32, 9), 5, 32).expect("packs");
        assert_eq!(Tensor::zeros((2, 3, 32), candle_core::DType::F32, &dev)?.apply_op1_no_bwd(&PackedMatmul(&p))?.dims(), [2, 3, 5]);
        assert!(Tensor::zeros((2, 31), candle_core::DType::F32, &dev)?.apply_op1_no_bwd(&PackedMatmul(&p)).is_err());
        Ok(())
    }
}
