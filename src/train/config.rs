//! A run's settings: what is trained ([`Mode`]) and how ([`TrainConfig`]).

use super::*;

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
    /// A readout over a trained checkpoint (`--from`), everything else frozen: see
    /// [`crate::train::train_readout`], which runs it (the step-wise [`crate::train::Trainer`]
    /// does not).
    Readout,
}

impl Mode {
    /// Every mode, in the order of the CLI's help.
    pub const ALL: [Mode; 6] = [Mode::Prompt, Mode::PromptPrefix, Mode::PromptText, Mode::LoraM, Mode::Transfer, Mode::Readout];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Prompt => "prompt",
            Mode::PromptPrefix => "prompt-prefix",
            Mode::PromptText => "prompt-text",
            Mode::LoraM => "lora-m",
            Mode::Transfer => "transfer",
            Mode::Readout => "readout",
        }
    }

    /// Parses [`Mode::name`].
    pub fn parse(s: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::invalid(format!("unknown training mode `{s}`: expected one of {}", Mode::ALL.map(Mode::name).join(", "))))
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
            Mode::Transfer | Mode::Readout => {}
        }
        c
    }

    /// Whether this mode trains the parameter `name` (see [`PromptEmbedder::parameters`]).
    pub(super) fn trains(self, name: &str) -> bool {
        match self {
            Mode::LoraM => name.starts_with("m."),
            Mode::Transfer => name.starts_with("align."),
            Mode::Readout => name.starts_with("readout."),
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
    /// Field of the pair's source (domain): each micro-batch is drawn from one source
    /// (so in-batch and hard negatives are of that domain), sources weighted by the square
    /// root of their size, and the dev MRR@10 is the average over the sources, each
    /// evaluated on its own documents. `None`: one source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_field: Option<String>,
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
    /// Readout mode: BM25's best documents of the query's source added to its
    /// hard-negative candidates (0: none), the confusions a hybrid query's text side
    /// brings (see `crate::train::readout`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub text_negatives: usize,
    /// Readout mode: the saved weight is the mean of the last this many steps' weights
    /// (0: the last step's). Single-source batches move the dev figures by a few
    /// thousandths from one step to the next even at the final learning rate; the mean
    /// over the tail of the run does not depend on which step came last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub average_last: usize,
    /// LoRA rank.
    pub lora_rank: usize,
    /// Soft tokens K (`None`: the embedder's default, 5); ignored by the baseline.
    #[serde(default)]
    pub soft_tokens: Option<usize>,
    /// How many of M's blocks the embedder runs (`None`: as the starting checkpoint has
    /// it, else all): training for an earlier exit of M costs that fraction of a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_layers: Option<usize>,
    /// What feeds the alignment (`None`: the relaxed embeddings).
    #[serde(default)]
    pub align_from: Option<AlignSource>,
    /// Transfer: the trained checkpoint whose P and adapters are kept. Other modes: the
    /// checkpoint training starts from (its configuration and weights; `None`: fresh).
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
            domain_field: None,
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
            text_negatives: 0,
            average_last: 0,
            lora_rank: 8,
            soft_tokens: None,
            m_layers: None,
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

    pub(super) fn fields(&self) -> Fields {
        Fields { query: self.query_field.clone(), doc: self.doc_field.clone(), group: self.group_field.clone(), domain: self.domain_field.clone() }
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.steps == 0 || self.batch < 2 || self.accum == 0 || self.save_every == 0 || self.grad_cache == Some(0) {
            return Err(Error::invalid("training needs steps >= 1, batch >= 2 (in-batch negatives), accum >= 1, save-every >= 1, grad-cache >= 1"));
        }
        if self.mode == Mode::Transfer && (self.from.is_none() || self.backbone.is_none()) {
            return Err(Error::invalid("a transfer needs the source checkpoint (--from) and the new backbone (--backbone)"));
        }
        if self.mode == Mode::Readout && self.from.is_none() {
            return Err(Error::invalid("--mode readout trains over a checkpoint: give it with --from"));
        }
        if self.from.is_some() && self.mode == Mode::LoraM {
            return Err(Error::invalid("--from starts a prompt-mode run from a trained checkpoint; lora-m trains M from scratch"));
        }
        if self.backbone.is_some() && !matches!(self.mode, Mode::Transfer | Mode::LoraM) {
            return Err(Error::invalid(format!("--backbone applies to transfer and lora-m runs, not {}", self.mode.name())));
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(Error::invalid(format!("temperature must be positive, got {}", self.temperature)));
        }
        // Bounds that keep an absurd number a clear error rather than an allocation that
        // aborts or a run that never ends (crate::limits for the engine's own).
        use crate::limits::check;
        check("--steps", usize::try_from(self.steps).unwrap_or(usize::MAX), 1, 10_000_000)?;
        check("--batch", self.batch, 2, 4096)?;
        check("--accum", self.accum, 1, 1024)?;
        check("--max-query-tokens", self.max_query_tokens, 1, 8192)?;
        check("--max-doc-tokens", self.max_doc_tokens, 1, 8192)?;
        check("--hard-negatives", self.hard_negatives, 0, 1000)?;
        check("--text-negatives", self.text_negatives, 0, 1000)?;
        if self.text_negatives > 0 && self.mode != Mode::Readout {
            return Err(Error::invalid("--text-negatives applies to --mode readout only"));
        }
        check("--average-last", self.average_last, 0, usize::try_from(self.steps).unwrap_or(usize::MAX))?;
        if self.average_last > 0 && self.mode != Mode::Readout {
            return Err(Error::invalid("--average-last applies to --mode readout only"));
        }
        check("--rank (LoRA)", self.lora_rank, 1, 1024)?;
        check("--soft-tokens", self.soft_tokens.unwrap_or(5), 0, 256)?;
        check("--m-layers", self.m_layers.unwrap_or(1), 1, 1024)?;
        check("--eval-size", self.eval_size, 0, 1_000_000)?;
        check("--grad-cache", self.grad_cache.unwrap_or(1), 1, 4096)?;
        for (name, rate) in [("--lr", self.optim.lr), ("--lr-align", self.optim.lr_align)] {
            if !rate.is_finite() || rate <= 0.0 || rate > 10.0 {
                return Err(Error::invalid(format!("{name} is {rate}; it must be above 0 and at most 10")));
            }
        }
        if !self.temperature.is_finite() || self.temperature > 100.0 {
            return Err(Error::invalid(format!("temperature is {}; it must be at most 100", self.temperature)));
        }
        Ok(())
    }
}

/// serde's `skip_serializing_if` for settings added later: a run without them writes the
/// settings file it wrote before they existed (reused inputs compare it byte for byte).
fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

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
