//! `duetdb train` and `duetdb transfer`: a training run from the command line, with a
//! progress bar and one JSON line per evaluation point.

use crate::args::TrainArgs;
use crate::{out, progress};
use duetdb::{Error, Result};
use serde_json::json;

/// Makes glibc keep the memory a training step frees for the next step instead of
/// handing it back to the kernel. A step allocates and frees the same large activations
/// every time; by default glibc trims them off the heap or unmaps them, and the next step
/// pays a page fault for every page again. Measured on the 2-core machine (LoRA on Gemma3,
/// batch 16, `benches/train_cost.sh`, median of steps 2-4): 11.70 s a step against
/// 14.71 s, and 16.39 s against 36.94 s with `--grad-cache 16`, whose slices allocate and
/// free three times a step. The peak resident memory is that of the largest step either way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // Trimming off (-1), and no block served by its own mapping (an mmap threshold can be
    // at most 32 MiB, and the larger activations would still come and go).
    let settings = [(libc::M_TRIM_THRESHOLD, -1), (libc::M_MMAP_MAX, 0)];
    for (param, value) in settings {
        // SAFETY: mallopt only changes allocator parameters; it is called before the
        // training threads start.
        if unsafe { libc::mallopt(param, value) } != 1 {
            tracing::warn!(param, value, "mallopt refused a setting: training may run slower");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// `--mode readout`: the inputs computed (or read back) with a bar each, then the
/// steps with their own bar; the same report as a step-wise run.
fn readout_cmd(c: duetdb::train::TrainConfig, dir: &std::path::Path, run: duetdb::train::ReadoutRun, json: bool) -> Result<()> {
    let steps = c.steps;
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let mut progress = |what: &str, done: usize, total: usize| {
        if bar.as_ref().is_none_or(|(w, _)| w != what) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            bar = Some((what.to_string(), progress::counter(total as u64, what)));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done as u64);
        }
    };
    let steps_bar = std::cell::OnceCell::new();
    let summary = duetdb::train::train_readout(c, dir, run, &mut progress, &mut |l| {
        let b = steps_bar.get_or_init(|| progress::counter(steps, "steps"));
        b.set_position(l.step);
        b.set_message(format!("loss {:.4}", l.loss));
        if let Some(m) = l.dev_mrr10 {
            match json {
                true => out(serde_json::to_string(l).unwrap()),
                // `suspend`, not `println`: the line must reach a log too, where the bar is not drawn.
                false => b.suspend(|| eprintln!("step {}: loss {:.4}, dev MRR@10 {m:.4} {:?}", l.step, l.loss, l.dev_by_domain.clone().unwrap_or_default())),
            }
        }
    })?;
    if let Some(b) = steps_bar.get() {
        b.finish_and_clear();
    }
    report(&summary, steps, json);
    Ok(())
}

fn report(summary: &duetdb::train::Summary, total: u64, json: bool) {
    if json {
        out(json!({"done": summary.steps >= total, "summary": summary}));
    } else {
        out(format!(
            "checkpoint {}\n{} of {} steps, {} trainable values, median step {:.2} s, peak memory {:.0} MiB, recent loss {:.4}, dev MRR@10 {}",
            summary.checkpoint.display(),
            summary.steps,
            total,
            summary.parameters,
            summary.median_step_s,
            summary.peak_rss_mib,
            summary.recent_loss,
            summary.last_dev_mrr10.map_or("not measured".to_string(), |m| format!("{m:.4}"))
        ));
    }
}

pub(crate) fn train_cmd(args: TrainArgs) -> Result<()> {
    use duetdb::train::{Mode, TrainConfig, Trainer};
    keep_freed_memory();
    let (readout_out, readout_json) = (args.out.clone(), args.json);
    let readout_run = duetdb::train::ReadoutRun {
        readout: duetdb::embed::prompt::ReadoutConfig { blocks: args.readout_blocks.clone(), per_position: args.readout_per_position },
        pairs_per_source: args.pairs_per_source,
        inputs_from: args.inputs_from.clone(),
    };
    if args.evaluate_only {
        let (step, m) = Trainer::evaluate_saved(&args.out)?;
        let m = m.ok_or_else(|| Error::invalid("the run has no dev pairs to evaluate"))?;
        match args.json {
            true => out(json!({"step": step, "dev_mrr10": m}).to_string()),
            false => out(format!("step {step}: dev MRR@10 {m:.4}")),
        }
        return Ok(());
    }
    let mut t = if args.resume {
        Trainer::resume(&args.out)?
    } else {
        let data = args.data.ok_or_else(|| Error::invalid("--data is needed for a new run"))?;
        let mut c = TrainConfig::new(data, &args.query_field, &args.doc_field, Mode::parse(&args.mode)?);
        c.group_field = args.group_field;
        c.domain_field = args.domain_field;
        c.dev = args.dev;
        c.steps = args.steps;
        c.batch = args.batch;
        c.accum = args.accum;
        c.optim.lr = args.lr;
        c.optim.lr_align = args.lr_align;
        c.optim.warmup = args.warmup;
        c.temperature = args.temperature;
        c.lora_rank = args.rank;
        c.soft_tokens = args.soft_tokens;
        c.m_layers = args.m_layers;
        c.align_from = args.align_from.map(|a| match a.as_str() {
            "hidden" => duetdb::embed::prompt::AlignSource::Hidden,
            _ => duetdb::embed::prompt::AlignSource::Relaxed,
        });
        c.max_doc_tokens = args.max_doc_tokens;
        c.max_query_tokens = args.max_query_tokens;
        c.hard_negatives = args.hard_negatives;
        c.text_negatives = args.text_negatives;
        c.average_last = args.average_last;
        c.eval_every = args.eval_every.unwrap_or(200);
        c.eval_size = args.eval_size;
        c.save_every = args.save_every;
        c.grad_cache = args.grad_cache;
        c.seed = args.seed;
        c.backbone = args.backbone.as_deref().map(duetdb::embed::prompt::backbone).transpose()?;
        c.from = args.from.clone();
        if c.mode == Mode::Transfer {
            c.align_init = Some(duetdb::embed::prompt::AlignInit::parse(&args.align_init)?);
        }
        if c.mode == Mode::Readout {
            return readout_cmd(c, &readout_out, readout_run, readout_json);
        }
        Trainer::create(c, &args.out)?
    };
    t.stop_at = args.stop_at;
    if args.resume {
        t.eval_every = args.eval_every;
    }
    let total = t.config().steps;
    let bar = progress::counter(total, "steps");
    bar.set_position(t.step());
    let json = args.json;
    let summary = t.run(&mut |l| {
        bar.set_position(l.step);
        bar.set_message(format!("loss {:.4}", l.loss));
        if let Some(m) = l.dev_mrr10 {
            if json {
                out(serde_json::to_string(l).unwrap());
            } else {
                bar.suspend(|| eprintln!("step {}: loss {:.4}, dev MRR@10 {m:.4}", l.step, l.loss));
            }
        }
    })?;
    bar.finish_and_clear();
    report(&summary, total, json);
    Ok(())
}
