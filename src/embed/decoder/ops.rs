//! The decoder's building blocks in two variants: fused (fast, no backward) and
//! differentiable (candle's fused ops have no backward: ARCHITECTURE.md, "What we learned
//! about candle"), plus a linear op for frozen weights whose backward skips the weight
//! gradient.

use super::{skinny, Kernels};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

/// `x @ w^T` for a frozen `w` of shape (out, in); `x` is (..., in).
///
/// On the differentiable path the product is computed outside the autograd graph and
/// attached to `x` by a custom op (`GradToInput`), whose backward returns `grad @ w` for `x` and
/// nothing for `w`: candle's own matmul backward would also compute the (unused)
/// weight gradient, which costs as much as the forward again.
pub fn linear(x: &Tensor, w: &Tensor, path: Kernels) -> Result<Tensor> {
    let (out_dim, in_dim) = w.dims2()?;
    let mut shape = x.dims().to_vec();
    let rows = x.elem_count() / in_dim;
    *shape.last_mut().unwrap() = out_dim;
    let x2 = x.detach().reshape((rows, in_dim))?;
    let y = if skinny::ROWS.contains(&rows) && w.device().is_cpu() && w.dtype() == DType::F32 && w.is_contiguous() && skinny::available() {
        x2.contiguous()?.apply_op2_no_bwd(w, &skinny::SkinnyMatmul)?
    } else if path == Kernels::Fast && w.device().is_cpu() && w.dtype() == DType::F32 && w.is_contiguous() {
        x2.contiguous()?.apply_op2_no_bwd(w, &Product)?
    } else {
        x2.matmul(&w.t()?)?
    }
    .reshape(shape)?;
    match path {
        Kernels::Fast => Ok(y),
        Kernels::Differentiable => x.apply_op2(&y.contiguous()?, GradToInput { w: w.clone() }),
    }
}

/// `x @ w^T` for a contiguous f32 `x` (rows, in) and `w` (out, in) on the CPU: the call
/// candle's matmul makes to the `gemm` crate, bit for bit the same numbers, without
/// zero-filling the output first (candle fills it with zeros that gemm, told not to read
/// it, then overwrites: 3.8% of Gemma3's f32 forward in `perf`, docs/benchmarks.md).
struct Product;

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "product"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, inn) = l2.shape().dims2()?;
        let x = product_input(self.name(), s1, l1, inn)?;
        let rows = l1.shape().dims2()?.0;
        let (CpuStorage::F32(w), Some((wa, wb))) = (s2, l2.contiguous_offsets()) else { candle_core::bail!("product takes a contiguous f32 weight") };
        let w = &w[wa..wb];
        let mut y: Vec<f32> = Vec::with_capacity(rows * out);
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // SAFETY: `x` is rows x inn and `w` out x inn, both contiguous (checked above);
        // `y` has room for rows x out, which gemm writes whole and, with `read_dst` off,
        // never reads; the length is set after it has written every element.
        unsafe {
            gemm::gemm(
                rows,
                out,
                inn,
                y.as_mut_ptr(),
                1,
                out as isize,
                false,
                x.as_ptr(),
                1,
                inn as isize,
                w.as_ptr(),
                inn as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
            y.set_len(rows * out);
        }
        Ok(product_output(y, l1, out))
    }
}

/// Returns its second argument; its backward sends `grad @ w` to the first.
struct GradToInput {
    w: Tensor,
}

impl CustomOp2 for GradToInput {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if !l2.is_contiguous() || l2.start_offset() != 0 {
            candle_core::bail!("frozen-linear expects a fresh contiguous product");
        }
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout, s2: &candle_core::CudaStorage, l2: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        if !l2.is_contiguous() || l2.start_offset() != 0 {
            candle_core::bail!("frozen-linear expects a fresh contiguous product");
        }
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out_dim, in_dim) = self.w.dims2()?;
        let rows = grad.elem_count() / out_dim;
        let gx = grad.reshape((rows, out_dim))?.matmul(&self.w)?.reshape(x.shape())?;
        debug_assert_eq!(gx.dim(D::Minus1)?, in_dim);
        Ok((Some(gx), None))
    }
}

/// RMS norm over the last dimension, scaled by `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, path: Kernels) -> Result<Tensor> {
    match path {
        Kernels::Fast if super::norm::wanted(x) => x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &super::norm::FastRmsNorm { eps: eps as f32 }),
        Kernels::Fast => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32),
        Kernels::Differentiable => candle_nn::ops::rms_norm_slow(x, w, eps as f32),
    }
}

/// `r + rms_norm(x) * w`: a residual stream `r` plus a normed block output `x` (the
/// post-norms of Gemma3), in one pass on the fast path.
pub fn add_rms_norm(r: &Tensor, x: &Tensor, w: &Tensor, eps: f64, path: Kernels) -> Result<Tensor> {
    match path {
        Kernels::Fast if super::norm::wanted(x) => {
            x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &r.contiguous()?, &super::norm::FastAddRmsNorm { eps: eps as f32 })
        }
        _ => r + rms_norm(x, w, eps, path)?,
    }
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor, path: Kernels) -> Result<Tensor> {
    match path {
        Kernels::Fast if super::activation::wanted(x) => x.contiguous()?.apply_op1_no_bwd(&super::activation::FastSoftmax),
        Kernels::Fast => candle_nn::ops::softmax_last_dim(x),
        Kernels::Differentiable => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Rotary embedding of `x` (b, heads, t, head_dim) with per-sequence tables `cos`,
/// `sin` (b, t, head_dim/2). `interleaved`: pairs (2i, 2i+1) as in llama GGUFs;
/// otherwise pairs (i, i + d/2) as in Qwen2 (NeoX layout).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool, path: Kernels) -> Result<Tensor> {
    if path == Kernels::Fast && !interleaved && super::rotary::wanted(x) {
        // Reads any layout whose last dimension is contiguous (heads moved in front of
        // the positions, as the decoder's blocks hand it).
        let x = if x.stride().last() == Some(&1) { x.clone() } else { x.contiguous()? };
        return x.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &super::rotary::FastRope);
    }
    let x = x.contiguous()?;
    match (path, interleaved) {
        (Kernels::Fast, true) => candle_nn::rotary_emb::rope_i(&x, cos, sin),
        (Kernels::Fast, false) => candle_nn::rotary_emb::rope(&x, cos, sin),
        (Kernels::Differentiable, interleaved) => {
            // candle's slow ropes take unbatched tables; these broadcast over the batch.
            let (b, h, t, d) = x.dims4()?;
            if interleaved {
                let cos = cos.reshape((b, 1, t, d / 2, 1))?;
                let sin = sin.reshape((b, 1, t, d / 2, 1))?;
                let x = x.reshape((b, h, t, d / 2, 2))?;
                let x0 = x.narrow(D::Minus1, 0, 1)?;
                let x1 = x.narrow(D::Minus1, 1, 1)?;
                let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
                let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
                Tensor::cat(&[y0, y1], D::Minus1)?.reshape((b, h, t, d))
            } else {
                let cos = cos.reshape((b, 1, t, d / 2))?;
                let sin = sin.reshape((b, 1, t, d / 2))?;
                let x1 = x.narrow(D::Minus1, 0, d / 2)?;
                let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
                let y1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let y2 = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
                Tensor::cat(&[y1, y2], D::Minus1)
            }
        }
    }
}

/// The forward of a many-row product op (`bf16.rs`, `int8.rs`): checks that `s` is a
/// contiguous f32 input of `inn` columns, then fills `(rows, out)` in parallel tasks of
/// `mc` rows, `rows(xs, ys)` computing the outputs `ys` of the input rows `xs`. The
/// output is not zero-filled first (`fresh.rs`: a zero fill cost 3.5% of the forward on
/// AMX tiles even done by each task in its cache).
///
/// # Safety
/// `rows` must write every value of the `ys` it is handed.
pub(crate) unsafe fn rows_in_tasks(
    name: &str,
    s: &candle_core::CpuStorage,
    l: &candle_core::Layout,
    (inn, out, mc): (usize, usize, usize),
    rows: impl Fn(&[f32], &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let x = product_input(name, s, l, inn)?;
    // SAFETY: `rows` writes every value of the chunk (the caller's promise).
    let y = unsafe {
        super::fresh::filled(x.len() / inn * out, mc * out, |first, ys| {
            let r0 = first / out;
            rows(&x[r0 * inn..(r0 + ys.len() / out) * inn], ys)
        })
    };
    Ok(product_output(y, l, out))
}

/// The f32 input of a product op with a weight of `inn` inputs: contiguous, its last
/// dimension `inn`.
pub(crate) fn product_input<'a>(name: &str, s: &'a candle_core::CpuStorage, l: &candle_core::Layout, inn: usize) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(x) = s else { candle_core::bail!("{name} takes f32") };
    let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("{name} takes a contiguous input") };
    let dims = l.dims();
    if dims.last() != Some(&inn) {
        candle_core::bail!("{name}: input of shape {dims:?} for a weight of {inn} inputs");
    }
    Ok(&x[a..b])
}

/// A product op's result `y`: the input's shape with `out` as its last dimension.
pub(crate) fn product_output(y: Vec<f32>, l: &candle_core::Layout, out: usize) -> (candle_core::CpuStorage, candle_core::Shape) {
    let mut shape = l.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out;
    }
    (candle_core::CpuStorage::F32(y), candle_core::Shape::from(shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_differentiable_ops_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev)?;
        let cos = Tensor::randn(0f32, 1., (2, 5, 4), &dev)?;
        let sin = Tensor::randn(0f32, 1., (2, 5, 4), &dev)?;
        for inter in [true, false] {
            let a = rope(&x, &cos, &sin, inter, Kernels::Fast)?;
            let b = rope(&x, &cos, &sin, inter, Kernels::Differentiable)?;
            assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        }
        let w = Tensor::randn(0f32, 1., 8, &dev)?;
        let a = rms_norm(&x, &w, 1e-5, Kernels::Fast)?;
        let b = rms_norm(&x, &w, 1e-5, Kernels::Differentiable)?;
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        let a = softmax(&x, Kernels::Fast)?;
        let b = softmax(&x, Kernels::Differentiable)?;
        assert!((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        Ok(())
    }

    #[test]
    fn frozen_linear_gives_the_input_gradient_only() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 4), &dev)?;
        let w = Tensor::randn(0f32, 1., (5, 4), &dev)?;
        let y = linear(x.as_tensor(), &w, Kernels::Differentiable)?;
        let reference = x.as_tensor().broadcast_matmul(&w.t()?)?;
        assert!((&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        let grads = y.sqr()?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).unwrap();
        let expect = (reference * 2.)?.broadcast_matmul(&w)?;
        assert!((g - expect)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        assert!(grads.get(&w).is_none(), "no gradient for the frozen weight");
        Ok(())
    }
}
