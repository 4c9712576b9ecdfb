//! The decoders' products for documents in bfloat16 with f32 accumulation, on
//! CPUs with AVX-512 BF16 (`vdpbf16ps`: 32 multiply-adds an instruction, twice f32 FMA's
//! rate; measured 232 against 115 GFLOP/s on one core of the development machine).
//!
//! Weights and activations are rounded to bfloat16 (8 bits of mantissa) and products are
//! summed in f32. That changes the function slightly, so it is a precision the caller
//! chooses (`embed::set_precision`, `DUETDB_PRECISION`); quality is measured in
//! docs/benchmarks.md. Only documents take it ([`for_documents`]). Chosen at run time: a CPU without the instructions keeps the f32
//! path, and nothing depends on `target-cpu`.

use super::fresh;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output columns of a packed panel: two registers of 16 lanes.
const NR: usize = 32;
/// Rows of a micro-tile.
const MR: usize = 8;
/// Rows per parallel task: its bf16 copy of the input and the weight panel it is
/// multiplying stay in the core's L2 while the task walks the panels.
const MC: usize = 64;

/// Whether this CPU has AVX-512F and AVX-512 BF16.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

thread_local! {
    /// Set while this thread's products may take the process's precision: documents
    /// ([`for_documents`]), and queries where that is AMX tiles ([`for_queries`]).
    static DOCUMENTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's products in the process's precision: what embedding
/// documents does. Queries take [`for_queries`]; everything else (training, transfer,
/// the decoders' own forwards) stays in f32: training compares fast and differentiable
/// forwards. A document takes the same path alone or in a batch, so its vector does not
/// depend on the batching.
pub fn for_documents<R>(f: impl FnOnce() -> R) -> R {
    with_documents(true, f)
}

/// Runs `f` with this thread's products for a query: in the process's precision where
/// bfloat16 products run on AMX tiles, in f32 elsewhere. A query is a few rows: on the
/// tiles, its products split over the cores ([`few_rows`]), it ran faster than on the f32
/// path's byte-per-weight kernels (`packed.rs`), which read fewer bytes but multiply-add
/// at AVX2's rate (docs/benchmarks.md, "gemm's AVX-512 kernels, and queries on AMX
/// tiles"). Without tiles queries keep the f32 kernels.
pub fn for_queries<R>(f: impl FnOnce() -> R) -> R {
    // The documents' rule (`chosen`), and tiles besides.
    with_documents(super::amx::available() && chosen(), f)
}

/// Runs `f` with this thread's "embedding documents" flag set to `on`, restoring it
/// afterwards (also when `f` panics).
fn with_documents<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DOCUMENTS.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(DOCUMENTS.with(|h| h.replace(on)));
    f()
}

/// Runs `f` in f32 even inside [`for_documents`] (the Prompting LLM's forward).
pub fn in_f32<R>(f: impl FnOnce() -> R) -> R {
    with_documents(false, f)
}

/// Whether a fast-path product with input `x` should run in bfloat16: f32 on the CPU,
/// inside [`for_documents`], and the process's precision says so (which also checks the
/// instructions).
pub fn wanted(x: &candle_core::Tensor) -> bool {
    documents(x) && chosen()
}

/// Whether `x` is an f32 input on the CPU inside [`for_documents`]: a product that may
/// take the process's precision (this file's or `int8.rs`'s).
pub(crate) fn documents(x: &candle_core::Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && DOCUMENTS.with(|h| h.get())
}

/// Whether the process's precision ([`crate::embed::precision`]) makes many-row
/// products run in bfloat16 on this CPU.
fn chosen() -> bool {
    use crate::embed::Precision;
    match crate::embed::precision() {
        Precision::F32 | Precision::Int8 => false,
        Precision::Auto => available() && (super::amx::available() || !intel()),
        Precision::Bf16 => {
            let ok = available();
            if !ok {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| tracing::warn!("bf16 precision asked for, but this CPU has no AVX-512 BF16: using f32"));
            }
            ok
        }
    }
}

/// Whether the CPU is Intel's. Its cores issue `vdpbf16ps` on one port at f32 FMA's
/// rate of multiply-adds, so without AMX tiles `auto` keeps f32 there: on the Sapphire
/// Rapids Xeon of docs/benchmarks.md with the tiles turned off (`DUETDB_AMX=0`),
/// bfloat16 ran 0.58x the f32 path end to end. On AMD's AVX-512 BF16 it ran 1.60x f32
/// (2026-12-04, with gemm's AVX2 kernels then), so it stays `auto`'s choice there.
fn intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // The vendor string "GenuineIntel" in ebx, edx, ecx of leaf 0.
        let r = std::arch::x86_64::__cpuid(0);
        (r.ebx, r.edx, r.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// f32 to bfloat16, rounding to nearest even.
fn bf16(x: f32) -> u16 {
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Two consecutive inputs as one 32-bit lane: element `2p` in the low half.
fn pair(lo: f32, hi: f32) -> u32 {
    (bf16(hi) as u32) << 16 | bf16(lo) as u32
}

/// A weight matrix (out, in) in bfloat16, cut into panels of [`NR`] output columns: for
/// panel `j` and input pair `p`, the 32 columns' pairs `(w[c][2p], w[c][2p+1])`.
#[derive(Debug)]
pub struct Bf16Weight {
    out: usize,
    inn: usize,
    panels: Vec<u32>,
}

impl Bf16Weight {
    /// The packed copy of `w` (out, in), row-major.
    pub fn new(w: &[f32], out: usize, inn: usize) -> Self {
        let kp = inn.div_ceil(2);
        let np = out.div_ceil(NR);
        let mut panels = vec![0u32; np * kp * NR];
        panels.par_chunks_mut(kp * NR).enumerate().for_each(|(j, panel)| {
            for c in 0..NR.min(out - j * NR) {
                let row = &w[(j * NR + c) * inn..(j * NR + c + 1) * inn];
                for p in 0..kp {
                    panel[p * NR + c] = pair(row[2 * p], row.get(2 * p + 1).copied().unwrap_or(0.0));
                }
            }
        });
        Self { out, inn, panels }
    }
}

/// `x @ w^T` with `x` (rows, in) and a [`Bf16Weight`], as a candle op without a backward.
pub struct Bf16Matmul<'a>(pub &'a Bf16Weight);

impl CustomOp1 for Bf16Matmul<'_> {
    fn name(&self) -> &'static str {
        "bf16-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if !available() {
            bail!("bf16-matmul needs AVX-512 BF16");
        }
        let w = self.0;
        let amx = with_amx(w);
        let mc = if amx { MC_AMX } else { MC };
        let all = 0..w.out.div_ceil(NR);
        let rows = l.shape().elem_count() / w.inn.max(1);
        if rows <= mc && rayon::current_num_threads() > 1 && all.len() > 1 {
            return few_rows(s, l, w, amx);
        }
        // SAFETY: `rows_times_panels` writes every value of the rows it is handed, for
        // all panels. AVX-512F and BF16 are checked above, AMX by `with_amx`.
        unsafe {
            super::ops::rows_in_tasks("bf16-matmul", s, l, (w.inn, w.out, mc), |xs, ys| {
                #[cfg(target_arch = "x86_64")]
                rows_times_panels(xs, w, all.clone(), ys, amx)
            })
        }
    }
}

/// A product of one task's rows or fewer (a query, a short document) split by panels
/// instead, so that every core works on its share of the weight: as one task, one core
/// did it all (a query took 55 ms so, against 23-30 ms split).
fn few_rows(s: &CpuStorage, l: &Layout, w: &Bf16Weight, amx: bool) -> Result<(CpuStorage, Shape)> {
    let x = super::ops::product_input("bf16-matmul", s, l, w.inn)?;
    let rows = x.len() / w.inn;
    let np = w.out.div_ceil(NR);
    // Two shares a thread: the cores rarely run at the same speed on a shared machine.
    let shares = (2 * rayon::current_num_threads()).min(np);
    let parts: Vec<(usize, Vec<f32>)> = (0..shares)
        .into_par_iter()
        .map(|i| {
            let js = i * np / shares..(i + 1) * np / shares;
            let cols = (js.end * NR).min(w.out) - js.start * NR;
            let mut ys: Vec<f32> = Vec::with_capacity(rows * cols);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked AVX-512F and BF16, and AMX where `amx`;
            // `rows_times_panels` writes all rows x cols values of the panels `js`.
            unsafe {
                rows_times_panels(x, w, js.clone(), &mut ys.spare_capacity_mut()[..rows * cols], amx);
                ys.set_len(rows * cols);
            };
            (js.start * NR, ys)
        })
        .collect();
    let mut y = vec![0f32; rows * w.out];
    for (c0, ys) in parts {
        let cols = ys.len() / rows.max(1);
        for (r, part) in ys.chunks_exact(cols.max(1)).enumerate() {
            y[r * w.out + c0..][..cols].copy_from_slice(part);
        }
    }
    Ok(super::ops::product_output(y, l, w.out))
}

/// Rows per parallel task with AMX tiles: the weight streams through the core once a task,
/// and a tile product does 256 times the work of a `vdpbf16ps`, so tasks take more rows.
const MC_AMX: usize = 128;

/// Whether `w`'s products take AMX tiles (whole tiles of input pairs only).
fn with_amx(w: &Bf16Weight) -> bool {
    // `bf16.rs` runs only where `available()`: AVX-512 BF16 converts the inputs.
    w.inn.div_ceil(2).is_multiple_of(super::amx::PAIRS) && available() && super::amx::available()
}

/// `out = xs @ w^T` for up to [`MC`] rows ([`MC_AMX`] with AMX, which `amx` says: only
/// where [`with_amx`] is true), for the output columns of panels `js` only: `out` holds
/// those columns of each row, every one of which is written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rows_times_panels(xs: &[f32], w: &Bf16Weight, js: std::ops::Range<usize>, out: &mut [MaybeUninit<f32>], amx: bool) {
    let kp = w.inn.div_ceil(2);
    let rows = xs.len() / w.inn;
    // Row stride of `out`, and where its first column is in the weight's.
    let (ld, c0) = ((js.end * NR).min(w.out) - js.start * NR, js.start * NR);
    // AMX takes whole tiles or blocks of rows: the rows past the input stay zero.
    let mut a = vec![0u32; if amx { super::amx::padded_rows(rows) } else { rows } * kp];
    for (row, pairs) in xs.chunks_exact(w.inn).zip(a.chunks_exact_mut(kp)) {
        to_pairs(row, pairs);
    }
    if amx {
        // SAFETY: the caller's `with_amx` checked the CPU, the OS and the shapes.
        unsafe {
            super::amx::blocks(&a, rows, kp, &w.panels[js.start * kp * NR..js.end * kp * NR], NR, |r0, j, c| {
                let cols = NR.min(ld - j * NR);
                for r in r0..rows.min(r0 + super::amx::BLOCK) {
                    put(&mut out[r * ld + j * NR..][..cols], &c[(r - r0) * NR..][..cols]);
                }
            })
        };
        return;
    }
    let mut tile = [0f32; MR * NR];
    for j in js {
        let panel = &w.panels[j * kp * NR..(j + 1) * kp * NR];
        let cols = NR.min(w.out - j * NR);
        for r0 in (0..rows).step_by(MR) {
            let mr = MR.min(rows - r0);
            let a = &a[r0 * kp..(r0 + mr) * kp];
            match mr {
                8 => tile_kernel::<8>(a, panel, kp, &mut tile),
                7 => tile_kernel::<7>(a, panel, kp, &mut tile),
                6 => tile_kernel::<6>(a, panel, kp, &mut tile),
                5 => tile_kernel::<5>(a, panel, kp, &mut tile),
                4 => tile_kernel::<4>(a, panel, kp, &mut tile),
                3 => tile_kernel::<3>(a, panel, kp, &mut tile),
                2 => tile_kernel::<2>(a, panel, kp, &mut tile),
                _ => tile_kernel::<1>(a, panel, kp, &mut tile),
            }
            for r in 0..mr {
                put(&mut out[(r0 + r) * ld + j * NR - c0..][..cols], &tile[r * NR..r * NR + cols]);
            }
        }
    }
}

/// A row of a tile's results into the output. A whole row (`NR` values) is a copy of a
/// size the compiler knows, done in registers: at a length known only at run time, each
/// row's copy was a call to `memmove`, 3.6% of the forward on AMX tiles (`perf`).
#[inline(always)]
fn put(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    if dst.len() == NR && src.len() == NR {
        for (d, s) in dst[..NR].iter_mut().zip(&src[..NR]) {
            d.write(*s);
        }
    } else {
        fresh::copied(dst, src);
    }
}

/// One row of f32 inputs as bfloat16 pairs ([`pair`]), 32 inputs an instruction
/// (`vcvtne2ps2bf16` rounds to nearest even, as [`bf16`] does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_pairs(row: &[f32], pairs: &mut [u32]) {
    use std::arch::x86_64::*;
    let whole = row.len() / 32;
    for i in 0..whole {
        // SAFETY: 32 inputs and 16 pairs from `i * 32` / `i * 16` are in bounds.
        unsafe {
            let lo = _mm512_loadu_ps(row.as_ptr().add(i * 32));
            let hi = _mm512_loadu_ps(row.as_ptr().add(i * 32 + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(pairs.as_mut_ptr().add(i * 16) as *mut _, v);
        }
    }
    for (two, p) in row[whole * 32..].chunks(2).zip(&mut pairs[whole * 16..]) {
        *p = pair(two[0], two.get(1).copied().unwrap_or(0.0));
    }
}

/// One tile: `R` rows of bf16 pairs (`a`, row-major, `kp` pairs a row) times a panel,
/// into `tile` (`R` x [`NR`], row-major).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_kernel<const R: usize>(a: &[u32], panel: &[u32], kp: usize, tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let pb = panel.as_ptr();
    for p in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(pb.add(p * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(pb.add(p * NR + 16) as *const _));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.get_unchecked(r * kp + p) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), acc[0]);
        _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), acc[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The product against f32 for shapes with every remainder (rows, columns, an odd
    /// input count): within bfloat16's rounding of both factors.
    #[test]
    fn matches_the_f32_product_within_bf16_rounding() -> Result<()> {
        if !available() {
            return Ok(()); // the f32 path is kept on such CPUs
        }
        let mut rng = fastrand::Rng::with_seed(3);
        for (rows, inn, out) in [(17, 64, 32), (70, 641, 45), (131, 96, 100), (9, 3, 1), (40, 1024, 70)] {
            let xs: Vec<f32> = (0..rows * inn).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let ws: Vec<f32> = (0..out * inn).map(|_| (rng.f32() * 2.0 - 1.0) * 0.1).collect();
            let x = Tensor::from_vec(xs, (rows, inn), &Device::Cpu)?;
            let w = Tensor::from_vec(ws.clone(), (out, inn), &Device::Cpu)?;
            let want = x.matmul(&w.t()?)?.to_vec2::<f32>()?;
            let got = x.apply_op1_no_bwd(&Bf16Matmul(&Bf16Weight::new(&ws, out, inn)))?.to_vec2::<f32>()?;
            // Each factor is off by at most 2^-9 relative: a sum of `inn` products of
            // magnitude up to 0.1 is off by at most inn * 0.1 * 2^-8.
            let tol = inn as f32 * 0.1 * 2f32.powi(-8);
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() <= tol, "{g} vs {w} ({rows}x{inn} @ {inn}x{out})");
            }
        }
        Ok(())
    }

    /// `rows_times_panels` over all panels into `n` NaNs: a value it leaves unwritten
    /// stays NaN and fails every comparison.
    ///
    /// # Safety
    /// As `rows_times_panels`.
    unsafe fn product(xs: &[f32], w: &Bf16Weight, n: usize, amx: bool) -> Vec<f32> {
        let mut out = vec![MaybeUninit::new(f32::NAN); n];
        // SAFETY: the caller's.
        unsafe { rows_times_panels(xs, w, 0..w.out.div_ceil(NR), &mut out, amx) };
        // SAFETY: every value was initialised (NaN, or written).
        out.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    /// AMX tiles and the AVX-512 kernel: the same bfloat16 factors, sums in another order.
    #[test]
    fn amx_tiles_match_the_avx512_kernel() {
        if !available() || !super::super::amx::available() {
            return; // no tiles here: the AVX-512 kernel is the one used
        }
        let mut rng = fastrand::Rng::with_seed(5);
        for (rows, inn, out) in [(1, 32, 1), (16, 640, 70), (17, 64, 33), (33, 64, 40), (131, 1024, 100), (64, 2048, 64)] {
            let xs: Vec<f32> = (0..rows * inn).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let ws: Vec<f32> = (0..out * inn).map(|_| (rng.f32() * 2.0 - 1.0) * 0.1).collect();
            let w = Bf16Weight::new(&ws, out, inn);
            assert!(with_amx(&w));
            // SAFETY: both checked above.
            let (tiles, plain) = unsafe { (product(&xs, &w, rows * out, true), product(&xs, &w, rows * out, false)) };
            for (a, b) in tiles.iter().zip(&plain) {
                assert!((a - b).abs() <= 1e-5 * inn as f32, "{a} vs {b} ({rows}x{inn} @ {inn}x{out})");
            }
        }
    }

    /// A few-row product split by panels over the threads gives exactly the numbers of
    /// the same rows in one task: a document's or query's vector does not depend on it.
    #[test]
    fn a_product_split_by_panels_is_the_whole_one_bit_for_bit() -> Result<()> {
        if !available() {
            return Ok(());
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for (rows, inn, out) in [(1, 64, 100), (13, 640, 1024), (40, 96, 33)] {
            let xs: Vec<f32> = (0..rows * inn).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let ws: Vec<f32> = (0..out * inn).map(|_| (rng.f32() * 2.0 - 1.0) * 0.1).collect();
            let w = Bf16Weight::new(&ws, out, inn);
            let x = Tensor::from_vec(xs.clone(), (rows, inn), &Device::Cpu)?;
            let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a thread pool");
            let split = pool.install(|| x.apply_op1_no_bwd(&Bf16Matmul(&w)))?.flatten_all()?.to_vec1::<f32>()?;
            // SAFETY: checked above, and `with_amx` for the tiles.
            let whole = unsafe { product(&xs, &w, rows * out, with_amx(&w)) };
            assert_eq!(split, whole, "{rows}x{inn} @ {inn}x{out}");
        }
        Ok(())
    }

    /// A query's few rows (one tile of rows) and the same rows among a document batch's
    /// (blocks of two tiles) get the same numbers, bit for bit.
    #[test]
    fn a_rows_numbers_do_not_depend_on_how_many_rows_share_the_tiles() {
        if !available() || !super::super::amx::available() {
            return;
        }
        let mut rng = fastrand::Rng::with_seed(11);
        let (rows, inn, out) = (45, 640, 96);
        let xs: Vec<f32> = (0..rows * inn).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let ws: Vec<f32> = (0..out * inn).map(|_| (rng.f32() * 2.0 - 1.0) * 0.1).collect();
        let w = Bf16Weight::new(&ws, out, inn);
        // SAFETY: checked above.
        let all = unsafe { product(&xs, &w, rows * out, true) };
        for few in [1, 7, 16, 20, 32, 33] {
            // SAFETY: checked above.
            let some = unsafe { product(&xs[..few * inn], &w, few * out, true) };
            assert_eq!(some, all[..few * out], "{few} rows");
        }
    }

    /// The vendor check that keeps `auto` in f32 on Intel cores without tiles agrees
    /// with the kernel's.
    #[test]
    fn knows_an_intel_cpu() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else { return };
        if let Some(v) = info.lines().find(|l| l.starts_with("vendor_id")) {
            assert_eq!(intel(), v.contains("GenuineIntel"), "{v}");
        }
    }

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        assert_eq!(bf16(f32::from_bits(0x3f80_8000)), 0x3f80, "a tie rounds to the even 0x3f80");
        assert_eq!(bf16(f32::from_bits(0x3f81_8000)), 0x3f82, "a tie rounds to the even 0x3f82");
        assert_eq!(bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16(-2.0), 0xc000);
    }
}
