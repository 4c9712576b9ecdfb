//! The MLP gate activations on the fast path, eight lanes at a time.
//!
//! Both are `x * sigmoid(k(x))`: SiLU with `k(x) = x`, GELU's tanh approximation with
//! `k(x) = 2 sqrt(2/pi) (x + 0.044715 x^3)` (as `0.5 (1 + tanh(u)) = sigmoid(2u)`).
//! The exact GELU (BERT's) is `x Phi(x)`, with the error function by Abramowitz and
//! Stegun's 7.1.26 (absolute error below 1.5e-7) on the same `exp`.
//! candle computes them one element at a time through libm's `expf`/`tanhf`, which took
//! about a tenth of a Gemma3 query (`perf`); this computes `exp` with a polynomial
//! (relative error below 1e-7 over the range used) on AVX2.

use super::{fresh, Activation};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape};
use std::mem::MaybeUninit;

/// Whether the fast path should use [`FastActivation`] on `x`: f32 on a CPU with AVX2
/// and FMA, unless `DUETDB_FAST_ACTIVATION=0` (for benchmarks that compare both).
pub fn wanted(x: &candle_core::Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && *ON.get_or_init(|| std::env::var("DUETDB_FAST_ACTIVATION").map_or(true, |v| v != "0") && super::skinny::available())
}

/// The activation as a candle op without a backward (the fast path only). Needs AVX2
/// and FMA ([`super::skinny::available`]).
pub struct FastActivation(pub Activation);

impl CustomOp1 for FastActivation {
    fn name(&self) -> &'static str {
        "fast-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(self.name(), s, l)?;
        // Both cores: a batch's gate is millions of values.
        // SAFETY: `gated` writes every value of the chunk; AVX2 and FMA are checked by
        // `input`.
        let y = unsafe {
            fresh::filled(x.len(), 16 * 1024, |first, c| {
                #[cfg(target_arch = "x86_64")]
                gated(&x[first..first + c.len()], None, self.0, c);
            })
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// The MLP's gated product `act(gate) * up` as one candle op without a backward (the
/// fast path only): one pass over the gate instead of the activation's and the
/// product's (each a new tensor of the MLP's width). Needs AVX2 and FMA.
pub struct GatedProduct(pub Activation);

impl candle_core::CustomOp2 for GatedProduct {
    fn name(&self) -> &'static str {
        "gated-product"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (input(self.name(), s1, l1)?, input(self.name(), s2, l2)?);
        if l1.dims() != l2.dims() {
            bail!("gated-product of a gate {:?} and an up {:?}", l1.dims(), l2.dims());
        }
        // SAFETY: `gated` writes every value of the chunk; AVX2 and FMA are checked by
        // `input`.
        let y = unsafe {
            fresh::filled(gate.len(), 16 * 1024, |first, c| {
                let at = first..first + c.len();
                #[cfg(target_arch = "x86_64")]
                gated(&gate[at.clone()], Some(&up[at]), self.0, c);
            })
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// Abramowitz and Stegun 7.1.26: `erf(z) = 1 - t P(t) e^(-z^2)`, `t = 1 / (1 + P z)`, z >= 0.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_72, 1.421_413_8, -1.453_152_1, 1.061_405_4];

/// A fast op's input: contiguous f32, on a CPU with AVX2 and FMA.
fn input<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(x) = s else { bail!("{op} takes f32") };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op} takes a contiguous input") };
    if !super::skinny::available() {
        bail!("{op} needs AVX2 and FMA");
    }
    Ok(&x[a..b])
}

/// The scalar definition, for the tail and for tests.
pub fn reference(x: f32, a: Activation) -> f32 {
    let k = match a {
        Activation::Silu => x,
        Activation::GeluTanh => 2.0 * 0.797_884_6 * (x + 0.044715 * x * x * x),
        Activation::GeluErf => {
            let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
            let t = 1.0 / (1.0 + ERF_P * z);
            let poly = ERF_A.iter().rev().fold(0.0, |p, c| p * t + c) * t;
            let erf = 1.0 - poly * (-z * z).exp();
            return 0.5 * x * (1.0 + erf.copysign(x));
        }
    };
    x / (1.0 + (-k).exp())
}

/// `y = x * sigmoid(k(x))`, times `up` when given, every value of `y` (of `x`'s length)
/// written: one pass (the product with `up` is the same f32 multiplication as a pass of
/// its own, so the same numbers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gated(x: &[f32], up: Option<&[f32]>, a: Activation, y: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    assert!(y.len() == x.len() && up.is_none_or(|u| u.len() == x.len()), "gated: lengths differ");
    let n = x.len() / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    let py = y.as_mut_ptr() as *mut f32;
    for i in (0..n).step_by(8) {
        // SAFETY: `i + 8 <= n` for `x`, `up` and `y`, all of one length (asserted).
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let g = if a == Activation::GeluErf {
                gelu_erf(v)
            } else {
                let k = match a {
                    Activation::Silu | Activation::GeluErf => v,
                    Activation::GeluTanh => {
                        let v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
                        _mm256_mul_ps(_mm256_set1_ps(2.0 * 0.797_884_6), _mm256_fmadd_ps(_mm256_set1_ps(0.044715), v3, v))
                    }
                };
                let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), k));
                _mm256_div_ps(v, _mm256_add_ps(one, e))
            };
            let g = match up {
                Some(u) => _mm256_mul_ps(g, _mm256_loadu_ps(u.as_ptr().add(i))),
                None => g,
            };
            _mm256_storeu_ps(py.add(i), g);
        }
    }
    for i in n..x.len() {
        let g = reference(x[i], a);
        y[i].write(up.map_or(g, |u| g * u[i]));
    }
}

/// Softmax over the last dimension of a contiguous f32 tensor with the AVX2 `exp`:
/// candle's fused `softmax_last_dim` calls libm's `expf` once per element, which took
/// about a twentieth of a MiniLM forward (`perf`). Needs AVX2 and FMA
/// ([`super::skinny::available`]).
pub struct FastSoftmax;

impl CustomOp1 for FastSoftmax {
    fn name(&self) -> &'static str {
        "fast-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(self.name(), s, l)?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        // Rows per parallel task: enough work to pay for the hand-off.
        let rows = (4096 / n).max(1);
        // SAFETY: `copied` writes every value of the chunk.
        let y = unsafe {
            fresh::filled(x.len(), rows * n, |first, c| {
                for row in fresh::copied(c, &x[first..first + c.len()]).chunks_mut(n) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2 and FMA are checked by `input`.
                    softmax_row(row)
                }
            })
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// `x <- softmax(x)` in place, one row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn softmax_row(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len() / 8 * 8;
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    // `exp` clamps its input at -87: below it (masked positions, -inf) the weight is 0,
    // exactly, as candle's softmax gives it.
    let low = _mm256_set1_ps(-87.0);
    for i in (0..n).step_by(8) {
        let p = x.as_mut_ptr().add(i);
        let d = _mm256_sub_ps(_mm256_loadu_ps(p), m);
        let e = _mm256_and_ps(exp(d), _mm256_cmp_ps::<_CMP_GE_OQ>(d, low));
        _mm256_storeu_ps(p, e);
        acc = _mm256_add_ps(acc, e);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    let mut sum: f32 = lanes.iter().sum();
    for v in &mut x[n..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    // Weights below f32's smallest normal number become 0. They add nothing to a sum of
    // 1, and subnormal inputs make the next product (attention times values) take
    // microcode assists on Intel cores: with them, Gemma3's f32 forward ran 3x slower on
    // a Xeon (docs/benchmarks.md, "Subnormal attention weights").
    let inv = _mm256_set1_ps(1.0 / sum);
    let tiny = _mm256_set1_ps(f32::MIN_POSITIVE);
    for i in (0..n).step_by(8) {
        let p = x.as_mut_ptr().add(i);
        let w = _mm256_mul_ps(_mm256_loadu_ps(p), inv);
        _mm256_storeu_ps(p, _mm256_and_ps(w, _mm256_cmp_ps::<_CMP_GE_OQ>(w, tiny)));
    }
    for v in &mut x[n..] {
        *v /= sum;
        if *v < f32::MIN_POSITIVE {
            *v = 0.0;
        }
    }
}

/// `x Phi(x)` for eight lanes (see [`reference`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_erf(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let one = _mm256_set1_ps(1.0);
    let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), z, one));
    let mut poly = _mm256_set1_ps(ERF_A[4]);
    for c in ERF_A[..4].iter().rev() {
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(*c));
    }
    poly = _mm256_mul_ps(poly, t);
    let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z)));
    let erf_abs = _mm256_fnmadd_ps(poly, e, one);
    // erf is odd: give it x's sign.
    let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(sign, x));
    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), x), _mm256_add_ps(one, erf))
}

/// `e^x` for eight lanes: `x = n ln2 + r` with |r| <= ln2 / 2, a degree-7 Taylor
/// polynomial for `e^r`, and `2^n` built in the exponent bits. Inputs are clamped to
/// [-87, 88], where `e^x` is a normal f32 (outside, sigmoid is 0 or 1 to f32 precision).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
    let n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // ln 2 in two parts, so that n * ln2_hi is exact.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    _mm256_mul_ps(p, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_the_definition_and_candle() -> Result<()> {
        if !super::super::skinny::available() {
            return Ok(()); // the fast path keeps candle's ops on such CPUs
        }
        // A sweep over the range that matters, the extremes, and a length with a tail.
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.005).collect();
        xs.extend([-200.0, -90.0, -30.0, 30.0, 90.0, 200.0, 0.0, -0.0, 1e-8]);
        let t = Tensor::new(xs.as_slice(), &Device::Cpu)?;
        for (a, stock) in [(Activation::Silu, t.silu()?), (Activation::GeluTanh, t.gelu()?), (Activation::GeluErf, t.gelu_erf()?)] {
            let got = t.apply_op1_no_bwd(&FastActivation(a))?.to_vec1::<f32>()?;
            for ((x, g), s) in xs.iter().zip(&got).zip(stock.to_vec1::<f32>()?) {
                let want = reference(*x, a);
                // The exact GELU's `1 + erf` cancels for negative x: an absolute error of
                // a few 1e-8 of x there.
                let tol = match a {
                    Activation::GeluErf => 2e-6 * want.abs() + 2e-7 * x.abs().max(1.0),
                    _ => 2e-6 * want.abs().max(1e-3),
                };
                assert!((g - want).abs() <= tol, "{a:?}({x}) = {g}, definition {want}");
                // candle's `0.5 x (1 + tanh u)` cancels for negative x: an absolute error
                // of a few ulps of x.
                assert!((g - s).abs() <= 4e-6 * s.abs() + 2e-7 * x.abs().max(1.0), "{a:?}({x}) = {g}, candle {s}");
            }
        }
        Ok(())
    }

    /// The fused gated product is the activation times `up`, bit for bit, across task
    /// boundaries (more values than one task's 16,384).
    #[test]
    fn the_gated_product_is_the_activation_times_up() -> Result<()> {
        if !super::super::skinny::available() {
            return Ok(());
        }
        let gate = (Tensor::randn(0f32, 1., (9, 4001), &Device::Cpu)? * 3.0)?;
        let up = Tensor::randn(0f32, 1., (9, 4001), &Device::Cpu)?;
        for a in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
            let fused = gate.apply_op2_no_bwd(&up, &GatedProduct(a))?.flatten_all()?.to_vec1::<f32>()?;
            let apart = (gate.apply_op1_no_bwd(&FastActivation(a))? * &up)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(fused, apart, "{a:?}");
        }
        assert!(gate.apply_op2_no_bwd(&up.narrow(1, 0, 4000)?.contiguous()?, &GatedProduct(Activation::Silu)).is_err(), "shapes must agree");
        Ok(())
    }

    #[test]
    fn fast_softmax_matches_candles() -> Result<()> {
        if !super::super::skinny::available() {
            return Ok(());
        }
        // Rows of several lengths (tails), a padded key (f32::MIN) and large scores.
        for n in [1, 7, 8, 33, 256] {
            let xs: Vec<f32> = (0..5 * n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3).collect();
            let mut xs = xs;
            xs[n - 1] = f32::MIN;
            let t = Tensor::from_vec(xs, (5, n), &Device::Cpu)?;
            let ours = t.apply_op1_no_bwd(&FastSoftmax)?.to_vec2::<f32>()?;
            let want = candle_nn::ops::softmax_last_dim(&t)?.to_vec2::<f32>()?;
            for (a, b) in ours.iter().flatten().zip(want.iter().flatten()) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6) + 1e-9, "{a} vs {b} (n = {n})");
                // No subnormal weight: they make the next product slow on Intel cores.
                assert!(*a == 0.0 || a.is_normal(), "subnormal weight {a:e} (n = {n})");
            }
            if n > 1 {
                assert_eq!(ours[0][n - 1], 0.0, "a padded key keeps a weight (n = {n})");
            }
        }
        Ok(())
    }
}
