//! Output buffers of the fast ops, written in parallel chunks without a zero fill first.
//!
//! An op's output as `vec![0f32; n]` costs a pass over memory on one core before the
//! op writes every value anyway, and an op that works in place on `input.to_vec()`
//! copies its input on one core: in `perf` of Gemma3's f32 forward, `memset` took 1.4%
//! and `memmove` 1.2% (docs/benchmarks.md). Here each chunk is written by the task that
//! computes it, while it is in cache.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `n` values, written chunk by chunk (`chunk` values each, the last maybe fewer) on
/// rayon's threads by `fill(first, values)`, `first` being the chunk's first index.
///
/// # Safety
/// `fill` must write every value of the chunk it is handed.
pub unsafe fn filled(n: usize, chunk: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(n);
    let chunk = chunk.max(1);
    y.spare_capacity_mut()[..n].par_chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i * chunk, c));
    // SAFETY: every chunk of the first n values was written whole (the caller's
    // promise).
    unsafe { y.set_len(n) };
    y
}

/// `dst` written with a copy of `src` (of its length), as initialised values.
pub fn copied<'a>(dst: &'a mut [MaybeUninit<f32>], src: &[f32]) -> &'a mut [f32] {
    assert_eq!(dst.len(), src.len(), "a copy into a chunk of another length");
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
    }
    // SAFETY: every value was just written; MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_land_where_their_index_says() {
        let src: Vec<f32> = (0..10_007).map(|i| i as f32).collect();
        // SAFETY: `copied` writes every value of the chunk.
        let y = unsafe {
            filled(src.len(), 1000, |first, c| {
                copied(c, &src[first..first + c.len()]);
            })
        };
        assert_eq!(y, src);
        assert!(unsafe { filled(0, 0, |_, _| ()) }.is_empty());
    }
}
