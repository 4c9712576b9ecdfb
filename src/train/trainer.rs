//! The training loop: batches, gradients through the frozen M, optimiser steps, saves,
//! evaluations, and exact resumption.

use super::*;

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
    pub fn create(cfg: TrainConfig, out: &Path) -> Result<Self> {
        cfg.check()?;
        if cfg.mode == Mode::Readout {
            return Err(Error::invalid("a readout run is not step-wise: run it with train::train_readout (`duetdb train --mode readout`)"));
        }
        if out.join("train").join("config.json").exists() {
            return Err(Error::invalid(format!("{} already holds a training run: resume it, or choose another --out", out.display())));
        }
        let embedder = match (&cfg.from, &cfg.backbone) {
            (Some(from), Some(b)) if cfg.mode == Mode::Transfer => {
                PromptEmbedder::transfer(from, b.clone(), cfg.align_init.unwrap_or(AlignInit::LeastSquares))?
            }
            // Fine-tuning: a trained checkpoint, as it is, goes on training.
            (Some(from), None) => PromptEmbedder::load_reshaped(from, Reshape { m_layers: cfg.m_layers, soft_tokens: cfg.soft_tokens })?,
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
                    ecfg.m_layers = cfg.m_layers;
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
    pub fn resume(out: &Path) -> Result<Self> {
        let (cfg, dir, step) = latest_state(out)?;
        let embedder = PromptEmbedder::load(&dir)?;
        Self::assemble(cfg, out, embedder, Some((dir.join("optimizer.safetensors"), step)))
    }

    /// The step of the run in `out`'s newest complete state and that state's dev MRR@10
    /// ([`Trainer::evaluate`]), without reading the training data or the optimiser state:
    /// a reading between evaluation points.
    pub fn evaluate_saved(out: &Path) -> Result<(u64, Option<f64>)> {
        let (cfg, dir, step) = latest_state(out)?;
        let dev = read_dev(&cfg)?;
        Ok((step, dev_by_domain(&PromptEmbedder::load(&dir)?, &dev)?.map(|(m, _)| m)))
    }

    fn assemble(cfg: TrainConfig, out: &Path, mut embedder: PromptEmbedder, opt_state: Option<(PathBuf, u64)>) -> Result<Self> {
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
        let schedule = match cfg.domain_field {
            Some(_) => Schedule::by_domain(&pairs.iter().map(|p| p.domain.as_str()).collect::<Vec<_>>(), cfg.batch, cfg.seed),
            None => Schedule::new(pairs.len(), cfg.batch, cfg.seed),
        };
        Ok(Self {
            cfg,
            out: out.to_path_buf(),
            embedder,
            opt,
            pairs,
            miner,
            dev,
            schedule,
            stop_at: None,
            eval_every: None,
            base_rss_mib: proc_status_mib("VmRSS:"),
        })
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
        let excluded: Vec<Vec<bool>> = b.pairs.iter().map(|&q| doc_pairs.iter().map(|&d| self.pairs[d].group == self.pairs[q].group).collect()).collect();
        let e = &self.embedder;
        // Both kinds' constant soft prompts from one pass of P (not one per kind).
        let (qp, dp) = match e.config().soft_tokens > 0 && !e.config().condition_on_text {
            true => {
                let (q, d) = e.instruction_prompts(Kernels::Differentiable)?;
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
                    let g = upstream.get(v.as_tensor()).ok_or_else(|| Error::model("no gradient reached the cached embeddings"))?;
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
        Ok(LogLine {
            averaged: false,
            step: step + 1,
            loss,
            lr: r.lr,
            grad_norm: r.grad_norm,
            step_s: t.elapsed().as_secs_f64(),
            peak_rss_mib: peak_rss_mib(),
            dev_mrr10: None,
            dev_by_domain: None,
        })
    }

    /// MRR@10 on the dev pairs (their documents are the corpus), exact search; with
    /// sources, their average (each source's documents its own corpus).
    pub fn evaluate(&self) -> Result<Option<f64>> {
        Ok(self.evaluate_by_domain()?.map(|(m, _)| m))
    }

    /// [`Trainer::evaluate`] with each source's MRR@10 (one entry, named "", without a
    /// domain field).
    pub fn evaluate_by_domain(&self) -> Result<Option<(f64, std::collections::BTreeMap<String, f64>)>> {
        dev_by_domain(&self.embedder, &self.dev)
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
        let kept: String = text.lines().filter(|l| serde_json::from_str::<LogLine>(l).is_ok_and(|x| x.step <= step)).map(|l| format!("{l}\n")).collect();
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
                if let Some((m, by)) = self.evaluate_by_domain()? {
                    line.dev_mrr10 = Some(m);
                    line.dev_by_domain = self.cfg.domain_field.is_some().then_some(by);
                }
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
        e.embed_texts_with(texts, self.kind, Kernels::Differentiable, self.max_tokens, self.prompt.clone())
    }
}
