//! Contrastive training of PromptEmbedder (DESIGN.md section 3).
//!
//! InfoNCE over cosine similarities with in-batch negatives and one hard negative per
//! query (mined with the `hash` embedder, never the positive nor a document of the same
//! group), AdamW with warm-up and cosine decay, gradient clipping and accumulation, a
//! fixed seed, a JSON Lines log and checkpoints that a killed run resumes from exactly.
//!
//! What is trained depends on the [`Mode`]: P's LoRA adapters and the alignment for the
//! PromptEmbedder modes (M frozen: gradients flow through it to the soft tokens, none is
//! computed for its weights), or LoRA adapters on M itself for the baseline.
//!
//! A run directory holds the trained embedder as a checkpoint (`config.json`,
//! `alignment.safetensors`, adapters: usable as an embedder spec) and `train/`: the run's
//! `config.json`, `log.jsonl`, `latest` (the name of the newest complete state) and that
//! state, `step-NNNNNNN/` (embedder checkpoint, optimiser moments, `state.json`).
//!
//! ```no_run
//! use duetdb::train::{Mode, TrainConfig, Trainer};
//! let mut cfg = TrainConfig::new("train.jsonl", "summary", "description", Mode::Prompt);
//! cfg.steps = 500;
//! let mut t = Trainer::create(cfg, "runs/prompt".as_ref())?;  // or Trainer::resume(dir)
//! let summary = t.run(&mut |line| println!("{line:?}"))?;
//! println!("checkpoint in runs/prompt, dev MRR@10 {:?}", summary.last_dev_mrr10);
//! # Ok::<(), duetdb::Error>(())
//! ```

pub mod data;
pub mod loss;
pub mod optim;

use crate::embed::decoder::lora::{LoraConfig, Target};
use crate::embed::decoder::Path;
use crate::embed::prompt::{AlignInit, AlignSource, Backbone, Placement, Pooling, PromptConfig, PromptEmbedder};
use crate::embed::Kind;
use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use data::{Fields, NegativeMiner, Pair, Schedule};
use optim::{AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::time::Instant;

/// What is trained, and how the embedder is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// P reads the instruction only (one soft prompt per kind), soft tokens after the
    /// text, pooled over the soft positions: M's pass over the text needs no gradient.
    Prompt,
    /// As [`Mode::Prompt`] with the soft tokens before the text and mean pooling over
    /// it: every text position depends on them, so the whole pass is differentiated.
    PromptPrefix,
    /// P also reads the text (a pass of P per text, adapters on all its projections);
    /// soft tokens after the text.
    PromptText,
    /// The baseline: LoRA on M itself, no soft prompt, mean pooling.
    LoraM,
    /// Backbone transfer: a trained checkpoint's P and adapters frozen, a new Embedding
    /// LLM M' frozen, only a fresh alignment A' (with bias) trained (see
    /// [`PromptEmbedder::transfer`]).
    Transfer,
}

impl Mode {
    /// Every mode, in the order of the CLI's help.
    pub const ALL: [Mode; 5] = [Mode::Prompt, Mode::PromptPrefix, Mode::PromptText, Mode::LoraM, Mode::Transfer];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Prompt => "prompt",
            Mode::PromptPrefix => "prompt-prefix",
            Mode::PromptText => "prompt-text",
            Mode::LoraM => "lora-m",
            Mode::Transfer => "transfer",
        }
    }

    /// Parses [`Mode::name`].
    pub fn parse(s: &str) -> Result<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            Error::invalid(format!("unknown training mode `{s}`: expected one of {}", Mode::ALL.map(Mode::name).join(", ")))
        })
    }

    /// The untrained embedder's configuration for this mode, with adapters of `rank`.
    pub fn embedder_config(self, rank: usize) -> PromptConfig {
        let mut c = PromptConfig::default();
        let all = vec![Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];
        // Reading only the instruction, P's output is one constant per kind whatever its
        // adapters: q and v suffice. Reading the text, P is the model that learns.
        let targets = if self == Mode::PromptText { all.clone() } else { vec![Target::Q, Target::V] };
        let p_lora = LoraConfig { rank, alpha: 2.0 * rank as f32, targets };
        match self {
            Mode::Prompt | Mode::PromptText => {
                c.condition_on_text = self == Mode::PromptText;
                c.placement = Placement::Suffix;
                c.pooling = Pooling::MeanSoft;
                c.lora = Some(p_lora);
            }
            Mode::PromptPrefix => {
                c.placement = Placement::Prefix;
                c.pooling = Pooling::MeanText;
                c.lora = Some(p_lora);
            }
            Mode::LoraM => {
                c.soft_tokens = 0;
                c.pooling = Pooling::MeanText;
                c.embedding_lora = Some(LoraConfig { rank, alpha: 2.0 * rank as f32, targets: all });
            }
            // The source checkpoint's configuration is used (see `Trainer::create`).
            Mode::Transfer => {}
        }
        c
    }

    /// Whether this mode trains the parameter `name` (see [`PromptEmbedder::parameters`]).
    fn trains(self, name: &str) -> bool {
        match self {
            Mode::LoraM => name.starts_with("m."),
            Mode::Transfer => name.starts_with("align."),
            _ => name.starts_with("p.") || name.starts_with("align."),
        }
    }
}

/// Everything that defines a run; saved in the run directory, so `--resume` needs
/// nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training pairs, JSON Lines.
    pub data: PathBuf,
    /// Field of the query.
    pub query_field: String,
    /// Field of the document.
    pub doc_field: String,
    /// Field of the group (pairs of one group are never each other's negatives).
    pub group_field: Option<String>,
    /// Pairs for the dev MRR@10 at evaluation points (same fields); none: no evaluation.
    pub dev: Option<PathBuf>,
    /// What is trained.
    pub mode: Mode,
    /// Optimiser steps.
    pub steps: u64,
    /// Queries per micro-batch (each brings its positive and a hard negative).
    pub batch: usize,
    /// Micro-batches per optimiser step.
    pub accum: usize,
    /// InfoNCE temperature.
    pub temperature: f64,
    /// Seed of the data order, the hard-negative draws and the adapters.
    pub seed: u64,
    /// Query tokens kept in training.
    pub max_query_tokens: usize,
    /// Document tokens kept in training (inference keeps the embedder's own limit).
    pub max_doc_tokens: usize,
    /// Hard-negative candidates per query (0: in-batch negatives only).
    pub hard_negatives: usize,
    /// LoRA rank.
    pub lora_rank: usize,
    /// Soft tokens K (`None`: the embedder's default, 5); ignored by the baseline.
    #[serde(default)]
    pub soft_tokens: Option<usize>,
    /// What feeds the alignment (`None`: the relaxed embeddings).
    #[serde(default)]
    pub align_from: Option<AlignSource>,
    /// Transfer: the trained checkpoint whose P and adapters are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
    /// Transfer: the new Embedding LLM; lora-m: the model adapted (`None`: SmolLM2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<Backbone>,
    /// Transfer: how the new alignment starts (`None`: least squares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align_init: Option<AlignInit>,
    /// Optimiser.
    pub optim: AdamWConfig,
    /// Steps between evaluations (0: only at the end).
    pub eval_every: u64,
    /// Dev pairs evaluated (their documents are the corpus).
    pub eval_size: usize,
    /// Steps between saved states.
    pub save_every: u64,
    /// Gradient caching: texts per differentiated forward pass (`None`: the whole
    /// micro-batch at once). The micro-batch's embeddings are computed first without their
    /// graphs, the loss's gradient with respect to them taken, then each slice is embedded
    /// again with its graph and back-propagated alone (Gao et al., 2021, "Scaling Deep
    /// Contrastive Learning Batch Size under Memory Limited Setup"). The gradients are
    /// those of the whole micro-batch, so the in-batch negatives are unchanged, for a
    /// fraction of the memory and one more forward pass. What lets a model too large for
    /// the machine at this batch (LoRA on Qwen2.5) train with the same batch as the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_cache: Option<usize>,
}

impl TrainConfig {
    /// Defaults for a dataset and mode.
    pub fn new(data: impl Into<PathBuf>, query_field: &str, doc_field: &str, mode: Mode) -> Self {
        Self {
            data: data.into(),
            query_field: query_field.into(),
            doc_field: doc_field.into(),
            group_field: None,
            dev: None,
            mode,
            steps: 1000,
            batch: 16,
            accum: 1,
            temperature: 0.05,
            seed: 0,
            max_query_tokens: 32,
            max_doc_tokens: 64,
            hard_negatives: 10,
            lora_rank: 8,
            soft_tokens: None,
            align_from: None,
            from: None,
            backbone: None,
            align_init: None,
            optim: AdamWConfig::default(),
            eval_every: 200,
            eval_size: 300,
            save_every: 25,
            grad_cache: None,
        }
    }

    fn fields(&self) -> Fields {
        Fields { query: self.query_field.clone(), doc: self.doc_field.clone(), group: self.group_field.clone() }
    }

    fn check(&self) -> Result<()> {
        if self.steps == 0 || self.batch < 2 || self.accum == 0 || self.save_every == 0 || self.grad_cache == Some(0) {
            return Err(Error::invalid("training needs steps >= 1, batch >= 2 (in-batch negatives), accum >= 1, save-every >= 1, grad-cache >= 1"));
        }
        if self.mode == Mode::Transfer && (self.from.is_none() || self.backbone.is_none()) {
            return Err(Error::invalid("a transfer needs the source checkpoint (--from) and the new backbone (--backbone)"));
        }
        if self.backbone.is_some() && !matches!(self.mode, Mode::Transfer | Mode::LoraM) {
            return Err(Error::invalid(format!("--backbone applies to transfer and lora-m runs, not {}", self.mode.name())));
        }
        if !(self.temperature > 0.0) {
            return Err(Error::invalid(format!("temperature must be positive, got {}", self.temperature)));
        }
        Ok(())
    }
}

/// One line of the run's log (`train/log.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Optimiser steps done.
    pub step: u64,
    /// Mean InfoNCE loss of the step.
    pub loss: f64,
    /// Learning rate used: the adapters', or A''s in a transfer (older transfer logs,
    /// including the early grids of 2026-12-04, show the adapters' rate there too).
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall-clock seconds of the step (forward, backward, update).
    pub step_s: f64,
    /// Peak resident memory of the process so far, MiB.
    pub peak_rss_mib: f64,
    /// Dev MRR@10, at evaluation points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_mrr10: Option<f64>,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Steps done.
    pub steps: u64,
    /// Trainable values.
    pub parameters: usize,
    /// Median step time over the steps of this process, seconds.
    pub median_step_s: f64,
    /// Peak resident memory of this process, MiB.
    pub peak_rss_mib: f64,
    /// Resident memory once the models and data were loaded, before the first step, MiB:
    /// `peak_rss_mib - base_rss_mib` is what training itself needed.
    pub base_rss_mib: f64,
    /// Mean loss of the last (up to) 20 steps of this process.
    pub recent_loss: f64,
    /// The last dev MRR@10 measured.
    pub last_dev_mrr10: Option<f64>,
    /// The run directory (a checkpoint usable as an embedder spec).
    pub checkpoint: PathBuf,
}

/// The run's settings, its newest complete state's directory (named by `train/latest`)
/// and that state's step.
fn latest_state(out: &FsPath) -> Result<(TrainConfig, PathBuf, u64)> {
    let path = out.join("train").join("config.json");
    let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: TrainConfig = serde_json::from_slice(&raw).map_err(|e| Error::corrupt(&path, e.to_string()))?;
    let latest = out.join("train").join("latest");
    let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let dir = out.join("train").join(name.trim());
    let sp = dir.join("state.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&sp).map_err(|e| Error::io(&sp, e))?).map_err(|e| Error::corrupt(&sp, e.to_string()))?;
    let step = state["step"].as_u64().ok_or_else(|| Error::corrupt(&sp, "no `step`"))?;
    Ok((cfg, dir, step))
}

/// The run's dev pairs: the first `eval_size` of its `dev` file (none without one).
fn read_dev(cfg: &TrainConfig) -> Result<Vec<data::Pair>> {
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
fn dev_mrr10(e: &PromptEmbedder, dev: &[data::Pair]) -> Result<Option<f64>> {
    if dev.is_empty() {
        return Ok(None);
    }
    let q: Vec<&str> = dev.iter().map(|p| p.query.as_str()).collect();
    let d: Vec<&str> = dev.iter().map(|p| p.doc.as_str()).collect();
    let qv = e.embed_tensor(&q, Kind::Query, Path::Fast)?;
    let dv = e.embed_tensor(&d, Kind::Passage, Path::Fast)?;
    let scores: Vec<Vec<f32>> = qv.matmul(&dv.t()?)?.to_vec2()?;
    Ok(Some(mrr_at_10(&scores)))
}

/// Where a run's numbered state lives, by step.
fn state_dir(out: &FsPath, step: u64) -> PathBuf {
    out.join("train").join(format!("step-{step:07}"))
}

/// Replaces `path` by what `write` puts in a temporary file, after an fsync: a kill
/// leaves the old file or the new one.
fn replace_file(path: &FsPath, write: impl FnOnce(&FsPath) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// [`replace_file`] with these bytes.
fn write_atomic(path: &FsPath, bytes: &[u8]) -> Result<()> {
    replace_file(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

/// A memory figure of this process from /proc/self/status, MiB; 0 where /proc is missing.
fn proc_status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

/// A training run.
pub struct Trainer {
    cfg: TrainConfig,
    out: PathBuf,
    embedder: PromptEmbedder,
    opt: AdamW,
    pairs: Vec<Pair>,
    miner: Option<NegativeMiner>,
    dev: Vec<Pair>,
    schedule: Schedule,
    /// Stop (after saving) once this many steps are done; `None`: run to the end.
    pub stop_at: Option<u64>,
    /// Steps between evaluations in this process (`None`: the run's saved `eval_every`).
    /// Evaluating reads the embedder only, so a resumed run may look at its curve more or
    /// less often without changing what it trains.
    pub eval_every: Option<u64>,
    base_rss_mib: f64,
}

impl Trainer {
    /// Starts a new run in `out` (which must not hold one already).
    pub fn create(cfg: TrainConfig, out: &FsPath) -> Result<Self> {
        cfg.check()?;
        if out.join("train").join("config.json").exists() {
            return Err(Error::invalid(format!("{} already holds a training run: resume it, or choose another --out", out.display())));
        }
        let embedder = match (&cfg.from, &cfg.backbone) {
            (Some(from), Some(b)) if cfg.mode == Mode::Transfer => PromptEmbedder::transfer(from, b.clone(), cfg.align_init.unwrap_or(AlignInit::LeastSquares))?,
            _ => {
                let mut ecfg = cfg.mode.embedder_config(cfg.lora_rank);
                // LoRA on another backbone from scratch: the baseline a transfer is
                // measured against (P is unused without soft tokens; it is M, shared).
                if let (Mode::LoraM, Some(b)) = (cfg.mode, &cfg.backbone) {
                    ecfg.prompting = b.clone();
                    ecfg.embedding = b.clone();
                }
                if cfg.mode != Mode::LoraM {
                    ecfg.soft_tokens = cfg.soft_tokens.unwrap_or(ecfg.soft_tokens);
                    ecfg.align_from = cfg.align_from.unwrap_or(ecfg.align_from);
                }
                PromptEmbedder::new_seeded(ecfg, &Device::Cpu, cfg.seed)?
            }
        };
        std::fs::create_dir_all(out.join("train")).map_err(|e| Error::io(out, e))?;
        write_atomic(&out.join("train").join("config.json"), &serde_json::to_vec_pretty(&cfg).expect("config serialises"))?;
        let t = Self::assemble(cfg, out, embedder, None)?;
        t.save()?;
        Ok(t)
    }

    /// Reopens the run in `out` at its newest complete state.
    pub fn resume(out: &FsPath) -> Result<Self> {
        let (cfg, dir, step) = latest_state(out)?;
        let embedder = PromptEmbedder::load(&dir)?;
        Self::assemble(cfg, out, embedder, Some((dir.join("optimizer.safetensors"), step)))
    }

    /// The step of the run in `out`'s newest complete state and that state's dev MRR@10
    /// ([`Trainer::evaluate`]), without reading the training data or the optimiser state:
    /// a reading between evaluation points.
    pub fn evaluate_saved(out: &FsPath) -> Result<(u64, Option<f64>)> {
        let (cfg, dir, step) = latest_state(out)?;
        let dev = read_dev(&cfg)?;
        Ok((step, dev_mrr10(&PromptEmbedder::load(&dir)?, &dev)?))
    }

    fn assemble(cfg: TrainConfig, out: &FsPath, mut embedder: PromptEmbedder, opt_state: Option<(PathBuf, u64)>) -> Result<Self> {
        let all = embedder.parameters()?;
        if !all.iter().any(|(n, _)| n.starts_with("p.") && cfg.mode.trains(n)) {
            embedder.freeze_prompting();
        }
        let params: Vec<_> = all.into_iter().filter(|(n, _)| cfg.mode.trains(n)).collect();
        let mut opt = AdamW::new(AdamWConfig { total: cfg.steps, ..cfg.optim.clone() }, params)?;
        if let Some((path, step)) = opt_state {
            if path.exists() {
                opt.load(&path, step)?;
            } else {
                // Finished runs keep only their parameters in git (runs/README.md): the
                // schedule continues, Adam's moments start again from zero.
                tracing::warn!("{} is absent: resuming at step {step} with fresh optimizer moments", path.display());
                opt.restart_at(step);
            }
        }
        let (pairs, skipped) = data::read_pairs(&cfg.data, &cfg.fields())?;
        tracing::info!(pairs = pairs.len(), skipped, "training data read");
        let miner = if cfg.hard_negatives > 0 { Some(NegativeMiner::new(&pairs, cfg.hard_negatives)?) } else { None };
        let dev = read_dev(&cfg)?;
        let schedule = Schedule::new(pairs.len(), cfg.batch, cfg.seed);
        Ok(Self { cfg, out: out.to_path_buf(), embedder, opt, pairs, miner, dev, schedule, stop_at: None, eval_every: None, base_rss_mib: proc_status_mib("VmRSS:") })
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The embedder being trained.
    pub fn embedder(&self) -> &PromptEmbedder {
        &self.embedder
    }

    /// Steps done.
    pub fn step(&self) -> u64 {
        self.opt.step_count()
    }

    /// Trainable values.
    pub fn parameter_count(&self) -> usize {
        self.opt.parameter_count()
    }

    /// The loss of micro-batch `i` and its gradients by parameter name (of the trained
    /// parameters), without changing anything: what [`Trainer::train_step`] accumulates.
    pub fn gradients(&self, i: u64) -> Result<(f64, HashMap<String, Tensor>)> {
        let start = Instant::now();
        let negatives = |p: usize| self.miner.as_ref().map_or_else(Vec::new, |m| m.candidates(&self.pairs, p));
        let b = self.schedule.batch(i, &negatives);
        let queries: Vec<&str> = b.pairs.iter().map(|&p| self.pairs[p].query.as_str()).collect();
        let mut doc_pairs: Vec<usize> = b.pairs.clone();
        doc_pairs.extend(b.negatives.iter().flatten());
        let docs: Vec<&str> = doc_pairs.iter().map(|&p| self.pairs[p].doc.as_str()).collect();
        let excluded: Vec<Vec<bool>> =
            b.pairs.iter().map(|&q| doc_pairs.iter().map(|&d| self.pairs[d].group == self.pairs[q].group).collect()).collect();
        let e = &self.embedder;
        // Both kinds' constant soft prompts from one pass of P (not one per kind).
        let (qp, dp) = match e.config().soft_tokens > 0 && !e.config().condition_on_text {
            true => {
                let (q, d) = e.instruction_prompts(Path::Differentiable)?;
                (Some(q), Some(d))
            }
            false => (None, None),
        };
        let sides = [
            Side { texts: &queries, kind: Kind::Query, max_tokens: self.cfg.max_query_tokens, prompt: qp },
            Side { texts: &docs, kind: Kind::Passage, max_tokens: self.cfg.max_doc_tokens, prompt: dp },
        ];
        let t0 = Instant::now();
        let mut out = HashMap::new();
        let value = match self.cfg.grad_cache {
            Some(n) if n < docs.len() => {
                // Pass 1: every embedding, each slice's graph dropped once it is embedded.
                let whole: Vec<Var> = sides
                    .iter()
                    .map(|s| {
                        let parts: Vec<Tensor> = s.texts.chunks(n).map(|c| Ok(s.embed(e, c)?.detach())).collect::<Result<_>>()?;
                        Ok(Var::from_tensor(&Tensor::cat(&parts, 0)?)?)
                    })
                    .collect::<Result<_>>()?;
                let t_cached = t0.elapsed().as_secs_f64();
                let loss = loss::info_nce(whole[0].as_tensor(), whole[1].as_tensor(), &excluded, self.cfg.temperature)?;
                let upstream = loss.backward()?;
                let (mut fwd_s, mut bwd_s) = (0.0, 0.0);
                // Pass 2: each slice again, with its graph, its embeddings weighted by the
                // loss's gradient: the sum over slices is the whole batch's gradient.
                for (s, v) in sides.iter().zip(&whole) {
                    let g = upstream.get(v.as_tensor()).ok_or_else(|| Error::Model("no gradient reached the cached embeddings".into()))?;
                    for (j, c) in s.texts.chunks(n).enumerate() {
                        let tf = Instant::now();
                        let part = (s.embed(e, c)? * g.narrow(0, j * n, c.len())?)?.sum_all()?;
                        let tb = Instant::now();
                        self.add_trained(&part.backward()?, &mut out)?;
                        fwd_s += (tb - tf).as_secs_f64();
                        bwd_s += tb.elapsed().as_secs_f64();
                    }
                }
                tracing::debug!(cached_s = t_cached, forward_s = fwd_s, backward_s = bwd_s, "gradient caching");
                loss.to_scalar::<f32>()? as f64
            }
            _ => {
                let q = sides[0].embed(e, &queries)?;
                let d = sides[1].embed(e, &docs)?;
                let loss = loss::info_nce(&q, &d, &excluded, self.cfg.temperature)?;
                let tb = Instant::now();
                self.add_trained(&loss.backward()?, &mut out)?;
                tracing::debug!(forward_s = (tb - t0).as_secs_f64(), backward_s = tb.elapsed().as_secs_f64(), "whole batch");
                loss.to_scalar::<f32>()? as f64
            }
        };
        tracing::debug!(mine_s = (t0 - start).as_secs_f64(), forward_backward_s = t0.elapsed().as_secs_f64(), "micro-batch");
        Ok((value, out))
    }

    /// Adds the trained parameters' gradients in `grads` to `into`, by name.
    fn add_trained(&self, grads: &GradStore, into: &mut HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.embedder.parameters()? {
            if self.cfg.mode.trains(&name) {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let sum = match into.remove(&name) {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    };
                    into.insert(name, sum);
                }
            }
        }
        Ok(())
    }

    /// One optimiser step (accumulating micro-batches); returns its log line.
    pub fn train_step(&mut self) -> Result<LogLine> {
        let t = Instant::now();
        let step = self.opt.step_count();
        let accum = self.cfg.accum as u64;
        let mut total: HashMap<String, Tensor> = HashMap::new();
        let mut loss = 0.0;
        for m in 0..accum {
            let (l, grads) = self.gradients(step * accum + m)?;
            loss += l / accum as f64;
            for (name, g) in grads {
                let g = (g / accum as f64)?;
                let sum = match total.remove(&name) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                total.insert(name, sum);
            }
        }
        let r = self.opt.step(&total)?;
        self.embedder.clear_prompt_cache();
        Ok(LogLine { step: step + 1, loss, lr: r.lr, grad_norm: r.grad_norm, step_s: t.elapsed().as_secs_f64(), peak_rss_mib: peak_rss_mib(), dev_mrr10: None })
    }

    /// MRR@10 on the dev pairs (their documents are the corpus), exact search.
    pub fn evaluate(&self) -> Result<Option<f64>> {
        dev_mrr10(&self.embedder, &self.dev)
    }

    /// Writes the current state as `train/step-NNNNNNN/`, points `train/latest` at it,
    /// then refreshes the run directory's top-level checkpoint and drops older states.
    /// A kill at any point leaves `latest` naming a complete state.
    pub fn save(&self) -> Result<()> {
        let step = self.opt.step_count();
        let dir = state_dir(&self.out, step);
        self.embedder.save(&dir)?;
        replace_file(&dir.join("optimizer.safetensors"), |tmp| self.opt.save(tmp))?;
        write_atomic(&dir.join("state.json"), serde_json::json!({"step": step}).to_string().as_bytes())?;
        let name = dir.file_name().expect("named").to_string_lossy().to_string();
        write_atomic(&self.out.join("train").join("latest"), name.as_bytes())?;
        self.embedder.save(&self.out)?;
        let train = self.out.join("train");
        for entry in std::fs::read_dir(&train).map_err(|e| Error::io(&train, e))?.flatten() {
            let n = entry.file_name().to_string_lossy().to_string();
            if n.starts_with("step-") && n != name {
                std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(())
    }

    fn log(&self, line: &LogLine) -> Result<()> {
        let path = self.out.join("train").join("log.jsonl");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{}", serde_json::to_string(line).expect("log line serialises")).map_err(|e| Error::io(&path, e))
    }

    /// Drops log lines past the resumed state (written after its save, before a kill),
    /// so the log reads as one uninterrupted run.
    fn trim_log(&self) -> Result<()> {
        let path = self.out.join("train").join("log.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let step = self.opt.step_count();
        let kept: String = text
            .lines()
            .filter(|l| serde_json::from_str::<LogLine>(l).is_ok_and(|x| x.step <= step))
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&path, kept.as_bytes())
    }

    /// Runs to the configured number of steps (or [`Trainer::stop_at`]), saving every
    /// `save_every` steps and at the end; `each` sees every log line.
    pub fn run(&mut self, each: &mut dyn FnMut(&LogLine)) -> Result<Summary> {
        self.trim_log()?;
        let end = self.stop_at.map_or(self.cfg.steps, |s| s.min(self.cfg.steps));
        let every = self.eval_every.unwrap_or(self.cfg.eval_every);
        let mut times = Vec::new();
        let mut losses = Vec::new();
        let mut last_mrr = None;
        while self.opt.step_count() < end {
            let mut line = self.train_step()?;
            times.push(line.step_s);
            losses.push(line.loss);
            let s = line.step;
            if (every > 0 && s % every == 0) || s == self.cfg.steps {
                line.dev_mrr10 = self.evaluate()?;
                last_mrr = line.dev_mrr10.or(last_mrr);
            }
            self.log(&line)?;
            each(&line);
            if s % self.cfg.save_every == 0 || s == end {
                self.save()?;
            }
        }
        times.sort_by(f64::total_cmp);
        let tail = &losses[losses.len().saturating_sub(20)..];
        Ok(Summary {
            steps: self.opt.step_count(),
            parameters: self.opt.parameter_count(),
            median_step_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
            peak_rss_mib: peak_rss_mib(),
            base_rss_mib: self.base_rss_mib,
            recent_loss: if tail.is_empty() { 0.0 } else { tail.iter().sum::<f64>() / tail.len() as f64 },
            last_dev_mrr10: last_mrr,
            checkpoint: self.out.clone(),
        })
    }
}

/// One side of a micro-batch (its queries or its documents) and how it is embedded.
struct Side<'a> {
    texts: &'a [&'a str],
    kind: Kind,
    max_tokens: usize,
    /// The kind's constant soft prompt, with its graph (modes that read the instruction only).
    prompt: Option<Tensor>,
}

impl Side<'_> {
    /// Embeds `texts` (these or a slice of them) on the differentiable path.
    fn embed(&self, e: &PromptEmbedder, texts: &[&str]) -> Result<Tensor> {
        e.embed_texts_with(texts, self.kind, Path::Differentiable, self.max_tokens, self.prompt.clone())
    }
}

/// MRR@10 of a score matrix whose relevant document for row `i` is column `i`.
pub fn mrr_at_10(scores: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for (i, row) in scores.iter().enumerate() {
        let better = row.iter().enumerate().filter(|&(j, &s)| s > row[i] || (s == row[i] && j < i)).count();
        if better < 10 {
            total += 1.0 / (better + 1) as f64;
        }
    }
    total / scores.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrr_counts_rank_within_ten() {
        let s = vec![vec![0.9, 0.1, 0.2], vec![0.9, 0.5, 0.1], vec![0.3, 0.2, 0.1]];
        // Ranks: 1, 2, 3.
        let expect = (1.0 + 0.5 + 1.0 / 3.0) / 3.0;
        assert!((mrr_at_10(&s) - expect).abs() < 1e-12);
    }

    #[test]
    fn modes_parse_and_train_the_right_parameters() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()).unwrap(), m);
        }
        assert!(Mode::parse("lora").is_err());
        assert!(Mode::Prompt.trains("align.weight") && Mode::Prompt.trains("p.blk.0.q.lora_a"));
        assert!(!Mode::Prompt.trains("m.blk.0.q.lora_a"));
        assert!(Mode::LoraM.trains("m.blk.0.q.lora_a") && !Mode::LoraM.trains("align.bias"));
        assert!(Mode::Transfer.trains("align.weight") && Mode::Transfer.trains("align.bias"));
        assert!(!Mode::Transfer.trains("p.blk.0.q.lora_a") && !Mode::Transfer.trains("m.blk.0.q.lora_a"));
    }

    #[test]
    fn a_backbone_is_for_transfer_and_lora_m_only() {
        let with = |mode| {
            let mut c = TrainConfig::new("t.jsonl", "q", "d", mode);
            c.backbone = Some(crate::embed::prompt::gemma3());
            c
        };
        assert!(with(Mode::LoraM).check().is_ok());
        let err = with(Mode::Prompt).check().unwrap_err().to_string();
        assert!(err.contains("--backbone") && err.contains("prompt"), "{err}");
    }
}
