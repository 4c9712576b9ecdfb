//! Contrastive training of PromptEmbedder (ARCHITECTURE.md, "The embedder").
//!
//! InfoNCE over cosine similarities with in-batch negatives and one hard negative per
//! query (mined with the `hash` embedder, never the positive nor a document of the same
//! group), AdamW with warm-up and cosine decay, gradient clipping and accumulation, a
//! fixed seed, a JSON Lines log and checkpoints that a killed run resumes from exactly.
//!
//! What is trained depends on the [`Mode`]: P's LoRA adapters and the alignment for the
//! PromptEmbedder modes (M frozen: gradients flow through it to the soft tokens, none is
//! computed for its weights), or LoRA adapters on M itself for the baseline; or, over a
//! trained checkpoint, a readout alone ([`train_readout`], `--mode readout`).
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

mod config;
pub mod data;
mod evaluate;
pub mod loss;
mod memory;
pub mod optim;
mod readout;
mod report;
mod run_dir;
mod trainer;

pub use crate::eval::mrr_at_10;
pub use config::{Mode, TrainConfig};
use evaluate::*;
pub use memory::peak_rss_mib;
use memory::*;
pub use readout::{train_readout, ReadoutRun, MINE_EVERY};
pub use report::{LogLine, Summary};
use run_dir::*;
pub use trainer::Trainer;

use crate::durable::{replace_file, write_atomic};
use crate::embed::decoder::lora::{LoraConfig, Target};
use crate::embed::decoder::Kernels;
use crate::embed::prompt::{AlignInit, AlignSource, Backbone, Placement, Pooling, PromptConfig, PromptEmbedder, Reshape};
use crate::embed::Kind;
use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use data::{Fields, NegativeMiner, Pair, Schedule};
use optim::{AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
