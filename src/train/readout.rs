//! `train --mode readout`: a readout ([`crate::embed::prompt::readout`]) trained over a
//! frozen checkpoint (`--from`).
//!
//! Nothing upstream of the readout changes (P's prompts, the alignment, M), so each text's
//! input to the readout is computed once, by the inference path, and training is a few
//! matrix products a step over those cached inputs: minutes for thousands of steps, where
//! a prompt-mode step costs M's forward and backward over a whole batch. The inputs are
//! kept in the run's `train/` (`inputs-*.safetensors`), so running the same command again
//! trains without embedding anything; the log and config sit beside them as in other runs.
//! A run on more pairs can take the rows another run already computed
//! ([`ReadoutRun::inputs_from`]) and embed only the texts that run lacked.
//!
//! Hard negatives (`--hard-negatives K`) are mined in the same cached space: every
//! [`MINE_EVERY`] steps, each training query's `K` best-scoring documents of its own source
//! under the current weight (never its positive, its group's, or one of a pair with the
//! same query or document text); each query then brings one of them into its batch.
//! `--text-negatives K` adds each query's `K` best documents by BM25 to those candidates,
//! computed once: the near misses of a hybrid query's text side.

use super::*;
use crate::embed::prompt::{Readout, ReadoutConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Texts embedded per call when computing the inputs (a progress report after each).
const CHUNK: usize = 256;

/// Steps between two minings of hard negatives under the current weight.
pub const MINE_EVERY: u64 = 100;

/// What a readout run trains beyond its [`TrainConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadoutRun {
    /// The readout's shape.
    pub readout: ReadoutConfig,
    /// At most this many training pairs of each source (`None`: all).
    pub pairs_per_source: Option<usize>,
    /// Another readout run's directory over the same checkpoint and readout shape whose
    /// computed inputs are reused where the texts agree (not part of the run's settings:
    /// the inputs are the same either way).
    pub inputs_from: Option<PathBuf>,
}

/// Rows computed earlier, by (is a query, text): the matrix they sit in and the row.
#[derive(Default)]
struct Known {
    rows: HashMap<(bool, String), (usize, usize)>,
    matrices: Vec<Vec<f32>>,
}

/// The four input sets of a run: training queries and documents, dev queries and documents.
fn sides<'a>(pairs: &'a [Pair], dev: &'a [Pair]) -> [(&'static str, Vec<&'a str>, bool); 4] {
    let text = |ps: &'a [Pair], q: bool| -> Vec<&'a str> { ps.iter().map(|p| if q { p.query.as_str() } else { p.doc.as_str() }).collect() };
    [
        ("train-queries", text(pairs, true), true),
        ("train-docs", text(pairs, false), false),
        ("dev-queries", text(dev, true), true),
        ("dev-docs", text(dev, false), false),
    ]
}

fn load_inputs(path: &Path, rows: usize, width: usize) -> Option<Tensor> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).ok()?;
    t.get("inputs").filter(|x| x.dims() == [rows, width]).cloned()
}

/// The rows of another run's directory `dir` (its `train/`), which must be a readout run
/// over the same checkpoint `from` and shape `rc`: its settings say which texts its rows
/// are, so the files need no keys of their own.
fn known_rows(dir: &Path, from: &Path, rc: &ReadoutConfig, width: usize) -> Result<Known> {
    let path = dir.join("train").join("config.json");
    let bytes = std::fs::read(&path).map_err(|err| Error::io(&path, err))?;
    let (cfg, orc, per): (TrainConfig, ReadoutConfig, Option<usize>) =
        serde_json::from_slice(&bytes).map_err(|err| Error::invalid(format!("{}: not a readout run's settings ({err})", path.display())))?;
    let same = |a: &Path| std::fs::canonicalize(a).ok();
    if cfg.from.as_deref().and_then(same) != same(from) || orc != *rc {
        return Err(Error::invalid(format!("{} holds inputs of another checkpoint or readout shape", dir.display())));
    }
    let (pairs, dev) = (training_pairs(&cfg, per)?, read_dev(&cfg)?);
    let mut known = Known::default();
    for (name, texts, q) in sides(&pairs, &dev) {
        let file = dir.join("train").join(format!("inputs-{name}.safetensors"));
        // A set that run had not finished is simply not reused.
        let Some(x) = load_inputs(&file, texts.len(), width) else { continue };
        let m = known.matrices.len();
        known.matrices.push(x.flatten_all()?.to_vec1()?);
        for (row, t) in texts.into_iter().enumerate() {
            known.rows.entry((q, t.to_string())).or_insert((m, row));
        }
    }
    Ok(known)
}

/// The readout's inputs for `texts` of `kind`: read back from `cache` when it holds one
/// row of this shape per text; otherwise rows `known` holds are copied and the rest
/// computed by `e` (frozen), each distinct text once. `progress(done, total)` after each
/// chunk of computed texts.
fn inputs(
    e: &PromptEmbedder,
    rc: &ReadoutConfig,
    texts: &[&str],
    kind: Kind,
    cache: &Path,
    known: &Known,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let width = rc.groups(e.config().soft_tokens) * crate::embed::Embedder::dim(e);
    if let Some(x) = load_inputs(cache, texts.len(), width) {
        return Ok(x);
    }
    let q = kind == Kind::Query;
    let mut missing: Vec<&str> = texts.iter().copied().filter(|t| !known.rows.contains_key(&(q, t.to_string()))).collect();
    missing.sort_unstable();
    missing.dedup();
    let mut fresh: HashMap<&str, usize> = HashMap::new();
    let mut computed = Vec::with_capacity(missing.len() * width);
    for (i, chunk) in missing.chunks(CHUNK).enumerate() {
        computed.extend(e.readout_inputs(chunk, kind, rc)?.flatten_all()?.to_vec1::<f32>()?);
        fresh.extend(chunk.iter().enumerate().map(|(j, t)| (*t, i * CHUNK + j)));
        progress(((i + 1) * CHUNK).min(missing.len()), missing.len());
    }
    let mut all = Vec::with_capacity(texts.len() * width);
    for t in texts {
        let row = match fresh.get(t) {
            Some(&r) => &computed[r * width..][..width],
            None => {
                let (m, r) = known.rows[&(q, t.to_string())];
                &known.matrices[m][r * width..][..width]
            }
        };
        all.extend_from_slice(row);
    }
    let x = Tensor::from_vec(all, (texts.len(), width), &Device::Cpu)?;
    let t: HashMap<String, Tensor> = [("inputs".to_string(), x.clone())].into();
    replace_file(cache, |f: &Path| Ok(candle_core::safetensors::save(&t, f)?))?;
    Ok(x)
}

/// The pairs a readout run trains on: every pair of the data, or at most `per_source` of
/// each source, drawn with the run's seed. Each source's order does not depend on the
/// cap, so a larger cap draws a superset of a smaller one's pairs.
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

/// Indices of each source's members, by source name.
fn by_source<'a>(domain: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, Vec<u32>> {
    let mut by: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (i, s) in domain.enumerate() {
        by.entry(s).or_default().push(i as u32);
    }
    by
}

/// MRR@10 of the readout weight `w` on each source's dev inputs (its documents the
/// corpus), and their mean.
fn dev_mrr(w: &Tensor, q: &Tensor, d: &Tensor, domain: &[String]) -> Result<(f64, BTreeMap<String, f64>)> {
    let (qv, dv) = (Readout::apply_with(q, w)?, Readout::apply_with(d, w)?);
    let mut out = BTreeMap::new();
    for (s, idx) in by_source(domain.iter().map(String::as_str)) {
        let idx = Tensor::new(idx.as_slice(), qv.device())?;
        let scores: Vec<Vec<f32>> = qv.index_select(&idx, 0)?.matmul(&dv.index_select(&idx, 0)?.t()?)?.to_vec2()?;
        out.insert(s.to_string(), mrr_at_10(&scores));
    }
    let mean = out.values().sum::<f64>() / out.len().max(1) as f64;
    Ok((mean, out))
}

/// Each training pair's `k` hardest documents under the weight `w`: the best-scoring
/// documents of its own source for its query, never its own, one of its group's, or one
/// of a pair with its document's or its query's text (Debian has many "transitional
/// package" summaries: any of their documents answers them).
fn mine(w: &Tensor, q: &Tensor, d: &Tensor, pairs: &[Pair], k: usize) -> Result<Vec<Vec<u32>>> {
    let (qv, dv) = (Readout::apply_with(q, w)?, Readout::apply_with(d, w)?);
    let mut out = vec![Vec::new(); pairs.len()];
    for (_, members) in by_source(pairs.iter().map(|p| p.domain.as_str())) {
        let idx = Tensor::new(members.as_slice(), qv.device())?;
        let docs = dv.index_select(&idx, 0)?.t()?;
        // Queries a slice at a time: a source's whole score matrix can pass a gigabyte.
        for part in members.chunks(1024) {
            let scores: Vec<Vec<f32>> = qv.index_select(&Tensor::new(part, qv.device())?, 0)?.matmul(&docs)?.to_vec2()?;
            for (&i, s) in part.iter().zip(&scores) {
                let me = &pairs[i as usize];
                out[i as usize] = data::best_candidates(s, k, |j| {
                    let o = &pairs[members[j as usize] as usize];
                    o.group != me.group && o.doc != me.doc && o.query != me.query
                })
                .into_iter()
                .map(|j| members[j as usize])
                .collect();
            }
        }
    }
    Ok(out)
}

/// Each training pair's `k` best documents by BM25 (the engine's full-text index over the
/// training documents, built in `dir` and removed after), of its own source and kept by
/// the same rules as [`mine`]: the documents a hybrid query's text side puts beside the
/// right one. Fixed for the run (the texts do not change), so computed once.
fn text_negatives(pairs: &[Pair], k: usize, dir: &Path) -> Result<Vec<Vec<u32>>> {
    use crate::index::fulltext::{Coverage, FullText};
    use rayon::prelude::*;
    let ft = FullText::recreate(dir)?;
    let docs: Vec<(u64, &str)> = pairs.iter().enumerate().map(|(i, p)| (i as u64, p.doc.as_str())).collect();
    ft.apply(&docs, &[], Coverage { rows: pairs.len() as u64, dead: 0 }, false)?;
    let out = pairs
        .par_iter()
        .map(|me| {
            let keep = |j: usize| {
                let o = &pairs[j];
                o.domain == me.domain && o.group != me.group && o.doc != me.doc && o.query != me.query
            };
            Ok(ft.search(&me.query, k, &keep)?.into_iter().map(|(j, _)| j as u32).collect())
        })
        .collect::<Result<Vec<Vec<u32>>>>();
    drop(ft);
    std::fs::remove_dir_all(dir).map_err(|err| Error::io(dir, err))?;
    out
}

/// Trains a readout over the checkpoint `cfg.from` as `run` says, writes the checkpoint
/// with it to `out`, and reports each step to `each` (with the dev MRR@10 at evaluation
/// points). `progress(what, done, total)` while the inputs are computed.
///
/// `cfg.hard_negatives` is the number of mined candidates per query and
/// `cfg.text_negatives` the number of BM25 candidates added to them (both 0: in-batch
/// negatives only). Other settings of `cfg` that belong to step-wise training do not apply and are
/// ignored: accumulation, gradient caching, saved states, the LoRA rank and the training
/// token limits (the inputs are the inference path's, texts cut at the checkpoint's own
/// limit).
pub fn train_readout(
    cfg: TrainConfig,
    out: &Path,
    run: ReadoutRun,
    progress: &mut dyn FnMut(&str, usize, usize),
    each: &mut dyn FnMut(&LogLine),
) -> Result<Summary> {
    cfg.check()?;
    let rc = run.readout.clone();
    let from = cfg.from.clone().ok_or_else(|| Error::invalid("--mode readout trains over a checkpoint: give it with --from"))?;
    let e = PromptEmbedder::load(&from)?;
    if e.readout().is_some() {
        return Err(Error::invalid(format!("{} already has a readout; start from the checkpoint it was trained over", from.display())));
    }
    let d_e = crate::embed::Embedder::dim(&e);
    let width = rc.groups(e.config().soft_tokens) * d_e;
    let known = match &run.inputs_from {
        Some(dir) => known_rows(dir, &from, &rc, width)?,
        None => Known::default(),
    };
    let dir = out.join("train");
    std::fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
    // The cached inputs belong to one run's settings: the same command reuses them, other
    // settings in the same directory are refused rather than trained on stale inputs.
    let settings = serde_json::to_vec_pretty(&(&cfg, &rc, run.pairs_per_source)).expect("config serialises");
    match std::fs::read(dir.join("config.json")) {
        Ok(old) if old != settings => return Err(Error::invalid(format!("{} holds a run with other settings: choose another --out", out.display()))),
        _ => write_atomic(&dir.join("config.json"), &settings)?,
    }
    let pairs = training_pairs(&cfg, run.pairs_per_source)?;
    let dev = read_dev(&cfg)?;
    let mut sets = Vec::new();
    for (name, texts, q) in sides(&pairs, &dev) {
        let kind = if q { Kind::Query } else { Kind::Passage };
        sets.push(inputs(&e, &rc, &texts, kind, &dir.join(format!("inputs-{name}.safetensors")), &known, &mut |d, n| progress(name, d, n))?);
    }
    drop(known);
    let [tq, td, dq, dd] = <[Tensor; 4]>::try_from(sets).map_err(|_| Error::invalid("four input sets"))?;
    let w = Var::from_tensor(Readout::identity(rc.clone(), e.config().soft_tokens, d_e, &Device::Cpu)?.weight())?;
    let mut opt_cfg = cfg.optim.clone();
    opt_cfg.total = cfg.steps;
    let mut opt = AdamW::new(opt_cfg, vec![("readout.weight".to_string(), w.clone())])?;
    let domains: Vec<&str> = pairs.iter().map(|p| p.domain.as_str()).collect();
    let schedule = Schedule::by_domain(&domains, cfg.batch, cfg.seed);
    let dev_domain: Vec<String> = dev.iter().map(|p| p.domain.clone()).collect();
    let base_rss = peak_rss_mib();
    let (mut times, mut losses, mut last_dev, mut hard) = (Vec::new(), Vec::new(), None, Vec::new());
    let mut tail_sum: Option<Tensor> = None;
    let text = match cfg.text_negatives {
        0 => Vec::new(),
        k => text_negatives(&pairs, k, &dir.join("bm25"))?,
    };
    let log_path = dir.join("log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(|err| Error::io(&log_path, err))?;
    for step in 1..=cfg.steps {
        let t0 = Instant::now();
        if (cfg.hard_negatives > 0 || !text.is_empty()) && (step - 1) % MINE_EVERY == 0 {
            hard = match cfg.hard_negatives {
                0 => vec![Vec::new(); pairs.len()],
                k => mine(w.as_tensor(), &tq, &td, &pairs, k)?,
            };
            // BM25's candidates join the mined ones: a query draws from both.
            for (h, t) in hard.iter_mut().zip(&text) {
                h.extend(t.iter().filter(|j| !h.contains(j)).copied().collect::<Vec<_>>());
            }
        }
        let batch = schedule.batch(step - 1, &|p| hard.get(p).cloned().unwrap_or_default());
        // The documents scored: the batch's positives, then each query's hard negative.
        let docs: Vec<usize> = batch.pairs.iter().copied().chain(batch.negatives.iter().flatten().copied()).collect();
        // Pairs of one group are near-duplicates (same package), and a pair with this
        // document's or this query's text is a positive too: not each other's negatives.
        let excluded: Vec<Vec<bool>> = batch
            .pairs
            .iter()
            .enumerate()
            .map(|(r, &i)| {
                docs.iter()
                    .enumerate()
                    .map(|(c, &j)| c != r && (i == j || pairs[i].group == pairs[j].group || pairs[i].doc == pairs[j].doc || pairs[i].query == pairs[j].query))
                    .collect()
            })
            .collect();
        let b = batch.pairs.len();
        let q = Readout::apply_with(
            &tq.index_select(&Tensor::new(batch.pairs.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)?, 0)?,
            w.as_tensor(),
        )?;
        let d = Readout::apply_with(
            &td.index_select(&Tensor::new(docs.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)?, 0)?,
            w.as_tensor(),
        )?;
        // Both directions: queries pick their documents (hard negatives among them) and
        // the batch's documents their queries.
        let back: Vec<Vec<bool>> = excluded.iter().map(|r| r[..b].to_vec()).collect();
        let loss = ((loss::info_nce(&q, &d, &excluded, cfg.temperature)? + loss::info_nce(&d.narrow(0, 0, b)?, &q, &back, cfg.temperature)?)? * 0.5)?;
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
            averaged: false,
        };
        writeln!(log, "{}", serde_json::to_string(&line).expect("log line serialises")).map_err(|err| Error::io(&log_path, err))?;
        each(&line);
        if cfg.steps - step < cfg.average_last as u64 {
            tail_sum = Some(match tail_sum {
                // A copy: the variable's storage is updated in place by the next step.
                None => w.as_tensor().copy()?,
                Some(s) => (s + w.as_tensor())?,
            });
        }
    }
    let weight = match tail_sum {
        None => w.as_tensor().clone(),
        Some(sum) => {
            let mean = (sum / cfg.average_last as f64)?;
            let (dev_mrr10, dev_by_domain) = match dev.is_empty() {
                true => (None, None),
                false => {
                    let (m, by) = dev_mrr(&mean, &dq, &dd, &dev_domain)?;
                    last_dev = Some(m);
                    (Some(m), Some(by))
                }
            };
            let recent = &losses[losses.len().saturating_sub(cfg.average_last)..];
            let line = LogLine {
                step: cfg.steps,
                loss: recent.iter().sum::<f64>() / recent.len() as f64,
                lr: 0.0,
                grad_norm: 0.0,
                step_s: 0.0,
                peak_rss_mib: peak_rss_mib(),
                dev_mrr10,
                dev_by_domain,
                averaged: true,
            };
            writeln!(log, "{}", serde_json::to_string(&line).expect("log line serialises")).map_err(|err| Error::io(&log_path, err))?;
            each(&line);
            mean
        }
    };
    let readout = Readout::new(rc, weight, e.config().soft_tokens, d_e)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(q: &str, doc: &str, group: &str, domain: &str) -> Pair {
        Pair { query: q.into(), doc: doc.into(), group: group.into(), domain: domain.into() }
    }

    #[test]
    fn mined_negatives_are_the_best_scoring_documents_of_the_source_never_the_positives_own() -> Result<()> {
        // Pair 4 has pair 2's document and pair 0's query; pair 5 is alone in its source.
        let pairs = [
            pair("q0", "d0", "g0", "s"),
            pair("q1", "d1", "g0", "s"),
            pair("q2", "d2", "g1", "s"),
            pair("q3", "d3", "g2", "s"),
            pair("q0", "d2", "g3", "s"),
            pair("e", "e", "h", "t"),
        ];
        let docs = [[1., 0., 0.], [0.9, 0.1, 0.], [0.8, 0.2, 0.], [0., 1., 0.], [0.7, 0.3, 0.], [0., 0., 1.]];
        let d = Tensor::new(&docs, &Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
        let w = Tensor::eye(3, candle_core::DType::F32, &Device::Cpu)?;
        // Each query is its own document: the best-scoring one is always its positive.
        let got = mine(&w, &d, &d, &pairs, 2)?;
        assert_eq!(got[0], [2, 3], "not its own document, pair 1's (same group) or pair 4's (same query)");
        assert_eq!(got[2], [1, 0], "not pair 4's document (its own text)");
        assert_eq!(got[3], [4, 2]);
        assert!(got[5].is_empty(), "alone in its source");
        Ok(())
    }

    #[test]
    fn text_negatives_are_the_best_bm25_documents_of_the_source_never_the_positives_own() -> Result<()> {
        let pairs = [
            pair("fast regex search", "ripgrep searches files for a regex", "rg", "s"),
            pair("regex search data", "a regex search over data files, fast", "rg", "s"),
            pair("regex grep tool", "grep searches for a regex pattern fast", "grep", "s"),
            pair("music player", "a console music player", "moc", "s"),
            pair("fast regex search", "a regex search library, fast and small", "re", "s"),
            pair("regex", "fast regex search everywhere", "other", "t"),
        ];
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tempdir"), e))?;
        let got = text_negatives(&pairs, 2, &dir.path().join("bm25"))?;
        // Pair 0: not its own document, pair 1's (its group), pair 4's (the same query)
        // or pair 5's (another source); of the rest, only grep's shares its words.
        assert_eq!(got[0], [2]);
        assert_eq!(got[3], Vec::<u32>::new(), "no other document shares its words");
        assert!(got[2].len() == 2 && !got[2].contains(&2) && !got[2].contains(&5), "{:?}", got[2]);
        assert!(!dir.path().join("bm25").exists(), "the index is removed");
        Ok(())
    }
}
