//! Attention of a packed batch (`unpadded.rs`) in one op: every row's queries over its
//! own keys, written straight into the layout the output projection reads.
//!
//! Done with candle's ops, attention over the packed rows took, per row: a copy of the
//! queries into product order, a product whose output candle zero-fills first, a pass
//! dividing by sqrt(head_dim), a pass adding the mask, the softmax, a second product
//! with its zero fill, a transpose copy back to (positions, heads x head_dim), and at
//! the end a copy joining the rows. Here each (row, head) is one task: the scale rides
//! on the first product (gemm's `beta`), the causal and sliding-window limits are
//! ranges (no mask tensor), the softmax runs over the keys a query sees, and the second
//! product writes into the head's columns of the output. The numbers are those of
//! [`super::Decoder`]'s `attend` up to rounding (multiplying by the scale instead of
//! dividing; tested within 1e-5).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether the packed forward should use [`PackedAttention`] for queries `q`: f32 on a
/// CPU with AVX2 and FMA (for the softmax), unless `DUETDB_FAST_ATTENTION=0` (for
/// benchmarks that compare both).
pub fn wanted(q: &Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    q.device().is_cpu()
        && q.dtype() == candle_core::DType::F32
        && *ON.get_or_init(|| std::env::var("DUETDB_FAST_ATTENTION").map_or(true, |v| v != "0") && super::skinny::available())
}

/// Causal attention of rows packed one after another into one sequence, as a candle op
/// without a backward (the fast path only): queries `q` (1, heads, queries, head_dim),
/// keys and values (1, kv_heads, positions, head_dim), all contiguous; the output is
/// (1, queries, heads x head_dim). Query head `h` reads key head `h / (heads /
/// kv_heads)`, as in grouped-query attention.
pub struct PackedAttention<'a> {
    /// Each row's first position in the packed sequence and its number of positions.
    pub rows: &'a [(usize, usize)],
    /// `Some(n)`: only each row's last `n` positions query, their queries packed `n` a
    /// row; `None`: every position queries, packed as the keys.
    pub queries: Option<usize>,
    /// A query sees keys at most this many positions before it (a sliding window).
    pub window: Option<usize>,
    /// Multiplies the products of queries and keys (1 / sqrt(head_dim)).
    pub scale: f32,
}

/// The output's start, shared by the tasks, each of which writes its own (row, head)
/// block of it.
struct Out(*mut f32);

// SAFETY: the tasks write disjoint blocks of the output (see `cpu_fwd`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The output at element `i` (a method, so closures capture the whole `Out`).
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

impl PackedAttention<'_> {
    /// Checks the shapes against the rows: (heads, queries, kv_heads, positions, head_dim).
    fn shapes(&self, l1: &Layout, l2: &Layout, l3: &Layout) -> Result<(usize, usize, usize, usize, usize)> {
        let (one, heads, nq, hd) = l1.shape().dims4()?;
        let (one_k, kv_heads, all, hd_k) = l2.shape().dims4()?;
        if one != 1 || one_k != 1 || hd != hd_k || l3.dims() != l2.dims() || kv_heads == 0 || heads % kv_heads != 0 {
            bail!("packed-attention: queries {:?} with keys {:?} and values {:?}", l1.dims(), l2.dims(), l3.dims());
        }
        let mut next = 0;
        for &(start, len) in self.rows {
            if start != next {
                bail!("packed-attention: a row starts at {start}, not right after the previous one ({next})");
            }
            next += len;
        }
        let want = match self.queries {
            Some(n) if self.rows.iter().any(|&(_, len)| len < n) => bail!("packed-attention: a row holds fewer than its {n} queries"),
            Some(n) => self.rows.len() * n,
            None => all,
        };
        if next != all || nq != want {
            bail!("packed-attention: rows of {next} positions in all and {want} queries, for {all} keys and {nq} queries");
        }
        Ok((heads, nq, kv_heads, all, hd))
    }
}

impl CustomOp3 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (s1, s2, s3) else { bail!("packed-attention takes f32") };
        let (Some((qa, qb)), Some((ka, kb)), Some((va, vb))) = (l1.contiguous_offsets(), l2.contiguous_offsets(), l3.contiguous_offsets()) else {
            bail!("packed-attention takes contiguous inputs")
        };
        let (q, k, v) = (&q[qa..qb], &k[ka..kb], &v[va..vb]);
        let (heads, nq, kv_heads, all, hd) = self.shapes(l1, l2, l3)?;
        if !super::skinny::available() {
            bail!("packed-attention needs AVX2 and FMA");
        }
        let (rep, width) = (heads / kv_heads, heads * hd);
        let mut y: Vec<f32> = Vec::with_capacity(nq * width);
        let out = Out(y.as_mut_ptr());
        (0..self.rows.len() * heads).into_par_iter().for_each(|task| {
            let (i, h) = (task / heads, task % heads);
            let (start, len) = self.rows[i];
            let (lq, q0) = match self.queries {
                Some(n) => (n, i * n),
                None => (len, start),
            };
            if lq == 0 {
                return;
            }
            let g = h / rep;
            let qs = &q[(h * nq + q0) * hd..][..lq * hd];
            let ks = &k[(g * all + start) * hd..][..len * hd];
            let vs = &v[(g * all + start) * hd..][..len * hd];
            let mut s: Vec<f32> = Vec::with_capacity(lq * len);
            // SAFETY: `qs` is lq x hd and `ks` len x hd, row-major (bounds checked by
            // `shapes`); `s` has room for lq x len, which gemm writes whole and, with
            // `read_dst` off, never reads before writing.
            unsafe {
                gemm::gemm(
                    lq,
                    len,
                    hd,
                    s.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    qs.as_ptr(),
                    1,
                    hd as isize,
                    ks.as_ptr(),
                    hd as isize,
                    1,
                    0.0,
                    self.scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                s.set_len(lq * len);
            }
            for (j, row) in s.chunks_exact_mut(len).enumerate() {
                // The query's place in its row, and the keys it sees.
                let at = len - lq + j;
                let lo = self.window.map_or(0, |w| at.saturating_sub(w));
                row[..lo].fill(0.0);
                row[at + 1..].fill(0.0);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 and FMA are checked above.
                unsafe {
                    super::activation::softmax_row(&mut row[lo..=at])
                };
            }
            // SAFETY: `s` is lq x len and `vs` len x hd; the destination is rows
            // q0..q0 + lq, columns h * hd..(h + 1) * hd of the nq x width output, which
            // no other task writes: tasks differ in their row's queries or their head.
            unsafe {
                gemm::gemm(
                    lq,
                    hd,
                    len,
                    out.at(q0 * width + h * hd),
                    1,
                    width as isize,
                    false,
                    s.as_ptr(),
                    1,
                    len as isize,
                    vs.as_ptr(),
                    1,
                    hd as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        // SAFETY: every (query, head) block of the output was written by one task: the
        // queries are the rows' (checked by `shapes`) and every head ran for each row.
        unsafe { y.set_len(nq * width) };
        Ok((CpuStorage::F32(y), Shape::from((1, nq, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// Attention of one row by candle's ops: `q` (1, heads, lq, hd) over `k`, `v` (1,
    /// kv_heads, len, hd), the queries being the row's last lq positions.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>, scale: f64) -> Result<Tensor> {
        let (_, heads, lq, _) = q.dims4()?;
        let (_, kv_heads, len, _) = k.dims4()?;
        let rep = heads / kv_heads;
        let mask: Vec<f32> =
            (len - lq..len).flat_map(|a| (0..len).map(move |j| if j <= a && window.is_none_or(|w| a - j <= w) { 0.0 } else { f32::NEG_INFINITY })).collect();
        let mask = Tensor::from_vec(mask, (lq, len), q.device())?;
        let mut ys = vec![];
        for h in 0..heads {
            let (qh, kh, vh) = (
                q.narrow(1, h, 1)?.squeeze(0)?.squeeze(0)?,
                k.narrow(1, h / rep, 1)?.squeeze(0)?.squeeze(0)?,
                v.narrow(1, h / rep, 1)?.squeeze(0)?.squeeze(0)?,
            );
            let att = ((qh.matmul(&kh.t()?)? * scale)? + &mask)?;
            ys.push(candle_nn::ops::softmax(&att, D::Minus1)?.matmul(&vh)?);
        }
        Tensor::cat(&ys, 1)?.unsqueeze(0)
    }

    #[test]
    fn packed_attention_reads_what_each_row_attended_alone_does() -> Result<()> {
        let dev = Device::Cpu;
        let (heads, kv_heads, hd) = (4, 2, 16);
        let lens = [7usize, 1, 12, 5];
        let all: usize = lens.iter().sum();
        let rows: Vec<(usize, usize)> = lens.iter().scan(0, |s, &l| Some((std::mem::replace(s, *s + l), l))).collect();
        let k = Tensor::randn(0f32, 1., (1, kv_heads, all, hd), &dev)?;
        let v = Tensor::randn(0f32, 1., (1, kv_heads, all, hd), &dev)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for window in [None, Some(3)] {
            for queries in [None, Some(1)] {
                let nq = queries.map_or(all, |n| n * lens.len());
                let q = Tensor::randn(0f32, 3., (1, heads, nq, hd), &dev)?;
                let op = PackedAttention { rows: &rows, queries, window, scale: scale as f32 };
                let ours = q.apply_op3_no_bwd(&k, &v, &op)?;
                assert_eq!(ours.dims(), [1, nq, heads * hd]);
                for (i, &(start, len)) in rows.iter().enumerate() {
                    let (lq, q0) = queries.map_or((len, start), |n| (n, i * n));
                    let want = reference(&q.narrow(2, q0, lq)?, &k.narrow(2, start, len)?, &v.narrow(2, start, len)?, window, scale)?;
                    let diff = (ours.narrow(1, q0, lq)? - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                    assert!(diff < 1e-5, "row {i} (window {window:?}, queries {queries:?}): {diff}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn packed_attention_refuses_rows_that_do_not_cover_the_keys() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 6, 8), candle_core::DType::F32, &dev)?;
        let kv = Tensor::zeros((1, 1, 6, 8), candle_core::DType::F32, &dev)?;
        let short = [(0, 2), (2, 3)];
        let err = q.apply_op3_no_bwd(&kv, &kv, &PackedAttention { rows: &short, queries: None, window: None, scale: 1.0 }).unwrap_err();
        assert!(err.to_string().contains("5 positions"), "{err}");
        let gap = [(0, 2), (3, 3)];
        let err = q.apply_op3_no_bwd(&kv, &kv, &PackedAttention { rows: &gap, queries: None, window: None, scale: 1.0 }).unwrap_err();
        assert!(err.to_string().contains("starts at 3"), "{err}");
        Ok(())
    }
}
