//! Dev evaluation during training: MRR@10 of the embedder being trained on the dev pairs
//! (their documents are the corpus), by exact search.

use super::*;

/// The run's dev pairs: the first `eval_size` of its `dev` file (none without one).
pub(super) fn read_dev(cfg: &TrainConfig) -> Result<Vec<data::Pair>> {
    match &cfg.dev {
        Some(p) => {
            let mut d = data::read_pairs(p, &cfg.fields())?.0;
            d.truncate(cfg.eval_size);
            Ok(d)
        }
        None => Ok(Vec::new()),
    }
}

/// MRR@10 of `e` on the dev pairs (their documents are the corpus), exact search; `None`
/// without dev pairs.
pub(super) fn dev_mrr10(e: &PromptEmbedder, dev: &[data::Pair]) -> Result<Option<f64>> {
    if dev.is_empty() {
        return Ok(None);
    }
    let q: Vec<&str> = dev.iter().map(|p| p.query.as_str()).collect();
    let d: Vec<&str> = dev.iter().map(|p| p.doc.as_str()).collect();
    let qv = e.embed_tensor(&q, Kind::Query, Kernels::Fast)?;
    let dv = e.embed_tensor(&d, Kind::Passage, Kernels::Fast)?;
    let scores: Vec<Vec<f32>> = qv.matmul(&dv.t()?)?.to_vec2()?;
    Ok(Some(mrr_at_10(&scores)))
}
