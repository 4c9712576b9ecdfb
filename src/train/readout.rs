//! `train --mode readout`: a readout ([`crate::embed::prompt::readout`]) trained over a
//! frozen checkpoint (`--from`).
//!
//! Nothing upstream of the readout changes (P's prompts, the alignment, M), so each text's
//! input to the readout is computed once, by the inference path, and training is a few
//! matrix products a step over those cached inputs: minutes for thousands of steps, where
//! a prompt-mode step costs M's forward and backward over a whole batch. The inputs are
//! kept in the run's `train/` (`inputs-*.safetensors`), so running the same command again
//! trains without embedding anything; the log and config sit beside them as in other runs.

use super::*;
use crate::embed::prompt::{Readout, ReadoutConfig};
use std::collections::BTreeMap;

/// Texts embedded per call when computing the inputs (a progress report after each).
const CHUNK: usize = 256;

/// The readout's inputs for `texts` of `kind`, computed by `e` (frozen) or read back from
/// `cache` when it holds one row of this shape per text. `progress(done, total)` after
/// each chunk.
fn inputs(e: &PromptEmbedder, rc: &ReadoutConfig, texts: &[&str], kind: Kind, cache: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<Tensor> {
    let width = rc.groups(e.config().soft_tokens) * crate::embed::Embedder::dim(e);
    if let Ok(t) = candle_core::safetensors::load(cache, &Device::Cpu) {
        if let Some(x) = t.get("inputs").filter(|x| x.dims() == [texts.len(), width]) {
            return Ok(x.clone());
        }
    }
    if texts.is_empty() {
        return Ok(Tensor::zeros((0, width), candle_core::DType::F32, &Device::Cpu)?);
    }
    let mut parts = Vec::with_capacity(texts.len().div_ceil(CHUNK));
    for (i, chunk) in texts.chunks(CHUNK).enumerate() {
        parts.push(e.readout_inputs(chunk, kind, rc)?);
        progress(((i + 1) * CHUNK).min(texts.len()), texts.len());
    }
    let x = Tensor::cat(&parts, 0)?;
    let t: HashMap<String, Tensor> = [("inputs".to_string(), x.clone())].into();
    replace_file(cache, |f: &Path| Ok(candle_core::safetensors::save(&t, f)?))?;
    Ok(x)
}

/// The pairs a readout run trains on: every pair of the data, or at most `per_source` of
/// each source, drawn with the run's seed.
fn training_pairs(cfg: &TrainConfig, per_source: Option<usize>) -> Result<Vec<Pair>> {
    use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
    let pairs = data::read_pairs(&cfg.data, &cfg.fields())?.0;
    let Some(cap) = per_source else { return Ok(pairs) };
    let mut by: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    for p in pairs {
        by.entry(p.domain.clone()).or_default().push(p);
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::new();
    for (_, mut v) in by {
        v.shuffle(&mut rng);
        v.truncate(cap);
        out.extend(v);
    }
    Ok(out)
}

/// MRR@10 of the readout weight `w` on each source's dev inputs (its documents the
/// corpus), and their mean.
fn dev_mrr(w: &Tensor, q: &Tensor, d: &Tensor, domain: &[String]) -> Result<(f64, BTreeMap<String, f64>)> {
    let (qv, dv) = (Readout::apply_with(q, w)?, Readout::apply_with(d, w)?);
    let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (i, s) in domain.iter().enumerate() {
        by.entry(s.as_str()).or_default().push(i as u32);
    }
    let mut out = BTreeMap::new();
    for (s, idx) in by {
        let idx = Tensor::new(idx.as_slice(), qv.device())?;
        let scores: Vec<Vec<f32>> = qv.index_select(&idx, 0)?.matmul(&dv.index_select(&idx, 0)?.t()?)?.to_vec2()?;
        out.insert(s.to_string(), mrr_at_10(&scores));
    }
    let mean = out.values().sum::<f64>() / out.len().max(1) as f64;
    Ok((mean, out))
}

/// Trains a readout of shape `rc` over the checkpoint `cfg.from`, writes the checkpoint
/// with it to `out`, and reports each step to `each` (with the dev MRR@10 at evaluation
/// points). `per_source`: at most that many training pairs of each source.
/// `progress(what, done, total)` while the inputs are computed.
///
/// Settings of `cfg` that belong to step-wise training do not apply and are ignored: hard
/// negatives (in-batch negatives only), accumulation, gradient caching, saved states, the
/// LoRA rank and the training token limits (the inputs are the inference path's, texts cut
/// at the checkpoint's own limit).
pub fn train_readout(
    cfg: TrainConfig,
    out: &Path,
    rc: ReadoutConfig,
    per_source: Option<usize>,
    progress: &mut dyn FnMut(&str, usize, usize),
    each: &mut dyn FnMut(&LogLine),
) -> Result<Summary> {
    cfg.check()?;
    let from = cfg.from.clone().ok_or_else(|| Error::invalid("--mode readout trains over a checkpoint: give it with --from"))?;
    let e = PromptEmbedder::load(&from)?;
    if e.readout().is_some() {
        return Err(Error::invalid(format!("{} already has a readout; start from the checkpoint it was trained over", from.display())));
    }
    let dir = out.join("train");
    std::fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
    // The cached inputs belong to one run's settings: the same command reuses them, other
    // settings in the same directory are refused rather than trained on stale inputs.
    let settings = serde_json::to_vec_pretty(&(&cfg, &rc, per_source)).expect("config serialises");
    match std::fs::read(dir.join("config.json")) {
        Ok(old) if old != settings => return Err(Error::invalid(format!("{} holds a run with other settings: choose another --out", out.display()))),
        _ => write_atomic(&dir.join("config.json"), &settings)?,
    }
    let pairs = training_pairs(&cfg, per_source)?;
    let dev = read_dev(&cfg)?;
    let text = |ps: &[Pair], q: bool| -> Vec<String> { ps.iter().map(|p| if q { p.query.clone() } else { p.doc.clone() }).collect() };
    let mut sides = Vec::new();
    for (name, ps, q) in [("train-queries", &pairs, true), ("train-docs", &pairs, false), ("dev-queries", &dev, true), ("dev-docs", &dev, false)] {
        let t = text(ps, q);
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        let kind = if q { Kind::Query } else { Kind::Passage };
        sides.push(inputs(&e, &rc, &refs, kind, &dir.join(format!("inputs-{name}.safetensors")), &mut |d, n| progress(name, d, n))?);
    }
    let [tq, td, dq, dd] = <[Tensor; 4]>::try_from(sides).map_err(|_| Error::invalid("four input sets"))?;
    let d_e = crate::embed::Embedder::dim(&e);
    let w = Var::from_tensor(Readout::identity(rc.clone(), e.config().soft_tokens, d_e, &Device::Cpu)?.weight())?;
    let mut opt_cfg = cfg.optim.clone();
    opt_cfg.total = cfg.steps;
    let mut opt = AdamW::new(opt_cfg, vec![("readout.weight".to_string(), w.clone())])?;
    let domains: Vec<&str> = pairs.iter().map(|p| p.domain.as_str()).collect();
    let schedule = Schedule::by_domain(&domains, cfg.batch, cfg.seed);
    let dev_domain: Vec<String> = dev.iter().map(|p| p.domain.clone()).collect();
    let base_rss = peak_rss_mib();
    let (mut times, mut losses, mut last_dev) = (Vec::new(), Vec::new(), None);
    let log_path = dir.join("log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(|err| Error::io(&log_path, err))?;
    for step in 1..=cfg.steps {
        let t0 = Instant::now();
        let batch = schedule.batch(step - 1, &|_| Vec::new());
        // Pairs of one group are near-duplicates (same package): not each other's negatives.
        let excluded: Vec<Vec<bool>> = batch.pairs.iter().map(|&i| batch.pairs.iter().map(|&j| i != j && pairs[i].group == pairs[j].group).collect()).collect();
        let idx = Tensor::new(batch.pairs.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)?;
        let q = Readout::apply_with(&tq.index_select(&idx, 0)?, w.as_tensor())?;
        let d = Readout::apply_with(&td.index_select(&idx, 0)?, w.as_tensor())?;
        // Both directions: queries pick their documents and documents their queries.
        let loss = ((loss::info_nce(&q, &d, &excluded, cfg.temperature)? + loss::info_nce(&d, &q, &excluded, cfg.temperature)?)? * 0.5)?;
        let grads: HashMap<String, Tensor> =
            [("readout.weight".to_string(), loss.backward()?.get(w.as_tensor()).cloned().ok_or_else(|| Error::model("no gradient reached the readout"))?)]
                .into();
        let report = opt.step(&grads)?;
        let loss = loss.to_scalar::<f32>()? as f64;
        times.push(t0.elapsed().as_secs_f64());
        losses.push(loss);
        let eval = !dev.is_empty() && (step == cfg.steps || (cfg.eval_every > 0 && step % cfg.eval_every == 0));
        let (dev_mrr10, dev_by_domain) = match eval {
            true => {
                let (m, by) = dev_mrr(w.as_tensor(), &dq, &dd, &dev_domain)?;
                last_dev = Some(m);
                (Some(m), Some(by))
            }
            false => (None, None),
        };
        let line = LogLine {
            step,
            loss,
            lr: report.lr,
            grad_norm: report.grad_norm,
            step_s: times[times.len() - 1],
            peak_rss_mib: peak_rss_mib(),
            dev_mrr10,
            dev_by_domain,
        };
        writeln!(log, "{}", serde_json::to_string(&line).expect("log line serialises")).map_err(|err| Error::io(&log_path, err))?;
        each(&line);
    }
    let readout = Readout::new(rc, w.as_tensor().clone(), e.config().soft_tokens, d_e)?;
    e.with_readout(readout)?.save(out)?;
    times.sort_by(f64::total_cmp);
    let recent = &losses[losses.len().saturating_sub(20)..];
    Ok(Summary {
        steps: cfg.steps,
        parameters: w.as_tensor().elem_count(),
        median_step_s: times[times.len() / 2],
        peak_rss_mib: peak_rss_mib(),
        base_rss_mib: base_rss,
        recent_loss: recent.iter().sum::<f64>() / recent.len() as f64,
        last_dev_mrr10: last_dev,
        checkpoint: out.to_path_buf(),
    })
}
