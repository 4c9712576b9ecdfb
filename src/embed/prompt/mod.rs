//! PromptEmbedder (arXiv 2605.28066): a Prompting LLM P writes K soft tokens by relaxed,
//! differentiable decoding; an alignment matrix maps them into the input space of a
//! frozen Embedding LLM M; M's pooled last hidden state, L2-normalised, is the
//! embedding. With zero soft tokens it is "M alone", the baseline without a prompt.

use super::decoder::lora::{Lora, LoraConfig};
use super::decoder::{ops, Decoder, Kernels, KvCache};
use super::gguf::Gguf;
use super::tokenizer::TextTokenizer;
use super::{Embedder, Kind};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

mod alignment;
mod builtin;
mod checkpoint;
mod config;
mod forward;
pub mod readout;
mod soft;

use alignment::*;
use checkpoint::*;
pub use config::*;
use forward::shared_opening;
pub use readout::{Readout, ReadoutConfig};

struct Model {
    dec: Decoder,
    tok: TextTokenizer,
}

/// P and its adapters.
struct Prompting {
    model: Arc<Model>,
    lora: Option<Lora>,
}

/// What loading P later takes: its adapters' file, and where it came from (for errors).
struct DeferredPrompting {
    lora: Option<Vec<u8>>,
    origin: PathBuf,
}

/// P as an embedder is assembled: loaded, or deferred with what the fingerprint and the
/// prompt cache need meanwhile.
enum PromptingInput {
    Loaded(Prompting),
    Deferred { lora_tensors: Option<HashMap<String, Tensor>>, deferred: DeferredPrompting, prompts: HashMap<Kind, Tensor> },
}

/// The PromptEmbedder; see the module docs.
///
/// ```no_run
/// use duetdb::embed::{prompt::PromptEmbedder, Embedder, Kind};
/// let e = PromptEmbedder::builtin("default").unwrap();   // needs scripts/fetch-models.sh
/// let v = e.embed(&["play music from the command line"], Kind::Query).unwrap();
/// assert_eq!(v[0].len(), e.dim());
/// ```
pub struct PromptEmbedder {
    cfg: PromptConfig,
    spec: Option<String>,
    /// P and its adapters. A checkpoint whose soft prompt reads only the instruction and
    /// ships its prompts (`soft_prompts.safetensors`) embeds with M alone: P is then
    /// loaded only when something needs it (training, a cleared prompt cache), which
    /// saves its load time and memory on every open.
    prompting: OnceLock<Prompting>,
    /// How to load P on first use, when it was not loaded with the embedder.
    deferred: Mutex<Option<DeferredPrompting>>,
    m: Arc<Model>,
    /// Alignment (d_p, d_e) and bias (d_e); variables, so that training can update them.
    align_w: Var,
    align_b: Var,
    /// M's adapters, when the config has them (the LoRA baseline).
    m_lora: Option<Lora>,
    /// The map from M's soft-position states to the vector, when the config has one.
    readout: Option<Readout>,
    /// Soft prompts in M's space (K, d_e) per kind, when they do not read the text.
    prompt_cache: Mutex<HashMap<Kind, Tensor>>,
    /// M's keys and values over that soft prompt, when it is a prefix: every text
    /// continues it, so M never recomputes those K positions.
    prefix_cache: Mutex<HashMap<Kind, KvCache>>,
    fingerprint: String,
    device: Device,
    /// Set by training when nothing of P is trained (a transfer): the differentiable path
    /// then runs P as inference does, without an autograd graph, and differentiates only
    /// from the alignment on. P reading each text no longer costs a backward pass.
    prompting_frozen: bool,
}

impl std::fmt::Debug for PromptEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptEmbedder").field("cfg", &self.cfg).field("fingerprint", &self.fingerprint).finish()
    }
}

fn verify_backbone(b: &Backbone) -> Result<PathBuf> {
    let path = super::model_path(&b.file)?;
    super::verify_sha256(&path, &b.sha256, "")?;
    Ok(path)
}

fn load_model(b: &Backbone, device: &Device) -> Result<Model> {
    let path = verify_backbone(b)?;
    let dec = Decoder::load(&path, device, DType::F32)?;
    let tok = match &b.tokenizer {
        Some(t) => {
            let g = Gguf::open(&path)?;
            let bos = g.meta_u32("tokenizer.ggml.bos_token_id").ok();
            TextTokenizer::from_file(&super::model_path(t)?, bos, g.meta_u32("tokenizer.ggml.eos_token_id").ok())?
        }
        None => TextTokenizer::from_gguf(&Gguf::open(&path)?)?,
    };
    Ok(Model { dec, tok })
}

/// M cut to the config's `m_layers` (unchanged without one). M must not be P then: P
/// always runs whole.
fn embedding_depth(cfg: &PromptConfig, m: Arc<Model>) -> Result<Arc<Model>> {
    let Some(n) = cfg.m_layers else { return Ok(m) };
    if cfg.embedding == cfg.prompting {
        return Err(Error::invalid("m_layers needs an Embedding LLM other than the Prompting LLM (P runs all its blocks)"));
    }
    Ok(Arc::new(Model { dec: m.dec.first_blocks(n)?, tok: m.tok.clone() }))
}

impl PromptEmbedder {
    /// A fresh, untrained embedder: the alignment is the identity when P and M are
    /// the same file, else a least-squares fit over their shared token strings.
    pub fn new(cfg: PromptConfig, device: &Device) -> Result<Self> {
        Self::new_seeded(cfg, device, 0)
    }

    /// [`PromptEmbedder::new`] with fresh adapters drawn from `seed` (P's from `seed`,
    /// M's from `seed + 1`).
    pub fn new_seeded(cfg: PromptConfig, device: &Device, seed: u64) -> Result<Self> {
        let p = Arc::new(load_model(&cfg.prompting, device)?);
        let m = if cfg.embedding == cfg.prompting { p.clone() } else { Arc::new(load_model(&cfg.embedding, device)?) };
        let m = embedding_depth(&cfg, m)?;
        let (align_w, align_b) =
            if cfg.embedding == cfg.prompting { identity_alignment(p.dec.config().hidden, device)? } else { least_squares_alignment(&p, &m)? };
        // Fresh adapters have B = 0: P behaves as loaded until trained.
        let lora = match &cfg.lora {
            Some(l) => Some(Lora::new(l.clone(), &p.dec, seed)?),
            None => None,
        };
        let m_lora = match &cfg.embedding_lora {
            Some(l) => Some(Lora::new(l.clone(), &m.dec, seed.wrapping_add(1))?),
            None => None,
        };
        let readout = match &cfg.readout {
            Some(r) => Some(Readout::identity(r.clone(), cfg.soft_tokens, m.dec.config().hidden, device)?),
            None => None,
        };
        Self::assemble(cfg, None, PromptingInput::Loaded(Prompting { model: p, lora }), m, (align_w, align_b), m_lora, readout, device)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: PromptConfig,
        spec: Option<String>,
        p: PromptingInput,
        m: Arc<Model>,
        (align_w, align_b): (Tensor, Tensor),
        m_lora: Option<Lora>,
        readout: Option<Readout>,
        device: &Device,
    ) -> Result<Self> {
        let de = m.dec.config().hidden;
        // A deferred P's width is checked against the alignment when P loads.
        let dp = match &p {
            PromptingInput::Loaded(pr) => pr.model.dec.config().hidden,
            PromptingInput::Deferred { .. } => align_w.dims().first().copied().unwrap_or(0),
        };
        if align_w.dims() != [dp, de] || align_b.dims() != [de] {
            return Err(Error::model(format!("alignment has shape {:?} + {:?}, expected [{dp}, {de}] + [{de}]", align_w.dims(), align_b.dims())));
        }
        if cfg.soft_tokens > 0 && cfg.placement == Placement::Suffix && cfg.pooling == Pooling::MeanText {
            return Err(Error::invalid("soft tokens after the text with mean-over-text pooling: a causal M never lets the text see them; pool over the soft positions or the last token"));
        }
        if let Some(r) = &cfg.readout {
            if cfg.soft_tokens == 0 || cfg.placement != Placement::Suffix || cfg.pooling != Pooling::MeanSoft || cfg.embedding_lora.is_some() {
                return Err(Error::invalid("a readout needs soft tokens after the text, pooled over the soft positions, and a frozen M"));
            }
            let depth = m.dec.config().layers;
            if let Some(&bad) = r.blocks.iter().find(|&&k| k == 0 || k > depth) {
                return Err(Error::invalid(format!("the readout reads block {bad}; the Embedding LLM has blocks 1 to {depth}")));
            }
        }
        let p_lora = match &p {
            PromptingInput::Loaded(pr) => pr.lora.as_ref().map(|l| l.tensors()),
            PromptingInput::Deferred { lora_tensors, .. } => lora_tensors.clone(),
        };
        let fingerprint =
            fingerprint(&cfg, &align_w, &align_b, p_lora.as_ref(), m_lora.as_ref().map(|l| l.tensors()).as_ref(), readout.as_ref().map(|r| r.weight()))?;
        let (align_w, align_b) = (Var::from_tensor(&align_w)?, Var::from_tensor(&align_b)?);
        let (prompting, deferred, prompts) = match p {
            PromptingInput::Loaded(pr) => (OnceLock::from(pr), None, HashMap::new()),
            PromptingInput::Deferred { deferred, prompts, .. } => (OnceLock::new(), Some(deferred), prompts),
        };
        Ok(Self {
            cfg,
            spec,
            prompting,
            deferred: Mutex::new(deferred),
            m,
            align_w,
            align_b,
            m_lora,
            readout,
            prompt_cache: Mutex::new(prompts),
            prefix_cache: Mutex::default(),
            fingerprint,
            device: device.clone(),
            prompting_frozen: false,
        })
    }

    /// Tells the embedder that P and its adapters will not be trained, so that the
    /// differentiable path ([`Kernels::Differentiable`]) runs P without an autograd graph:
    /// the soft tokens are the same values, and gradients start at the alignment.
    pub fn freeze_prompting(&mut self) {
        self.prompting_frozen = true;
    }

    /// P and its adapters, loading them on first use when the embedder was opened without
    /// them (see the `prompting` field).
    fn prompting(&self) -> Result<&Prompting> {
        if let Some(p) = self.prompting.get() {
            return Ok(p);
        }
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.prompting.get() {
            return Ok(p);
        }
        let d = deferred.as_ref().ok_or_else(|| Error::model("the Prompting LLM failed to load before"))?;
        let model = if self.cfg.prompting == self.cfg.embedding { self.m.clone() } else { Arc::new(load_model(&self.cfg.prompting, &self.device)?) };
        let dp = model.dec.config().hidden;
        if self.align_w.dims()[0] != dp {
            return Err(Error::model(format!(
                "alignment has {} rows, but the Prompting LLM {} has width {dp}",
                self.align_w.dims()[0],
                self.cfg.prompting.file
            )));
        }
        let lora = match (&self.cfg.lora, &d.lora) {
            (Some(l), Some(bytes)) => Some(Lora::from_bytes(l.clone(), &model.dec, bytes, &d.origin.join(LORA_FILE))?),
            _ => None,
        };
        tracing::debug!(file = %self.cfg.prompting.file, "Prompting LLM loaded on first use");
        *deferred = None;
        Ok(self.prompting.get_or_init(|| Prompting { model, lora }))
    }

    /// P's low-rank adapters, when the config has them (their `vars` are what
    /// training updates besides the alignment). Loads P if it was not loaded yet.
    ///
    /// The fingerprint is computed when the embedder is built: after changing the
    /// adapters in place, [`PromptEmbedder::save`] and [`PromptEmbedder::load`] give the
    /// trained embedder its own fingerprint.
    pub fn lora(&self) -> Result<Option<&Lora>> {
        Ok(self.prompting()?.lora.as_ref())
    }

    /// Whether P is loaded: false for a checkpoint opened with its constant soft prompts
    /// until something needs P (see [`PromptEmbedder::load`]).
    pub fn prompting_loaded(&self) -> bool {
        self.prompting.get().is_some()
    }

    /// M's low-rank adapters, when the config has them (the LoRA baseline).
    pub fn embedding_lora(&self) -> Option<&Lora> {
        self.m_lora.as_ref()
    }

    /// The readout, when the config has one (see [`readout`]).
    pub fn readout(&self) -> Option<&Readout> {
        self.readout.as_ref()
    }

    /// This embedder with `readout` as its map to the vector (the config records its
    /// configuration); the fingerprint is computed again, so the result is another
    /// function from text to vector. Training writes the readout it trained this way.
    pub fn with_readout(mut self, readout: Readout) -> Result<Self> {
        let d = self.m.dec.config().hidden;
        let readout = Readout::new(readout.config().clone(), readout.weight().clone(), self.cfg.soft_tokens, d)?;
        self.cfg.readout = Some(readout.config().clone());
        self.readout = Some(readout);
        self.fingerprint = self.current_fingerprint()?;
        Ok(self)
    }

    /// The alignment matrix (d_p, d_e) and bias (d_e).
    pub fn alignment(&self) -> (&Tensor, &Tensor) {
        (self.align_w.as_tensor(), self.align_b.as_tensor())
    }

    /// Every parameter training may update, by name: `align.weight`, `align.bias`, P's
    /// adapters as `p.blk.{i}.{target}.lora_a|b` and M's as `m.blk...`. A trainer picks
    /// the ones its mode trains; the backbones' own weights are never among them. Loads
    /// P if it was not loaded yet.
    pub fn parameters(&self) -> Result<Vec<(String, Var)>> {
        let mut out = vec![("align.weight".to_string(), self.align_w.clone()), ("align.bias".to_string(), self.align_b.clone())];
        for (prefix, lora) in [("p.", self.lora()?), ("m.", self.m_lora.as_ref())] {
            if let Some(l) = lora {
                let mut named = l.named_vars();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                out.extend(named.into_iter().map(|(n, v)| (format!("{prefix}{n}"), v)));
            }
        }
        Ok(out)
    }

    /// The frozen Embedding LLM M (for checks that training leaves it unchanged).
    pub fn embedding_model(&self) -> &Decoder {
        &self.m.dec
    }

    /// Token ids of a text for M, cut to `max_tokens`; an empty text is an error.
    pub fn tokenize(&self, text: &str, max_tokens: usize) -> Result<Vec<u32>> {
        let mut ids = self.m.tok.encode(text)?;
        ids.truncate(max_tokens.min(self.cfg.max_text_tokens));
        if ids.is_empty() {
            return Err(Error::invalid("text has no tokens"));
        }
        Ok(ids)
    }

    /// The configuration.
    pub fn config(&self) -> &PromptConfig {
        &self.cfg
    }
}

impl Embedder for PromptEmbedder {
    fn embed(&self, texts: &[&str], kind: Kind) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        forward::inference(kind, || -> Result<Vec<Vec<f32>>> { Ok(self.embed_tensor(texts, kind, Kernels::Fast)?.to_vec2()?) })
    }

    fn dim(&self) -> usize {
        self.m.dec.config().hidden
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn spec(&self) -> Option<String> {
        self.spec.clone()
    }
}
