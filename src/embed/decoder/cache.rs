//! The decoders' key-value cache: keys and values of earlier positions for step-by-step
//! decoding, or of a constant prefix shared by every row of a batch.

use crate::error::{Error, Result};
use candle_core::Tensor;

/// Keys and values of earlier positions, for step-by-step decoding, or of a prefix
/// shared by every row of a batch (see [`KvCache::for_batch`]).
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(super) left_pad: Vec<usize>,
    /// Where each row's padding starts: 0 for a left-padded batch, the prefix length
    /// for a shared prefix followed by left-padded rows.
    pub(super) pad_at: usize,
    pub(super) len: usize,
}

impl KvCache {
    /// This cache, computed for one unpadded row, as the shared prefix of a batch of
    /// `left_pad.len()` rows that continue it left-padded by `left_pad[i]` positions
    /// (the padding sits between the prefix and each row, and is masked).
    ///
    /// A constant soft prompt is run through the model once and reused by every text.
    pub fn for_batch(&self, left_pad: &[usize]) -> Result<KvCache> {
        if self.left_pad != [0] {
            return Err(Error::invalid("a shared prefix must be one unpadded row"));
        }
        let b = left_pad.len();
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((k.repeat((b, 1, 1, 1))?, v.repeat((b, 1, 1, 1))?))),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(KvCache { layers, left_pad: left_pad.to_vec(), pad_at: self.len, len: self.len })
    }

    /// Positions cached so far (including left padding).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
