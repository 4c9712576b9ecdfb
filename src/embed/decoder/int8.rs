//! The decoders' products for documents with 8-bit activations and the GGUF file's own
//! weight codes, on CPUs with AVX2 (`vpmaddubsw`: 32 byte products an instruction).
//!
//! The weights stay exactly what the file holds: inside each block of 32 (16 for
//! Q6_K) inputs they are `zero + step * code` with codes of 4 to 8 bits (`packed.rs`
//! finds that form). Only the activations are rounded: each row's block of inputs to
//! signed bytes with its own scale, as llama.cpp's Q8 blocks do. A block's product is
//! then `step * sx * Σ code·xq + zero * Σ x`, the first sum in integers. That changes
//! the function slightly, so it is a precision the caller chooses
//! (`embed::set_precision`, `DUETDB_PRECISION=int8`); quality is measured in
//! docs/benchmarks.md. Chosen at run time, like `bf16.rs`: nothing depends on
//! `target-cpu`.

use super::fresh;
use super::packed::PackedWeight;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output columns of a panel: two registers of 8 i32 lanes.
const NR: usize = 16;
/// Rows of a micro-tile.
const MR: usize = 4;
/// Rows per parallel task: their bytes (at most 64 x 2048) stay in L2 while the task
/// walks every panel.
const MC: usize = 64;

/// Whether this CPU has AVX2 and FMA.
pub fn available() -> bool {
    super::skinny::available()
}

/// Whether a fast-path product with input `x` should take this kernel: a document's
/// f32 product on the CPU ([`super::bf16::documents`]; at any number of rows, so that a
/// document's vector does not depend on its batch), the process's precision is `int8`,
/// and the CPU has AVX2 (else a warning, once, and f32).
pub fn wanted(x: &candle_core::Tensor) -> bool {
    if !super::bf16::documents(x) || crate::embed::precision() != crate::embed::Precision::Int8 {
        return false;
    }
    let ok = available();
    if !ok {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| tracing::warn!("int8 precision asked for, but this CPU has no AVX2: using f32"));
    }
    ok
}

/// A weight matrix (out, in) as the file's codes, cut into panels of [`NR`] output
/// columns: for panel `j` and input group `g` (4 inputs), the 16 columns' four codes.
#[derive(Debug)]
pub struct Int8Weight {
    out: usize,
    inn: usize,
    block: usize,
    /// The largest activation byte: products of two adjacent inputs must fit an i16
    /// (`vpmaddubsw` saturates), so 127 for codes below 128, less for 8-bit codes.
    qmax: f32,
    /// Groups whose 16-bit pair sums can be added before they overflow an i16 (8 for
    /// 4-bit codes, 4 for 5-bit, 2 for 6-bit, 1 for 8-bit): one widening `vpmaddwd` per
    /// that many products instead of one each.
    chunk: usize,
    panels: Vec<u8>,
    /// Per panel and block: 16 steps, then 16 zeros.
    scales: Vec<f32>,
}

impl Int8Weight {
    /// The panels of a packed weight (one whose blocks are evenly spaced codes).
    pub fn new(p: &PackedWeight) -> Self {
        let (out, inn) = p.dims();
        let block = p.block_size();
        let (groups, blocks, np) = (inn / 4, inn / block, out.div_ceil(NR));
        let mut panels = vec![0u8; np * groups * NR * 4];
        let mut scales = vec![0f32; np * blocks * 2 * NR];
        panels.par_chunks_mut(groups * NR * 4).zip(scales.par_chunks_mut(blocks * 2 * NR)).enumerate().for_each(|(j, (panel, sc))| {
            for c in 0..NR.min(out - j * NR) {
                let o = j * NR + c;
                for i in 0..inn {
                    panel[(i / 4) * NR * 4 + c * 4 + i % 4] = p.code_at(o, i);
                }
                for b in 0..blocks {
                    let (step, zero) = p.block_at(o, b);
                    sc[b * 2 * NR + c] = step;
                    sc[b * 2 * NR + NR + c] = zero;
                }
            }
        });
        let top = panels.par_iter().copied().max().unwrap_or(0).max(1) as f32;
        let qmax = (32767.0 / (2.0 * top)).floor().min(127.0);
        let chunk = ((32767.0 / (2.0 * top * qmax)).floor() as usize).clamp(1, block / 4);
        Self { out, inn, block, qmax, chunk, panels, scales }
    }
}

/// `x @ w^T` with `x` (rows, in) and an [`Int8Weight`], as a candle op without a backward.
pub struct Int8Matmul<'a>(pub &'a Int8Weight);

impl CustomOp1 for Int8Matmul<'_> {
    fn name(&self) -> &'static str {
        "int8-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if !available() {
            bail!("int8-matmul needs AVX2 and FMA");
        }
        let w = self.0;
        // SAFETY: `rows_times_panels` writes every value of the rows it is handed. AVX2
        // and FMA are checked above.
        unsafe {
            super::ops::rows_in_tasks("int8-matmul", s, l, (w.inn, w.out, MC), |xs, ys| {
                #[cfg(target_arch = "x86_64")]
                rows_times_panels(xs, w, ys)
            })
        }
    }
}

/// Rows of activations as bytes: per row and block a scale (`x ≈ scale * q`) and the
/// exact sum of the block's inputs (for the zeros' term). Rows are padded with zeros to
/// a multiple of [`MR`].
struct Quantised {
    q: Vec<i8>,
    scale: Vec<f32>,
    sum: Vec<f32>,
}

fn quantise(xs: &[f32], inn: usize, block: usize, qmax: f32) -> Quantised {
    let rows = xs.len() / inn;
    let padded = rows.div_ceil(MR) * MR;
    let blocks = inn / block;
    let mut q = Quantised { q: vec![0; padded * inn], scale: vec![0.0; padded * blocks], sum: vec![0.0; padded * blocks] };
    for (k, xb) in xs.chunks_exact(block).enumerate() {
        let m = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = m / qmax;
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        for (d, v) in q.q[k * block..(k + 1) * block].iter_mut().zip(xb) {
            *d = (v * inv).round() as i8;
        }
        q.scale[k] = s;
        q.sum[k] = xb.iter().sum();
    }
    q
}

/// `out = xs @ w^T` for up to [`MC`] rows, every value of `out` written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_times_panels(xs: &[f32], w: &Int8Weight, out: &mut [MaybeUninit<f32>]) {
    let rows = xs.len() / w.inn;
    let a = quantise(xs, w.inn, w.block, w.qmax);
    let (groups, blocks) = (w.inn / 4, w.inn / w.block);
    let mut tile = [0f32; MR * NR];
    for j in 0..w.out.div_ceil(NR) {
        let panel = &w.panels[j * groups * NR * 4..(j + 1) * groups * NR * 4];
        let scales = &w.scales[j * blocks * 2 * NR..(j + 1) * blocks * 2 * NR];
        let cols = NR.min(w.out - j * NR);
        for r0 in (0..rows).step_by(MR) {
            tile_kernel(&a, r0, w, panel, scales, &mut tile);
            for r in 0..MR.min(rows - r0) {
                fresh::copied(&mut out[(r0 + r) * w.out + j * NR..][..cols], &tile[r * NR..r * NR + cols]);
            }
        }
    }
}

/// One tile: rows `r0..r0 + MR` of the activations times a panel, into `tile` (MR x NR).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_kernel(a: &Quantised, r0: usize, w: &Int8Weight, panel: &[u8], scales: &[f32], tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    let (inn, block) = (w.inn, w.block);
    let blocks = inn / block;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let pb = panel.as_ptr();
    let xq = a.q.as_ptr().add(r0 * inn);
    for b in 0..blocks {
        let mut int = [[_mm256_setzero_si256(); 2]; MR];
        let end = (b + 1) * block / 4;
        let mut g0 = b * block / 4;
        while g0 < end {
            // Pair sums in 16 bits for `chunk` groups (they cannot overflow: see `chunk`),
            // then widened to 32 once.
            let mut short = [[_mm256_setzero_si256(); 2]; MR];
            for g in g0..(g0 + w.chunk).min(end) {
                let w0 = _mm256_loadu_si256(pb.add(g * NR * 4) as *const __m256i);
                let w1 = _mm256_loadu_si256(pb.add(g * NR * 4 + 32) as *const __m256i);
                for (r, short) in short.iter_mut().enumerate() {
                    let xb = _mm256_set1_epi32((xq.add(r * inn + g * 4) as *const i32).read_unaligned());
                    short[0] = _mm256_add_epi16(short[0], _mm256_maddubs_epi16(w0, xb));
                    short[1] = _mm256_add_epi16(short[1], _mm256_maddubs_epi16(w1, xb));
                }
            }
            for (int, short) in int.iter_mut().zip(&short) {
                int[0] = _mm256_add_epi32(int[0], _mm256_madd_epi16(short[0], ones));
                int[1] = _mm256_add_epi32(int[1], _mm256_madd_epi16(short[1], ones));
            }
            g0 += w.chunk;
        }
        let sc = scales.as_ptr().add(b * 2 * NR);
        let (s0, s1, z0, z1) = (_mm256_loadu_ps(sc), _mm256_loadu_ps(sc.add(8)), _mm256_loadu_ps(sc.add(16)), _mm256_loadu_ps(sc.add(24)));
        for r in 0..MR {
            let sx = _mm256_set1_ps(*a.scale.get_unchecked((r0 + r) * blocks + b));
            let sum = _mm256_set1_ps(*a.sum.get_unchecked((r0 + r) * blocks + b));
            acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(int[r][0]), _mm256_mul_ps(s0, sx), _mm256_fmadd_ps(z0, sum, acc[r][0]));
            acc[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(int[r][1]), _mm256_mul_ps(s1, sx), _mm256_fmadd_ps(z1, sum, acc[r][1]));
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR), acc[0]);
        _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR + 8), acc[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Weights of the GGUF form (as in `packed.rs`'s tests): per block a random step and
    /// zero, codes below `levels`.
    fn quantised(out: usize, inn: usize, levels: u32, size: usize, rng: &mut fastrand::Rng) -> Vec<f32> {
        let mut w = Vec::with_capacity(out * inn);
        for _ in 0..out * inn / size {
            let (step, zero) = (rng.f32() * 0.01 + 1e-4, -rng.f32() * 0.1);
            w.extend((0..size).map(|_| step * rng.u32(0..levels) as f32 + zero));
        }
        w
    }

    /// Against the f32 product for Q4-, Q6_K- and Q8-like blocks and shapes with every
    /// remainder: within the activations' rounding (half a step of each block's scale).
    #[test]
    fn matches_the_f32_product_within_the_activations_rounding() -> Result<()> {
        if !available() {
            return Ok(()); // the f32 path is kept on such CPUs
        }
        let mut rng = fastrand::Rng::with_seed(5);
        for (rows, inn, out, levels, size) in [(17, 64, 32, 16, 32), (70, 640, 45, 64, 16), (131, 96, 100, 256, 32), (5, 32, 1, 16, 32)] {
            let xs: Vec<f32> = (0..rows * inn).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let ws = quantised(out, inn, levels, size, &mut rng);
            let p = PackedWeight::exact(&ws, out, inn).expect("GGUF-form weights pack");
            let iw = Int8Weight::new(&p);
            let x = Tensor::from_vec(xs.clone(), (rows, inn), &Device::Cpu)?;
            let w = Tensor::from_vec(ws.clone(), (out, inn), &Device::Cpu)?;
            let want = x.matmul(&w.t()?)?.to_vec2::<f32>()?;
            let got = x.apply_op1_no_bwd(&Int8Matmul(&iw))?.to_vec2::<f32>()?;
            for r in 0..rows {
                for c in 0..out {
                    // Each input is off by at most half its block's step (max|x| / qmax / 2).
                    let tol: f32 = (0..inn / size)
                        .map(|b| {
                            let xb = &xs[r * inn + b * size..][..size];
                            let step = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / iw.qmax;
                            let wb = &ws[c * inn + b * size..][..size];
                            0.5 * step * wb.iter().map(|v| v.abs()).sum::<f32>()
                        })
                        .sum::<f32>()
                        + 1e-4;
                    let (g, e) = (got[r][c], want[r][c]);
                    assert!((g - e).abs() <= tol, "{g} vs {e} (tolerance {tol}) at ({r}, {c}) of {rows}x{inn} @ {inn}x{out}, {levels} levels");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn eight_bit_codes_keep_adjacent_products_inside_an_i16() {
        let mut rng = fastrand::Rng::with_seed(1);
        let p = PackedWeight::exact(&quantised(16, 64, 256, 32, &mut rng), 16, 64).unwrap();
        let w = Int8Weight::new(&p);
        let top = *w.panels.iter().max().unwrap() as f32;
        assert!(2.0 * top * w.qmax <= 32767.0, "qmax {} with codes up to {top}", w.qmax);
        assert_eq!(w.chunk, 1);
        // 4-bit codes: full bytes, and eight groups' pair sums (8 x 2 x 15 x 127) in an i16.
        let p4 = PackedWeight::exact(&quantised(16, 64, 16, 32, &mut rng), 16, 64).unwrap();
        let w4 = Int8Weight::new(&p4);
        assert_eq!((w4.qmax, w4.chunk), (127.0, 8));
        assert!(w4.chunk as f32 * 2.0 * 15.0 * w4.qmax <= 32767.0);
    }
}
