//! The contrastive objective: InfoNCE over cosine similarities.

use crate::error::Result;
use candle_core::{Tensor, D};

/// InfoNCE: query `i` (a row of `queries`, L2-normalised) must pick document `i` among
/// all rows of `docs` (its positive, the other queries' positives as in-batch negatives,
/// then any hard negatives), with similarities divided by `temperature`. Documents that
/// `excluded[i][j]` marks (near-duplicates of the positive) take no part in query `i`'s
/// softmax. Returns the mean loss over queries, a scalar that supports `backward`.
pub fn info_nce(queries: &Tensor, docs: &Tensor, excluded: &[Vec<bool>], temperature: f64) -> Result<Tensor> {
    let (b, _) = queries.dims2()?;
    let n = docs.dim(0)?;
    let logits = (queries.matmul(&docs.t()?)? / temperature)?;
    let mut mask = vec![0f32; b * n];
    let mut target = vec![0f32; b * n];
    for i in 0..b {
        for j in 0..n {
            if j != i && excluded.get(i).and_then(|r| r.get(j)).copied().unwrap_or(false) {
                // Not -inf: the loss multiplies log-probabilities by a 0/1 target, and
                // -inf * 0 is NaN. exp(-1e9) is 0 all the same.
                mask[i * n + j] = -1e9;
            }
        }
        target[i * n + i] = 1.0;
    }
    let dev = queries.device();
    let logits = logits.broadcast_add(&Tensor::from_vec(mask, (b, n), dev)?)?;
    let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = (log_p * Tensor::from_vec(target, (b, n), dev)?)?.sum(D::Minus1)?;
    Ok((picked.mean_all()? * -1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Two queries, three documents, hand-computed: with unit vectors at right angles
    /// and temperature 1, query 0 scores (1, 0, 0) and query 1 (0, 1, 0), so each loss
    /// is ln(e + 2) - 1.
    #[test]
    fn loss_matches_hand_computed_values() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::from_vec(vec![1f32, 0., 0., 0., 1., 0.], (2, 3), &dev)?;
        let d = Tensor::from_vec(vec![1f32, 0., 0., 0., 1., 0., 0., 0., 1.], (3, 3), &dev)?;
        let none = vec![vec![false; 3]; 2];
        let l = info_nce(&q, &d, &none, 1.0)?.to_scalar::<f32>()?;
        let expect = ((1f64.exp() + 2.0).ln() - 1.0) as f32;
        assert!((l - expect).abs() < 1e-6, "{l} vs {expect}");
        // Temperature 0.5 doubles every similarity: ln(e^2 + 2) - 2.
        let l = info_nce(&q, &d, &none, 0.5)?.to_scalar::<f32>()?;
        let expect = ((2f64.exp() + 2.0).ln() - 2.0) as f32;
        assert!((l - expect).abs() < 1e-6, "{l} vs {expect}");
        // Excluding document 2 for query 0 and document 0 for query 1 leaves ln(e + 1) - 1 each.
        let ex = vec![vec![false, false, true], vec![true, false, false]];
        let l = info_nce(&q, &d, &ex, 1.0)?.to_scalar::<f32>()?;
        let expect = ((1f64.exp() + 1.0).ln() - 1.0) as f32;
        assert!((l - expect).abs() < 1e-6, "{l} vs {expect}");
        // A query's own positive is never excluded.
        let ex = vec![vec![true; 3], vec![true; 3]];
        let l = info_nce(&q, &d, &ex, 1.0)?.to_scalar::<f32>()?;
        assert!(l.abs() < 1e-6, "only the positive is left: loss 0, got {l}");
        Ok(())
    }

    #[test]
    fn gradient_pulls_the_query_towards_its_positive() -> Result<()> {
        let dev = Device::Cpu;
        let q = Var::from_tensor(&Tensor::from_vec(vec![0.6f32, 0.8], (1, 2), &dev)?)?;
        let d = Tensor::from_vec(vec![1f32, 0., 0., 1.], (2, 2), &dev)?;
        let g = info_nce(q.as_tensor(), &d, &[vec![false; 2]], 0.1)?.backward()?;
        let g: Vec<f32> = g.get(q.as_tensor()).unwrap().flatten_all()?.to_vec1()?;
        assert!(g[0] < 0.0 && g[1] > 0.0, "descent raises the positive's similarity: {g:?}");
        Ok(())
    }
}
