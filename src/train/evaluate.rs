//! Dev evaluation during training: MRR@10 of the embedder being trained on the dev pairs
//! (their documents are the corpus), by exact search.

use super::*;
use std::collections::BTreeMap;

/// The run's dev pairs: the first `eval_size` of its `dev` file (of each source's, with a
/// domain field; none without a file).
pub(super) fn read_dev(cfg: &TrainConfig) -> Result<Vec<data::Pair>> {
    match &cfg.dev {
        Some(p) => {
            let mut taken: BTreeMap<String, usize> = BTreeMap::new();
            let d = data::read_pairs(p, &cfg.fields())?.0;
            Ok(d.into_iter()
                .filter(|p| {
                    let n = taken.entry(p.domain.clone()).or_default();
                    *n += 1;
                    *n <= cfg.eval_size
                })
                .collect())
        }
        None => Ok(Vec::new()),
    }
}

/// MRR@10 of `e` on each source's dev pairs (each source's documents its own corpus) and
/// their average over sources; `None` without dev pairs. One source: its MRR@10.
pub(super) fn dev_by_domain(e: &PromptEmbedder, dev: &[data::Pair]) -> Result<Option<(f64, BTreeMap<String, f64>)>> {
    let mut by: BTreeMap<String, Vec<data::Pair>> = BTreeMap::new();
    for p in dev {
        by.entry(p.domain.clone()).or_default().push(p.clone());
    }
    let mut out = BTreeMap::new();
    for (d, pairs) in by {
        if let Some(m) = dev_mrr10(e, &pairs)? {
            out.insert(d, m);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    let mean = out.values().sum::<f64>() / out.len() as f64;
    Ok(Some((mean, out)))
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
