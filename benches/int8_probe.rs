//! How many multiply-adds a second one core does with f32 FMA and with AVX2's byte
//! products (`vpmaddubsw`), in tiles of 6 x 16 whose operands stay in L1: the ceiling a
//! byte kernel (`src/embed/decoder/int8.rs`) can reach against the f32 one on this CPU.
//!
//! Usage: `$(benches/driver.sh int8_probe)`; prints one line per kernel and their ratio.

use std::time::Instant;

/// Inputs per call: the f32 panel (256 x 16 x 4 bytes) stays in L1.
const K: usize = 256;
const REPS: usize = 200_000;

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    /// 6 rows x 16 columns of f32: two panel loads, six broadcasts, twelve FMAs an input.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_tile(a: &[f32], b: &[f32], out: &mut [f32; 96]) {
        let mut c = [_mm256_setzero_ps(); 12];
        for p in 0..super::K {
            let b0 = _mm256_loadu_ps(b.as_ptr().add(p * 16));
            let b1 = _mm256_loadu_ps(b.as_ptr().add(p * 16 + 8));
            for r in 0..6 {
                let av = _mm256_broadcast_ss(&*a.as_ptr().add(p * 6 + r));
                c[2 * r] = _mm256_fmadd_ps(av, b0, c[2 * r]);
                c[2 * r + 1] = _mm256_fmadd_ps(av, b1, c[2 * r + 1]);
            }
        }
        for (i, c) in c.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(i * 8), *c);
        }
    }

    /// The same tile in bytes, four inputs a step: `vpmaddubsw` pair sums, added in 16
    /// bits over `chunk` steps, then widened by `vpmaddwd` (as `int8.rs` does).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn byte_tile(a: &[u8], b: &[u8], chunk: usize, out: &mut [i32; 96]) {
        let ones = _mm256_set1_epi16(1);
        let mut c = [_mm256_setzero_si256(); 12];
        let mut g0 = 0;
        while g0 < super::K / 4 {
            let mut s = [_mm256_setzero_si256(); 12];
            for g in g0..g0 + chunk {
                let b0 = _mm256_loadu_si256(b.as_ptr().add(g * 64) as *const __m256i);
                let b1 = _mm256_loadu_si256(b.as_ptr().add(g * 64 + 32) as *const __m256i);
                for r in 0..6 {
                    let av = _mm256_set1_epi32((a.as_ptr().add(g * 24 + r * 4) as *const i32).read_unaligned());
                    s[2 * r] = _mm256_add_epi16(s[2 * r], _mm256_maddubs_epi16(b0, av));
                    s[2 * r + 1] = _mm256_add_epi16(s[2 * r + 1], _mm256_maddubs_epi16(b1, av));
                }
            }
            for (c, s) in c.iter_mut().zip(&s) {
                *c = _mm256_add_epi32(*c, _mm256_madd_epi16(*s, ones));
            }
            g0 += chunk;
        }
        for (i, c) in c.iter().enumerate() {
            _mm256_storeu_si256(out.as_mut_ptr().add(i * 8) as *mut __m256i, *c);
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            println!("this CPU has no AVX2 and FMA");
            return;
        }
        let macs = (REPS * K * 96) as f64;
        let a: Vec<f32> = (0..K * 6).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..K * 16).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut o = [0f32; 96];
        let t = Instant::now();
        for _ in 0..REPS {
            // SAFETY: AVX2 and FMA are checked above; the slices hold K steps.
            unsafe { kernels::f32_tile(std::hint::black_box(&a), std::hint::black_box(&b), &mut o) };
            std::hint::black_box(&o);
        }
        let f32_rate = macs / t.elapsed().as_secs_f64() / 1e9;
        println!("f32 FMA: {f32_rate:.1} G multiply-adds/s");
        let a8: Vec<u8> = (0..K * 6).map(|i| (i % 100) as u8).collect();
        let b8: Vec<u8> = (0..K * 16).map(|i| (i % 16) as u8).collect();
        let mut oi = [0i32; 96];
        for chunk in [1, 2, 4, 8] {
            let t = Instant::now();
            for _ in 0..REPS {
                // SAFETY: as above.
                unsafe { kernels::byte_tile(std::hint::black_box(&a8), std::hint::black_box(&b8), chunk, &mut oi) };
                std::hint::black_box(&oi);
            }
            let rate = macs / t.elapsed().as_secs_f64() / 1e9;
            println!("bytes, {chunk} step(s) a widening: {rate:.1} G multiply-adds/s, {:.2}x f32", rate / f32_rate);
        }
    }
}
