//! What a run reports: one [`LogLine`] a step in `train/log.jsonl`, and a [`Summary`] at the end.

use super::*;

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
    /// Dev MRR@10, at evaluation points (with sources: their average).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_mrr10: Option<f64>,
    /// Dev MRR@10 of each source, at evaluation points of a run with sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_by_domain: Option<std::collections::BTreeMap<String, f64>>,
    /// The line reports the mean of the last steps' weights (readout mode,
    /// `--average-last`), after the last step's own line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub averaged: bool,
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
