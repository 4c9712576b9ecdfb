//! The fast forward of a left-padded batch without its padding: the rows' real
//! positions are packed one after another into a single sequence of positions, every
//! product and element-wise op runs on those alone, and attention runs per row.
//!
//! A batch of texts of unequal lengths is padded to its longest: on the Debian
//! descriptions of `benches/decoder.sh`, 15% of the positions were padding, each one
//! a full forward's work that nobody reads. Products are per position, so they do not
//! care where a row ends; only attention does, and it is the one part that runs row by
//! row here (one op for all rows, `attention.rs`; candle's ops a row at a time where
//! that op is not available). Used by [`Decoder::forward_tail`] and
//! [`Decoder::forward_tail_at`] on the fast path on the CPU (what embedding documents
//! and queries runs); the padded forward stays for the differentiable path, caches and
//! adapters, and for `DUETDB_UNPADDED=0` (benchmarks that compare both).

use super::attention::{self, PackedAttention};
use super::{ops, Decoder, Kernels};
use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;

/// Whether a tail forward of `n` positions over rows with these paddings (of `t`
/// positions each) on `device` can skip the padding: every row holds its `n` read
/// positions, and the padded forward is not asked for.
pub(super) fn wanted(device: &Device, t: usize, left_pad: &[usize], n: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    device.is_cpu()
        && left_pad.iter().all(|&p| t.checked_sub(p).is_some_and(|len| len >= n))
        && *ON.get_or_init(|| std::env::var("DUETDB_UNPADDED").map_or(true, |v| v != "0"))
}

impl Decoder {
    /// [`Decoder::forward_tail_at`] (and, with no `reads`, [`Decoder::forward_tail`]) on
    /// the fast path without adapters, over the rows' real positions only. The caller
    /// checked [`wanted`].
    pub(super) fn forward_unpadded(&self, embeds: &Tensor, left_pad: &[usize], n: usize, reads: &mut [(usize, Option<Tensor>)]) -> Result<Tensor> {
        let path = Kernels::Fast;
        let c = &self.cfg;
        let (b, t, d) = embeds.dims3()?;
        // Row i's positions are `start..start + len` of the packed sequence, `rows[i]`
        // being `(start, len)`.
        let rows: Vec<(usize, usize)> = left_pad.iter().scan(0, |s, p| Some((std::mem::replace(s, *s + t - p), t - p))).collect();
        let real: Vec<u32> = (0..b).flat_map(|i| (left_pad[i]..t).map(move |j| (i * t + j) as u32)).collect();
        let tails: Vec<u32> = rows.iter().flat_map(|&(start, len)| (start + len - n..start + len).map(|j| j as u32)).collect();
        let tails = Tensor::from_vec(tails, b * n, &self.device)?;
        let all = real.len();
        let mut x = embeds.reshape((b * t, d))?.index_select(&Tensor::from_vec(real, all, &self.device)?, 0)?.unsqueeze(0)?;
        let pos: Vec<u32> = rows.iter().flat_map(|&(_, len)| 0..len as u32).collect();
        let pos = Tensor::from_vec(pos, all, &self.device)?;
        let hd2 = c.head_dim / 2;
        let table = |(cs, sn): (&Tensor, &Tensor)| -> Result<(Tensor, Tensor)> {
            Ok((cs.index_select(&pos, 0)?.reshape((1, all, hd2))?, sn.index_select(&pos, 0)?.reshape((1, all, hd2))?))
        };
        let global = table((&self.cos, &self.sin))?;
        let local = match &self.local {
            Some((cs, sn)) => Some(table((cs, sn))?),
            None => None,
        };
        let windows: Vec<Option<usize>> = self.blocks.iter().map(|blk| if blk.sliding { c.sliding_window } else { None }).collect();
        let packed = attention::wanted(embeds);
        // Every row's masks, before the rows run side by side (unless the packed op,
        // which needs none, attends).
        let last_window = windows.last().copied().flatten();
        let mut masks = Masks::default();
        for &(_, l) in rows.iter().filter(|_| !packed) {
            for &w in &windows {
                masks.build((l, l), w, &self.device, self.dtype)?;
            }
            masks.build((n, l), last_window, &self.device, self.dtype)?;
        }
        for (li, blk) in self.blocks.iter().enumerate() {
            let last = li + 1 == self.blocks.len();
            let window = windows[li];
            let rope = match (blk.sliding, &local) {
                (true, Some(r)) => r,
                _ => &global,
            };
            let (q, k, v) = self.qkv(blk, li, None, &x, &rope.0, &rope.1, path)?;
            // The last block: only each row's last `n` positions are read.
            let (q, x_in, nq) = if last { (q.index_select(&tails, 2)?, x.index_select(&tails, 1)?, Some(n)) } else { (q, x.clone(), None) };
            let y = if packed {
                let op = PackedAttention { rows: &rows, queries: nq, window, scale: (1.0 / (c.head_dim as f64).sqrt()) as f32 };
                q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?
            } else {
                // Rows attend side by side: each row's products are small.
                let ys = (0..b)
                    .into_par_iter()
                    .map(|i| {
                        let (start, len) = rows[i];
                        let (lq, q0) = match nq {
                            Some(n) => (n, i * n),
                            None => (len, start),
                        };
                        let (k, v) = (k.narrow(2, start, len)?, v.narrow(2, start, len)?);
                        self.attend(&q.narrow(2, q0, lq)?, &k, &v, masks.get(lq, len, window)?, path)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&ys, 1)?
            };
            x = self.finish(blk, li, None, &x_in, &y, path)?;
            if !last && reads.iter().any(|(k, _)| *k == li + 1) {
                let h = ops::rms_norm(&x.index_select(&tails, 1)?, &self.norm, c.eps, path)?.reshape((b, n, d))?;
                reads.iter_mut().filter(|(k, _)| *k == li + 1).for_each(|(_, s)| *s = Some(h.clone()));
            }
        }
        Ok(ops::rms_norm(&x, &self.norm, c.eps, path)?.reshape((b, n, d))?)
    }
}

/// Causal masks of one row's attention, built once per shape: `lq` queries (the row's
/// last `lq` positions) over its `l` keys, within `window` positions when given.
#[derive(Default)]
struct Masks(HashMap<(usize, usize, Option<usize>), Tensor>);

impl Masks {
    /// Builds the mask of `lq` queries over `l` keys within `window`, unless built.
    fn build(&mut self, (lq, l): (usize, usize), window: Option<usize>, device: &Device, dtype: DType) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.0.entry((lq, l, window)) {
            let mask: Vec<f32> =
                (l - lq..l).flat_map(|qa| (0..l).map(move |k| if k <= qa && window.is_none_or(|w| qa - k <= w) { 0.0 } else { f32::NEG_INFINITY })).collect();
            e.insert(Tensor::from_vec(mask, (lq, l), device)?.to_dtype(dtype)?);
        }
        Ok(())
    }

    /// A mask [`Masks::build`] built.
    fn get(&self, lq: usize, l: usize, window: Option<usize>) -> Result<&Tensor> {
        self.0.get(&(lq, l, window)).ok_or_else(|| crate::error::Error::invalid(format!("no mask built for {lq} queries over {l} keys")))
    }
}
