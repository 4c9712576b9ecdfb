//! PromptEmbedder (arXiv 2605.28066): a Prompting LLM P writes K soft tokens by relaxed,
//! differentiable decoding; an alignment matrix maps them into the input space of a
//! frozen Embedding LLM M; M's pooled last hidden state, L2-normalised, is the
//! embedding. With zero soft tokens it is "M alone", the baseline without a prompt.

use super::decoder::lora::{Lora, LoraConfig};
use super::decoder::{ops, Decoder, KvCache, Path};
use super::gguf::Gguf;
use super::tokenizer::TextTokenizer;
use super::{Embedder, Kind};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A backbone model file and the SHA-256 it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backbone {
    /// File name of the GGUF, looked up in the model directories (see [`super::model_path`]).
    pub file: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// A `tokenizer.json` to use instead of the GGUF's own vocabulary (Gemma3).
    #[serde(default)]
    pub tokenizer: Option<String>,
}

/// Where the soft tokens go in M's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `[S' ; text]`
    Prefix,
    /// `[text ; S']`
    Suffix,
}

/// How M's last hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The last position of the sequence.
    LastToken,
    /// The mean over the text's positions.
    MeanText,
    /// The mean over the soft tokens' positions.
    MeanSoft,
}

/// What the alignment matrix maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignSource {
    /// The relaxed embeddings `s_k = p_k E_p`.
    Relaxed,
    /// P's last hidden state at each decoding step.
    Hidden,
}

/// Everything that defines a PromptEmbedder; serialised as a checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    /// The Prompting LLM P.
    pub prompting: Backbone,
    /// The frozen Embedding LLM M.
    pub embedding: Backbone,
    /// K, the number of soft tokens (0: M alone).
    pub soft_tokens: usize,
    /// Relaxation temperature tau of `softmax(logits / tau)`.
    pub temperature: f32,
    /// P's instruction for queries.
    pub query_instruction: String,
    /// P's instruction for passages.
    pub passage_instruction: String,
    /// Whether P also reads the text (else the soft prompt is a per-instruction constant).
    pub condition_on_text: bool,
    /// Soft tokens before or after the text.
    pub placement: Placement,
    /// Pooling of M's last hidden states.
    pub pooling: Pooling,
    /// What feeds the alignment matrix.
    pub align_from: AlignSource,
    /// Text tokens kept per text (longer texts are cut).
    pub max_text_tokens: usize,
    /// Largest padded batch, in positions (rows x longest row).
    pub token_budget: usize,
    /// Low-rank adapters on P (trained with the soft prompt); `None`: P as loaded.
    /// Stored in the checkpoint's `prompting_lora.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Low-rank adapters on M itself: the LoRA baseline of training, which fine-tunes the
    /// Embedding LLM instead of prompting it (use it with `soft_tokens: 0`). Stored in the
    /// checkpoint's `embedding_lora.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_lora: Option<LoraConfig>,
}

/// Qwen2.5-Coder-0.5B-Instruct, the second backbone (DESIGN.md section 4).
pub fn qwen25() -> Backbone {
    Backbone {
        file: "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf".into(),
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
        tokenizer: None,
    }
}

/// Gemma3-270M, the third backbone (DESIGN.md section 4); its tokenizer comes from a
/// `tokenizer.json`, the GGUF's own vocabulary being incomplete for our loader.
pub fn gemma3() -> Backbone {
    Backbone {
        file: "gemma-3-270m-q4_k_m.gguf".into(),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
        tokenizer: Some("gemma3-tokenizer.json".into()),
    }
}

/// A backbone by name (`smollm2`, `qwen2.5`, `gemma3`) or a GGUF file path (its SHA-256
/// is computed now and recorded, so a checkpoint names the exact file).
pub fn backbone(name: &str) -> Result<Backbone> {
    match name {
        "smollm2" => Ok(smollm2()),
        "qwen2.5" | "qwen" => Ok(qwen25()),
        "gemma3" | "gemma" => Ok(gemma3()),
        path if path.ends_with(".gguf") => {
            let p = FsPath::new(path);
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            Ok(Backbone { file: std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?.display().to_string(), sha256: super::hex(&Sha256::digest(&bytes)), tokenizer: None })
        }
        other => Err(Error::UnknownEmbedder { spec: other.into(), detail: "a backbone is smollm2, qwen2.5, gemma3 or a .gguf file".into() }),
    }
}

/// How the fresh alignment of a transfer starts (see [`PromptEmbedder::transfer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignInit {
    /// Least-squares fit between P's and M's token embeddings over their shared token
    /// strings (DESIGN.md section 3).
    LeastSquares,
    /// The (rectangular) identity: P's first dimensions onto M's.
    Identity,
    /// All zeros: M first sees zero soft tokens, and only training gives them content.
    Zero,
    /// The source's own trained alignment followed by the least-squares map from the
    /// source's Embedding LLM into the new one: the soft tokens start as what the source
    /// sent into its M, carried into M''s input space. Unlike [`AlignInit::LeastSquares`],
    /// which fits P's token embeddings and drops what the source's alignment learnt, it
    /// also applies when P's output is a hidden state ([`AlignSource::Hidden`]), which a
    /// fit over token embeddings does not describe.
    Composed,
}

impl AlignInit {
    /// Parses `lstsq`, `identity`, `zero` or `compose`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "lstsq" | "least_squares" => Ok(AlignInit::LeastSquares),
            "identity" | "eye" => Ok(AlignInit::Identity),
            "zero" => Ok(AlignInit::Zero),
            "compose" | "composed" => Ok(AlignInit::Composed),
            other => Err(Error::invalid(format!("unknown alignment initialisation `{other}`: expected lstsq, identity, zero or compose"))),
        }
    }
}

/// SmolLM2-135M-Instruct, the default P and M (DESIGN.md section 4).
pub fn smollm2() -> Backbone {
    Backbone {
        file: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
        tokenizer: None,
    }
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            prompting: smollm2(),
            embedding: smollm2(),
            soft_tokens: 5,
            temperature: 1.0,
            query_instruction: "Represent this search query for retrieving relevant documents".into(),
            passage_instruction: "Represent this document for retrieval".into(),
            condition_on_text: false,
            placement: Placement::Prefix,
            pooling: Pooling::MeanText,
            align_from: AlignSource::Relaxed,
            max_text_tokens: 256,
            token_budget: 2048,
            lora: None,
            embedding_lora: None,
        }
    }
}

/// File name of P's adapters in a checkpoint directory.
const LORA_FILE: &str = "prompting_lora.safetensors";
/// File name of M's adapters (the LoRA baseline) in a checkpoint directory.
const M_LORA_FILE: &str = "embedding_lora.safetensors";
/// File name of the constant soft prompts in M's space, when the soft prompt reads only
/// the instruction: with it, embedding never needs P (see [`PromptEmbedder::load`]).
const PROMPTS_FILE: &str = "soft_prompts.safetensors";

/// The contents of a checkpoint's tensor files.
struct CheckpointFiles {
    alignment: Vec<u8>,
    prompting_lora: Option<Vec<u8>>,
    embedding_lora: Option<Vec<u8>>,
    soft_prompts: Option<Vec<u8>>,
}

impl CheckpointFiles {
    /// The alignment's weight and bias; `origin` (the checkpoint directory) names the file
    /// in errors.
    fn alignment(&self, origin: &FsPath, device: &Device) -> Result<(Tensor, Tensor)> {
        let path = origin.join("alignment.safetensors");
        let tensors = candle_core::safetensors::load_buffer(&self.alignment, device).map_err(|e| Error::corrupt(&path, e.to_string()))?;
        let get = |n: &str| tensors.get(n).cloned().ok_or_else(|| Error::corrupt(&path, format!("no tensor `{n}`")));
        Ok((get("weight")?, get("bias")?))
    }
}

/// The alignment of a P and M that are one model: the identity, no bias.
fn identity_alignment(d: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    Ok((Tensor::eye(d, DType::F32, device)?, Tensor::zeros(d, DType::F32, device)?))
}

/// Reads a checkpoint directory's config and tensor files (adapter files only where the
/// config has adapters; a missing one is an error naming it).
fn read_checkpoint(dir: &FsPath) -> Result<(PromptConfig, CheckpointFiles)> {
    let read = |n: &str| std::fs::read(dir.join(n)).map_err(|e| Error::io(dir.join(n), e));
    let cfg: PromptConfig = serde_json::from_slice(&read("config.json")?).map_err(|e| Error::corrupt(dir.join("config.json"), e.to_string()))?;
    let adapters = |c: &Option<LoraConfig>, file: &str| -> Result<Option<Vec<u8>>> {
        match c {
            Some(_) if !dir.join(file).exists() => Err(Error::corrupt(dir.join(file), "missing: the checkpoint's config.json has LoRA adapters")),
            Some(_) => read(file).map(Some),
            None => Ok(None),
        }
    };
    let files = CheckpointFiles {
        alignment: read("alignment.safetensors")?,
        prompting_lora: adapters(&cfg.lora, LORA_FILE)?,
        embedding_lora: adapters(&cfg.embedding_lora, M_LORA_FILE)?,
        soft_prompts: if dir.join(PROMPTS_FILE).exists() { Some(read(PROMPTS_FILE)?) } else { None },
    };
    Ok((cfg, files))
}

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

/// A safetensors file's tensors as f32 (as adapters are held), for hashing.
fn f32_tensors(bytes: &[u8], path: &FsPath) -> Result<HashMap<String, Tensor>> {
    let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| Error::corrupt(path, e.to_string()))?;
    t.into_iter().map(|(n, x)| Ok((n, x.to_dtype(DType::F32)?))).collect()
}

/// The fingerprint of a PromptEmbedder: its config, alignment and adapters, hashed.
fn fingerprint(cfg: &PromptConfig, align_w: &Tensor, align_b: &Tensor, p_lora: Option<&HashMap<String, Tensor>>, m_lora: Option<&HashMap<String, Tensor>>) -> Result<String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(cfg).expect("config serialises"));
    let hash_tensor = |h: &mut Sha256, t: &Tensor| -> Result<()> {
        for x in t.flatten_all()?.to_vec1::<f32>()? {
            h.update(x.to_le_bytes());
        }
        Ok(())
    };
    hash_tensor(&mut h, align_w)?;
    hash_tensor(&mut h, align_b)?;
    // M's adapters are named with an `m.` prefix so that P-only checkpoints keep the
    // fingerprints they had before M could have adapters.
    for (prefix, l) in [("", p_lora), ("m.", m_lora)] {
        let Some(l) = l else { continue };
        let mut named: Vec<(&String, &Tensor)> = l.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        for (name, t) in named {
            h.update(format!("{prefix}{name}").as_bytes());
            hash_tensor(&mut h, t)?;
        }
    }
    let de = align_b.dims().first().copied().unwrap_or(0);
    Ok(format!("prompt-v1:{}:d{de}", &super::hex(&h.finalize())[..16]))
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

impl PromptEmbedder {
    /// A built-in embedder by name:
    /// - `default`: the trained PromptEmbedder shipped in `checkpoints/default/`
    ///   (SmolLM2-135M as the Prompting LLM, Gemma3-270M as the Embedding LLM);
    /// - `smollm2` (also `prompt`): the trained PromptEmbedder with SmolLM2 as both,
    ///   shipped in `checkpoints/smollm2/`, the default until the Gemma3 transfer;
    /// - `untrained`: PromptEmbedder on SmolLM2 before training, soft prompt from the
    ///   instruction only, the default of databases created before training landed;
    /// - `prompt-text`: untrained, P also reads the text;
    /// - `m-mean` / `m-last`: SmolLM2 alone, mean or last-token pooling.
    pub fn builtin(name: &str) -> Result<Self> {
        match name {
            "default" => return Self::shipped("default"),
            // `prompt` named the SmolLM2 checkpoint (runs/prompt) when it was the default.
            "smollm2" | "prompt" => return Self::shipped("smollm2"),
            _ => {}
        }
        let mut cfg = PromptConfig::default();
        match name {
            "untrained" => {}
            "prompt-text" => cfg.condition_on_text = true,
            "m-mean" => cfg.soft_tokens = 0,
            "m-last" => {
                cfg.soft_tokens = 0;
                cfg.pooling = Pooling::LastToken;
            }
            other => return Err(Error::UnknownEmbedder { spec: other.into(), detail: "not a built-in PromptEmbedder".into() }),
        }
        let mut e = Self::new(cfg, &Device::Cpu)?;
        e.spec = Some(name.into());
        Ok(e)
    }

    /// A backbone alone, no soft prompt (`m-mean:gemma3`, `m-last:qwen2.5`): the "M'
    /// alone" row of a transfer's comparison. `pooling` is `m-mean` or `m-last`.
    pub fn backbone_alone(pooling: &str, name: &str) -> Result<Self> {
        let b = backbone(name)?;
        let cfg = PromptConfig {
            prompting: b.clone(),
            embedding: b,
            soft_tokens: 0,
            pooling: if pooling == "m-last" { Pooling::LastToken } else { Pooling::MeanText },
            ..PromptConfig::default()
        };
        let mut e = Self::new(cfg, &Device::Cpu)?;
        e.spec = Some(format!("{pooling}:{name}"));
        Ok(e)
    }

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
        let (align_w, align_b) = if cfg.embedding == cfg.prompting {
            identity_alignment(p.dec.config().hidden, device)?
        } else {
            least_squares_alignment(&p, &m)?
        };
        // Fresh adapters have B = 0: P behaves as loaded until trained.
        let lora = match &cfg.lora {
            Some(l) => Some(Lora::new(l.clone(), &p.dec, seed)?),
            None => None,
        };
        let m_lora = match &cfg.embedding_lora {
            Some(l) => Some(Lora::new(l.clone(), &m.dec, seed.wrapping_add(1))?),
            None => None,
        };
        Self::assemble(cfg, None, PromptingInput::Loaded(Prompting { model: p, lora }), m, align_w, align_b, m_lora, device)
    }

    /// The first state of a transfer: the checkpoint in `source` with its Prompting LLM
    /// and P's adapters as they are, a new Embedding LLM `embedding`, and a fresh
    /// alignment into it started as `init`. Training then changes only the alignment.
    ///
    /// When the source's soft prompt reads only the instruction, P's output is a constant
    /// per kind, so the new alignment is, in effect, a new constant prompt for the new
    /// backbone (prompt tuning through a linear map).
    pub fn transfer(source: &FsPath, embedding: Backbone, init: AlignInit) -> Result<Self> {
        let (mut cfg, files) = read_checkpoint(source)?;
        if cfg.embedding_lora.is_some() || cfg.soft_tokens == 0 {
            return Err(Error::invalid(format!("{} has no soft prompt to transfer (it adapts the Embedding LLM itself)", source.display())));
        }
        let device = Device::Cpu;
        let p = Arc::new(load_model(&cfg.prompting, &device)?);
        let m = if embedding == cfg.prompting { p.clone() } else { Arc::new(load_model(&embedding, &device)?) };
        let (dp, de) = (p.dec.config().hidden, m.dec.config().hidden);
        let (w, b) = match init {
            AlignInit::LeastSquares if embedding == cfg.prompting => identity_alignment(dp, &device)?,
            AlignInit::LeastSquares => least_squares_alignment(&p, &m)?,
            AlignInit::Identity => {
                let eye: Vec<f32> = (0..dp * de).map(|i| if i / de == i % de { 1.0 } else { 0.0 }).collect();
                (Tensor::from_vec(eye, (dp, de), &device)?, Tensor::zeros(de, DType::F32, &device)?)
            }
            AlignInit::Zero => (Tensor::zeros((dp, de), DType::F32, &device)?, Tensor::zeros(de, DType::F32, &device)?),
            AlignInit::Composed => {
                let (ws, bs) = files.alignment(source, &device)?;
                // The map from the source's M into M' (the identity when they are one model).
                let (lw, lb) = if embedding == cfg.embedding {
                    identity_alignment(m.dec.config().hidden, &device)?
                } else if cfg.embedding == cfg.prompting {
                    least_squares_alignment(&p, &m)?
                } else {
                    least_squares_alignment(&load_model(&cfg.embedding, &device)?, &m)?
                };
                if ws.dims() != [dp, lw.dim(0)?] {
                    return Err(Error::corrupt(source.join("alignment.safetensors"), format!("alignment has shape {:?}, expected [{dp}, {}]", ws.dims(), lw.dim(0)?)));
                }
                (ws.matmul(&lw)?, (bs.unsqueeze(0)?.matmul(&lw)?.squeeze(0)? + lb)?)
            }
        };
        let lora = match (&cfg.lora, &files.prompting_lora) {
            (Some(l), Some(bytes)) => Some(Lora::from_bytes(l.clone(), &p.dec, bytes, &source.join(LORA_FILE))?),
            _ => None,
        };
        cfg.embedding = embedding;
        Self::assemble(cfg, None, PromptingInput::Loaded(Prompting { model: p, lora }), m, w, b, None, &device)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(cfg: PromptConfig, spec: Option<String>, p: PromptingInput, m: Arc<Model>, align_w: Tensor, align_b: Tensor, m_lora: Option<Lora>, device: &Device) -> Result<Self> {
        let de = m.dec.config().hidden;
        // A deferred P's width is checked against the alignment when P loads.
        let dp = match &p {
            PromptingInput::Loaded(pr) => pr.model.dec.config().hidden,
            PromptingInput::Deferred { .. } => align_w.dims().first().copied().unwrap_or(0),
        };
        if align_w.dims() != [dp, de] || align_b.dims() != [de] {
            return Err(Error::Model(format!("alignment has shape {:?} + {:?}, expected [{dp}, {de}] + [{de}]", align_w.dims(), align_b.dims())));
        }
        if cfg.soft_tokens > 0 && cfg.placement == Placement::Suffix && cfg.pooling == Pooling::MeanText {
            return Err(Error::invalid("soft tokens after the text with mean-over-text pooling: a causal M never lets the text see them; pool over the soft positions or the last token"));
        }
        let p_lora = match &p {
            PromptingInput::Loaded(pr) => pr.lora.as_ref().map(|l| l.tensors()),
            PromptingInput::Deferred { lora_tensors, .. } => lora_tensors.clone(),
        };
        let fingerprint = fingerprint(&cfg, &align_w, &align_b, p_lora.as_ref(), m_lora.as_ref().map(|l| l.tensors()).as_ref())?;
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
            prompt_cache: Mutex::new(prompts),
            prefix_cache: Mutex::default(),
            fingerprint,
            device: device.clone(),
            prompting_frozen: false,
        })
    }

    /// Tells the embedder that P and its adapters will not be trained, so that the
    /// differentiable path ([`Path::Differentiable`]) runs P without an autograd graph:
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
        let d = deferred.as_ref().ok_or_else(|| Error::Model("the Prompting LLM failed to load before".into()))?;
        let model = if self.cfg.prompting == self.cfg.embedding { self.m.clone() } else { Arc::new(load_model(&self.cfg.prompting, &self.device)?) };
        let dp = model.dec.config().hidden;
        if self.align_w.dims()[0] != dp {
            return Err(Error::Model(format!("alignment has {} rows, but the Prompting LLM {} has width {dp}", self.align_w.dims()[0], self.cfg.prompting.file)));
        }
        let lora = match (&self.cfg.lora, &d.lora) {
            (Some(l), Some(bytes)) => Some(Lora::from_bytes(l.clone(), &model.dec, bytes, &d.origin.join(LORA_FILE))?),
            _ => None,
        };
        tracing::debug!(file = %self.cfg.prompting.file, "Prompting LLM loaded on first use");
        *deferred = None;
        Ok(self.prompting.get_or_init(|| Prompting { model, lora }))
    }

    /// Loads a checkpoint directory (`config.json`, `alignment.safetensors`, and
    /// `prompting_lora.safetensors` / `embedding_lora.safetensors` when the config has
    /// adapters).
    ///
    /// When the soft prompt reads only the instruction, [`PromptEmbedder::save`] also
    /// writes `soft_prompts.safetensors`: the two constant prompts in M's space, keyed by
    /// the checkpoint's fingerprint. With it, embedding needs only M, and P is loaded
    /// (its file is checked at once) only when training or a cleared cache needs it;
    /// a stale file is ignored with a warning.
    pub fn load(dir: &FsPath) -> Result<Self> {
        let (cfg, files) = read_checkpoint(dir)?;
        let spec = std::fs::canonicalize(dir).ok().map(|d| d.display().to_string());
        Self::from_files(cfg, &files, dir, spec)
    }

    /// A checkpoint from its files' contents; `origin` names them in errors.
    fn from_files(cfg: PromptConfig, files: &CheckpointFiles, origin: &FsPath, spec: Option<String>) -> Result<Self> {
        let device = Device::Cpu;
        let (align_w, align_b) = files.alignment(origin, &device)?;
        let m = Arc::new(load_model(&cfg.embedding, &device)?);
        let m_lora = match (&cfg.embedding_lora, &files.embedding_lora) {
            (Some(l), Some(b)) => Some(Lora::from_bytes(l.clone(), &m.dec, b, &origin.join(M_LORA_FILE))?),
            (Some(_), None) => return Err(Error::corrupt(origin.join(M_LORA_FILE), "missing: the checkpoint's config.json has LoRA adapters")),
            (None, _) => None,
        };
        if cfg.lora.is_some() && files.prompting_lora.is_none() {
            return Err(Error::corrupt(origin.join(LORA_FILE), "missing: the checkpoint's config.json has LoRA adapters"));
        }
        // With shipped constant prompts (only possible when P's soft prompt reads only the
        // instruction), P is needed only later, if at all; its file is still checked now,
        // so a checkpoint naming a missing or wrong one fails at once. P's adapters are
        // read once: for the prompts file's fingerprint check and, when P is deferred, for
        // the embedder's own fingerprint.
        let shipped = files.soft_prompts.as_ref().filter(|_| !cfg.condition_on_text && cfg.soft_tokens > 0);
        if let Some(bytes) = shipped {
            let lora_tensors = match &files.prompting_lora {
                Some(b) if cfg.lora.is_some() => Some(f32_tensors(b, &origin.join(LORA_FILE))?),
                _ => None,
            };
            let m_lora_tensors = m_lora.as_ref().map(|l| l.tensors());
            let adapters = [lora_tensors.as_ref(), m_lora_tensors.as_ref()];
            if let Some(prompts) = Self::shipped_prompts(&cfg, bytes, origin, (&align_w, &align_b), adapters, m.dec.config().hidden)? {
                verify_backbone(&cfg.prompting)?;
                let deferred = DeferredPrompting { lora: files.prompting_lora.clone(), origin: origin.to_path_buf() };
                let input = PromptingInput::Deferred { lora_tensors, deferred, prompts };
                return Self::assemble(cfg, spec, input, m, align_w, align_b, m_lora, &device);
            }
        }
        let p = if cfg.embedding == cfg.prompting { m.clone() } else { Arc::new(load_model(&cfg.prompting, &device)?) };
        let lora = match (&cfg.lora, &files.prompting_lora) {
            (Some(l), Some(b)) => Some(Lora::from_bytes(l.clone(), &p.dec, b, &origin.join(LORA_FILE))?),
            _ => None,
        };
        Self::assemble(cfg, spec, PromptingInput::Loaded(Prompting { model: p, lora }), m, align_w, align_b, m_lora, &device)
    }

    /// The checkpoint's constant soft prompts (`soft_prompts.safetensors`, its `bytes`), by
    /// kind, when the file was written for exactly these parameters (its recorded
    /// fingerprint matches). A stale or damaged file is ignored with a warning: P then
    /// computes the prompts, as without the file. `adapters`: P's and M's adapter tensors,
    /// as the fingerprint hashes them.
    fn shipped_prompts(cfg: &PromptConfig, bytes: &[u8], origin: &FsPath, (align_w, align_b): (&Tensor, &Tensor), adapters: [Option<&HashMap<String, Tensor>>; 2], de: usize) -> Result<Option<HashMap<Kind, Tensor>>> {
        let path = origin.join(PROMPTS_FILE);
        let want = fingerprint(cfg, align_w, align_b, adapters[0], adapters[1])?;
        let read = || -> std::result::Result<HashMap<Kind, Tensor>, String> {
            let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| e.to_string())?;
            let fp = t.get("fingerprint").ok_or("no tensor `fingerprint`")?.to_vec1::<u8>().map_err(|e| e.to_string())?;
            if fp != want.as_bytes() {
                return Err(format!("written for {}, not for this checkpoint ({want})", String::from_utf8_lossy(&fp)));
            }
            let mut out = HashMap::new();
            for (kind, name) in [(Kind::Query, "query"), (Kind::Passage, "passage")] {
                let x = t.get(name).ok_or_else(|| format!("no tensor `{name}`"))?;
                if x.dims() != [cfg.soft_tokens, de] {
                    return Err(format!("`{name}` has shape {:?}, expected [{}, {de}]", x.dims(), cfg.soft_tokens));
                }
                out.insert(kind, x.to_dtype(DType::F32).map_err(|e| e.to_string())?);
            }
            Ok(out)
        };
        match read() {
            Ok(p) => Ok(Some(p)),
            Err(why) => {
                tracing::warn!("{}: {why}; ignored, the Prompting LLM computes the soft prompts instead", path.display());
                Ok(None)
            }
        }
    }

    /// A trained checkpoint built into the crate (`checkpoints/default/` or
    /// `checkpoints/smollm2/`; each README says how it was trained), so a fresh clone
    /// needs only the backbone files. Both ship their constant soft prompts, so they
    /// embed without loading the Prompting LLM (`examples/write_soft_prompts.rs`).
    fn shipped(name: &str) -> Result<Self> {
        macro_rules! dir {
            ($d:literal) => {
                (
                    concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/", $d),
                    include_bytes!(concat!("../../checkpoints/", $d, "/config.json")).as_slice(),
                    include_bytes!(concat!("../../checkpoints/", $d, "/alignment.safetensors")).as_slice(),
                    include_bytes!(concat!("../../checkpoints/", $d, "/prompting_lora.safetensors")).as_slice(),
                    include_bytes!(concat!("../../checkpoints/", $d, "/soft_prompts.safetensors")).as_slice(),
                )
            };
        }
        let (dir, config, alignment, lora, prompts) = match name {
            "default" => dir!("default"),
            "smollm2" => dir!("smollm2"),
            other => return Err(Error::UnknownEmbedder { spec: other.into(), detail: "not a shipped checkpoint".into() }),
        };
        let origin = FsPath::new(dir);
        let cfg: PromptConfig = serde_json::from_slice(config).map_err(|e| Error::corrupt(origin.join("config.json"), e.to_string()))?;
        let files = CheckpointFiles { alignment: alignment.to_vec(), prompting_lora: Some(lora.to_vec()), embedding_lora: None, soft_prompts: Some(prompts.to_vec()) };
        Self::from_files(cfg, &files, origin, Some(name.into()))
    }

    /// Writes this embedder as a checkpoint directory.
    ///
    /// Each file is written under a temporary name and renamed into place, tensors
    /// first and `config.json` last, so a crash leaves either the old file or the new
    /// one, never a torn file.
    pub fn save(&self, dir: &FsPath) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let put = |name: &str, write: &dyn Fn(&FsPath) -> Result<()>| -> Result<()> {
            let tmp = dir.join(format!(".{name}.tmp"));
            write(&tmp)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, dir.join(name)).map_err(|e| Error::io(dir.join(name), e))
        };
        let t: HashMap<String, Tensor> =
            [("weight".to_string(), self.align_w.as_tensor().clone()), ("bias".to_string(), self.align_b.as_tensor().clone())].into();
        put("alignment.safetensors", &|f| Ok(candle_core::safetensors::save(&t, f)?))?;
        let remove = |file: &str| match std::fs::remove_file(dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir.join(file), e)),
            _ => Ok(()),
        };
        let p_lora = self.prompting()?.lora.as_ref();
        for (lora, file) in [(p_lora, LORA_FILE), (self.m_lora.as_ref(), M_LORA_FILE)] {
            match lora {
                Some(l) => put(file, &|f| l.save(f))?,
                None => remove(file)?,
            }
        }
        // The constant soft prompts, computed now (not from the cache, which training may
        // have left stale), keyed by the fingerprint these parameters load with.
        if !self.cfg.condition_on_text && self.cfg.soft_tokens > 0 {
            let (w, b) = self.alignment();
            let fp = fingerprint(&self.cfg, w, b, p_lora.map(|l| l.tensors()).as_ref(), self.m_lora.as_ref().map(|l| l.tensors()).as_ref())?;
            let mut t: HashMap<String, Tensor> = HashMap::new();
            for (kind, name) in [(Kind::Query, "query"), (Kind::Passage, "passage")] {
                t.insert(name.into(), self.soft_prompts(&[self.instruction_prompt(kind)], Path::Fast)?.squeeze(0)?);
            }
            let n = fp.len();
            t.insert("fingerprint".into(), Tensor::from_vec(fp.into_bytes(), n, &Device::Cpu)?);
            put(PROMPTS_FILE, &|f| Ok(candle_core::safetensors::save(&t, f)?))?;
        } else {
            remove(PROMPTS_FILE)?;
        }
        let cfg = serde_json::to_vec_pretty(&self.cfg).expect("config serialises");
        put("config.json", &|f| std::fs::write(f, &cfg).map_err(|e| Error::io(f, e)))?;
        Ok(())
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

    fn instruction(&self, kind: Kind) -> &str {
        match kind {
            Kind::Query => &self.cfg.query_instruction,
            Kind::Passage => &self.cfg.passage_instruction,
        }
    }

    #[cfg(test)]
    fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, self.cfg.max_text_tokens)
    }

    /// Relaxed decoding: K soft tokens for each prompt, mapped into M's input space,
    /// (b, K, d_e). Differentiable on [`Path::Differentiable`].
    pub fn soft_prompts(&self, prompts: &[String], path: Path) -> Result<Tensor> {
        let tok = &self.prompting()?.model.tok;
        let seqs: Vec<Vec<u32>> = prompts.iter().map(|s| tok.encode(s)).collect::<Result<_>>()?;
        self.soft_prompts_ids(&seqs, path)
    }

    /// P's prompt for a text: the instruction, then the text cut to `max_text_tokens`.
    fn conditioned_prompt(&self, kind: Kind, text: &str, max_tokens: usize) -> Result<Vec<u32>> {
        let head = format!("Instruct: {}\nQuery: ", self.instruction(kind));
        let tok = &self.prompting()?.model.tok;
        let keep = tok.encode(&head)?.len() + max_tokens.min(self.cfg.max_text_tokens);
        let mut ids = tok.encode(&format!("{head}{text}"))?;
        ids.truncate(keep);
        Ok(ids)
    }

    /// The soft prompt of each text (b, K, d_e), in M's input space: what P writes for
    /// it when the checkpoint reads the text (the text cut to `max_tokens`), the
    /// instruction's one prompt otherwise, repeated. For looking at what P contributes
    /// (`examples/prompt_control.rs` embeds texts with other texts' prompts).
    pub fn text_soft_prompts(&self, texts: &[&str], kind: Kind, max_tokens: usize, path: Path) -> Result<Tensor> {
        if !self.cfg.condition_on_text {
            // One prompt for every text: inference's cached one on the fast path.
            let one = match path {
                Path::Fast => self.constant_prompt(kind)?.unsqueeze(0)?,
                Path::Differentiable => self.soft_prompts(&[self.instruction_prompt(kind)], path)?,
            };
            return Ok(one.repeat((texts.len(), 1, 1))?);
        }
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| self.conditioned_prompt(kind, t, max_tokens)).collect::<Result<_>>()?;
        self.soft_prompts_ids(&seqs, path)
    }

    /// [`PromptEmbedder::soft_prompts`] from token ids of P.
    pub fn soft_prompts_ids(&self, seqs: &[Vec<u32>], path: Path) -> Result<Tensor> {
        let align_path = path;
        let path = if self.prompting_frozen { Path::Fast } else { path };
        let pr = self.prompting()?;
        let p = &pr.model;
        let lora = pr.lora.as_ref();
        // Every text's prompt opens with the same instruction: P reads the batch's common
        // opening once, as one row whose keys and values every row then continues from.
        // Each row keeps at least its last token, whose state starts the decoding. (The
        // instruction-only mode's two prompts share little, and keep their numbers as
        // they were.)
        let shared = if self.cfg.condition_on_text { shared_opening(seqs) } else { 0 };
        let rest: Vec<Vec<u32>> = seqs.iter().map(|s| s[shared..].to_vec()).collect();
        let (ids, pads) = p.dec.pad_left(&rest, p.tok.eos.unwrap_or(0))?;
        let mut cache = if shared > 0 {
            let opening = Tensor::new(&seqs[0][..shared], &self.device)?.unsqueeze(0)?;
            let mut one = p.dec.new_cache(&[0]);
            p.dec.forward_adapted(&p.dec.embed_ids(&opening)?, &[0], Some(&mut one), path, lora)?;
            one.for_batch(&pads)?
        } else {
            p.dec.new_cache(&pads)
        };
        let h = p.dec.forward_adapted(&p.dec.embed_ids(&ids)?, &pads, Some(&mut cache), path, lora)?;
        let mut last = Decoder::last(&h)?;
        let embed = p.dec.token_embeddings();
        let scale = p.dec.config().embed_scale;
        let mut feats = Vec::with_capacity(self.cfg.soft_tokens);
        for k in 0..self.cfg.soft_tokens {
            let more = k + 1 < self.cfg.soft_tokens;
            if self.cfg.align_from == AlignSource::Hidden {
                feats.push(last.clone());
                if !more {
                    // The last step's hidden state is the feature: no vocabulary-wide softmax.
                    break;
                }
            }
            let logits = (p.dec.logits(&last, path)? / self.cfg.temperature as f64)?;
            let probs = ops::softmax(&logits, path)?;
            // s_k = p_k E_p, in P's input space: a mixture of token embeddings.
            let s = (ops::linear(&probs, &embed.t()?, path)? * scale)?;
            if self.cfg.align_from == AlignSource::Relaxed {
                feats.push(s.clone());
            }
            if more {
                last = Decoder::last(&p.dec.forward_adapted(&s.unsqueeze(1)?, &pads, Some(&mut cache), path, lora)?)?;
            }
        }
        let s = Tensor::stack(&feats, 1)?; // (b, K, d_p)
        // A frozen P's adapters are variables still: cut them out of the graph.
        let s = if self.prompting_frozen { s.detach() } else { s };
        let (w, b) = match align_path {
            Path::Fast => (self.align_w.as_tensor().detach(), self.align_b.as_tensor().detach()),
            Path::Differentiable => (self.align_w.as_tensor().clone(), self.align_b.as_tensor().clone()),
        };
        Ok(s.broadcast_matmul(&w)?.broadcast_add(&b)?)
    }

    /// P's prompt in the mode that does not read the text.
    fn instruction_prompt(&self, kind: Kind) -> String {
        format!("Instruct: {}\n", self.instruction(kind))
    }

    /// Forgets the cached soft prompts; training calls this after changing P's
    /// adapters or the alignment in place (their [`candle_core::Var`]s).
    pub fn clear_prompt_cache(&self) {
        self.prompt_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.prefix_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The cached soft prompt of a kind (K, d_e), for the mode that does not read the text.
    fn constant_prompt(&self, kind: Kind) -> Result<Tensor> {
        if let Some(t) = self.prompt_cache.lock().unwrap().get(&kind) {
            return Ok(t.clone());
        }
        let t = self.soft_prompts(&[self.instruction_prompt(kind)], Path::Fast)?.squeeze(0)?;
        self.prompt_cache.lock().unwrap().insert(kind, t.clone());
        Ok(t)
    }

    /// M's cache over the constant soft prompt of a kind (one row, K positions).
    fn prefix_kv(&self, kind: Kind) -> Result<KvCache> {
        if let Some(c) = self.prefix_cache.lock().unwrap().get(&kind) {
            return Ok(c.clone());
        }
        let m = &self.m.dec;
        let mut cache = m.new_cache(&[0]);
        m.forward(&self.constant_prompt(kind)?.unsqueeze(0)?, &[0], Some(&mut cache), Path::Fast)?;
        self.prefix_cache.lock().unwrap().insert(kind, cache.clone());
        Ok(cache)
    }

    /// [`PromptEmbedder::embed_batch`] for the constant prefix soft prompt, from M's
    /// cached keys and values: the same embeddings (up to float rounding), K positions
    /// fewer per text.
    fn embed_batch_prefixed(&self, text_ids: &[Vec<u32>], kind: Kind) -> Result<Tensor> {
        let m = &self.m.dec;
        let (ids, pads) = m.pad_left(text_ids, 0)?;
        let mut cache = self.prefix_kv(kind)?.for_batch(&pads)?;
        let h = m.forward(&m.embed_ids(&ids)?, &pads, Some(&mut cache), Path::Fast)?;
        let total = ids.dim(1)?;
        let mut weights = vec![0f32; text_ids.len() * total];
        for (i, t) in text_ids.iter().enumerate() {
            self.pooling_weights(&mut weights[i * total..(i + 1) * total], pads[i]..pads[i] + t.len(), None)?;
        }
        self.pool(&h, weights)
    }

    /// One row's pooling weights over its positions `w`: the text occupies `text`, the
    /// soft tokens `soft` (when the row holds their states).
    fn pooling_weights(&self, w: &mut [f32], text: std::ops::Range<usize>, soft: Option<std::ops::Range<usize>>) -> Result<()> {
        let mean = |w: &mut [f32], r: std::ops::Range<usize>| {
            let n = r.len() as f32;
            w[r].iter_mut().for_each(|x| *x = 1.0 / n);
        };
        match (self.cfg.pooling, soft) {
            (Pooling::LastToken, _) => *w.last_mut().expect("a row has positions") = 1.0,
            (Pooling::MeanText, _) => mean(w, text),
            (Pooling::MeanSoft, Some(r)) => mean(w, r),
            (Pooling::MeanSoft, None) => return Err(Error::invalid("mean over soft positions needs soft tokens in M's input")),
        }
        Ok(())
    }

    /// Weighted sum over positions (`weights` is (b, t) row-major), L2-normalised.
    fn pool(&self, h: &Tensor, weights: Vec<f32>) -> Result<Tensor> {
        let (b, t, _) = h.dims3()?;
        let w = Tensor::from_vec(weights, (b, t, 1), &self.device)?;
        let pooled = h.broadcast_mul(&w)?.sum(1)?;
        let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norm)?)
    }

    /// Embeddings of one batch, (b, d_e), L2-normalised, by one forward of M over the
    /// whole input (the reference path). `soft` holds each row's soft prompt (b, K, d_e)
    /// when K > 0.
    pub fn embed_batch(&self, text_ids: &[Vec<u32>], soft: Option<&Tensor>, path: Path) -> Result<Tensor> {
        let m = &self.m.dec;
        let k = self.cfg.soft_tokens;
        let b = text_ids.len();
        let lens: Vec<usize> = text_ids.iter().map(|t| t.len() + k).collect();
        let total = *lens.iter().max().unwrap_or(&0);
        let d = m.config().hidden;
        let mut rows = Vec::with_capacity(b);
        let mut pads = Vec::with_capacity(b);
        let mut weights = vec![0f32; b * total];
        for (i, ids) in text_ids.iter().enumerate() {
            let pad = total - lens[i];
            pads.push(pad);
            let text = m.embed_ids(&Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?)?.squeeze(0)?;
            let mut parts = Vec::with_capacity(3);
            if pad > 0 {
                parts.push(Tensor::zeros((pad, d), DType::F32, &self.device)?);
            }
            let (soft_at, text_at) = match self.cfg.placement {
                Placement::Prefix => (pad, pad + k),
                Placement::Suffix => (pad + ids.len(), pad),
            };
            match (soft, self.cfg.placement) {
                (Some(s), Placement::Prefix) => parts.extend([s.get(i)?, text]),
                (Some(s), Placement::Suffix) => parts.extend([text, s.get(i)?]),
                (None, _) => parts.push(text),
            }
            rows.push(Tensor::cat(&parts, 0)?);
            let soft_span = (k > 0).then_some(soft_at..soft_at + k);
            self.pooling_weights(&mut weights[i * total..(i + 1) * total], text_at..text_at + ids.len(), soft_span)?;
        }
        let x = Tensor::stack(&rows, 0)?;
        let h = m.forward_adapted(&x, &pads, None, path, self.m_lora.as_ref())?;
        self.pool(&h, weights)
    }

    /// [`PromptEmbedder::embed_batch`] for soft tokens after the text: M's pass over the
    /// text runs on the fast path (no text position of a causal M depends on the soft
    /// tokens, so nothing there needs a gradient), and only the K soft positions, which
    /// attend to the text's cached keys and values, run on `path`. Same embeddings and
    /// gradients as the full forward, up to float rounding, at a fraction of the cost.
    pub fn embed_batch_suffix(&self, text_ids: &[Vec<u32>], soft: &Tensor, path: Path) -> Result<Tensor> {
        if self.cfg.placement != Placement::Suffix || self.m_lora.is_some() {
            return Err(Error::invalid("the cached suffix path needs soft tokens after the text and a frozen M"));
        }
        let m = &self.m.dec;
        let (ids, pads) = m.pad_left(text_ids, 0)?;
        let mut cache = m.new_cache(&pads);
        let t0 = std::time::Instant::now();
        m.forward(&m.embed_ids(&ids)?, &pads, Some(&mut cache), Path::Fast)?;
        let t1 = std::time::Instant::now();
        let h = m.forward(soft, &pads, Some(&mut cache), path)?;
        tracing::debug!(text_s = (t1 - t0).as_secs_f64(), soft_s = t1.elapsed().as_secs_f64(), rows = text_ids.len(), "suffix forward");
        let k = soft.dim(1)?;
        let mut weights = vec![0f32; text_ids.len() * k];
        for w in weights.chunks_mut(k) {
            self.pooling_weights(w, 0..0, Some(0..k))?;
        }
        self.pool(&h, weights)
    }

    /// Embeds texts on either path; batches by the token budget (longest texts first,
    /// so padding stays small), returning (n, d_e) in input order.
    pub fn embed_tensor(&self, texts: &[&str], kind: Kind, path: Path) -> Result<Tensor> {
        self.embed_texts(texts, kind, path, self.cfg.max_text_tokens)
    }

    /// [`PromptEmbedder::embed_tensor`] with texts cut to `max_tokens` (at most the
    /// config's `max_text_tokens`); training uses shorter texts than inference.
    pub fn embed_texts(&self, texts: &[&str], kind: Kind, path: Path, max_tokens: usize) -> Result<Tensor> {
        self.embed_texts_with(texts, kind, path, max_tokens, None)
    }

    /// Soft prompts of both kinds, (query, passage), each (K, d_e), from one batched pass
    /// of P, for the mode that does not read the text: a training step computes them
    /// once and hands them to [`PromptEmbedder::embed_texts_with`].
    pub fn instruction_prompts(&self, path: Path) -> Result<(Tensor, Tensor)> {
        let s = self.soft_prompts(&[self.instruction_prompt(Kind::Query), self.instruction_prompt(Kind::Passage)], path)?;
        Ok((s.get(0)?, s.get(1)?))
    }

    /// [`PromptEmbedder::embed_texts`] with the kind's constant soft prompt given (from
    /// [`PromptEmbedder::instruction_prompts`]) instead of computed here; `None`: as
    /// `embed_texts`. Ignored when P reads the text.
    pub fn embed_texts_with(&self, texts: &[&str], kind: Kind, path: Path, max_tokens: usize, prompt: Option<Tensor>) -> Result<Tensor> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t, max_tokens)).collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let k = self.cfg.soft_tokens;
        // The cached prompt has no autograd graph: the differentiable path recomputes it
        // so that gradients reach P (its adapters) and the alignment.
        let constant = match (k > 0 && !self.cfg.condition_on_text, path, prompt) {
            (false, _, _) => None,
            (true, _, Some(p)) => Some(p),
            (true, Path::Fast, None) => Some(self.constant_prompt(kind)?),
            (true, Path::Differentiable, None) => Some(self.soft_prompts(&[self.instruction_prompt(kind)], path)?.squeeze(0)?),
        };
        // A constant prefix prompt on the fast path: M's states over it are cached too.
        let prefixed = constant.is_some() && path == Path::Fast && self.cfg.placement == Placement::Prefix && self.cfg.pooling != Pooling::MeanSoft;
        // Soft tokens after the text of a frozen M: the text needs no gradient. (Inference
        // runs one forward over text and soft tokens instead: fewer, larger products.)
        let suffixed = k > 0 && path == Path::Differentiable && self.cfg.placement == Placement::Suffix && self.m_lora.is_none();
        let mut out: Vec<Option<Tensor>> = vec![None; ids.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = ids[order[start]].len() + k;
            let n = (self.cfg.token_budget / longest).max(1).min(order.len() - start);
            let batch: Vec<usize> = order[start..start + n].to_vec();
            let batch_ids: Vec<Vec<u32>> = batch.iter().map(|&i| ids[i].clone()).collect();
            let e = if prefixed {
                self.embed_batch_prefixed(&batch_ids, kind)?
            } else {
                let soft = match (&constant, k) {
                    (_, 0) => None,
                    (Some(c), _) => Some(c.unsqueeze(0)?.repeat((n, 1, 1))?),
                    (None, _) => {
                        let prompts: Vec<Vec<u32>> =
                            batch.iter().map(|&i| self.conditioned_prompt(kind, texts[i], max_tokens)).collect::<Result<_>>()?;
                        Some(self.soft_prompts_ids(&prompts, path)?)
                    }
                };
                match soft {
                    Some(s) if suffixed => self.embed_batch_suffix(&batch_ids, &s, path)?,
                    soft => self.embed_batch(&batch_ids, soft.as_ref(), path)?,
                }
            };
            for (j, &i) in batch.iter().enumerate() {
                out[i] = Some(e.get(j)?);
            }
            start += n;
        }
        let rows: Vec<Tensor> = out.into_iter().map(|t| t.expect("every text embedded")).collect();
        Ok(Tensor::stack(&rows, 0)?)
    }
}

/// Length of the opening that all of a batch's token sequences share and that P can read
/// once for all of them: 0 for a single sequence (nothing to share), otherwise the common
/// prefix, short of each sequence's last token.
fn shared_opening(seqs: &[Vec<u32>]) -> usize {
    let Some((first, others)) = seqs.split_first() else { return 0 };
    if others.is_empty() {
        return 0;
    }
    let shortest = seqs.iter().map(Vec::len).min().unwrap_or(0);
    let common = others.iter().map(|s| first.iter().zip(s).take_while(|(a, b)| a == b).count()).min().unwrap_or(0);
    common.min(shortest.saturating_sub(1))
}

/// Least-squares fit `E_m[t] ~ E_p[t] A + b` over the token strings both vocabularies
/// share (ridge-regularised normal equations, solved by Cholesky in f64).
fn least_squares_alignment(p: &Model, m: &Model) -> Result<(Tensor, Tensor)> {
    let vp = p.tok.vocab();
    let vm = m.tok.vocab();
    let mut pairs: Vec<(u32, u32)> = vp.iter().filter_map(|(s, &i)| vm.get(s).map(|&j| (i, j))).collect();
    pairs.sort_unstable();
    if pairs.len() < 1000 {
        return Err(Error::Model(format!("only {} token strings are shared by the two vocabularies", pairs.len())));
    }
    let dev = p.dec.device();
    let ip = Tensor::from_vec(pairs.iter().map(|x| x.0).collect::<Vec<_>>(), pairs.len(), dev)?;
    let im = Tensor::from_vec(pairs.iter().map(|x| x.1).collect::<Vec<_>>(), pairs.len(), dev)?;
    let x = (p.dec.token_embeddings().index_select(&ip, 0)? * p.dec.config().embed_scale)?;
    let y = (m.dec.token_embeddings().index_select(&im, 0)? * m.dec.config().embed_scale)?;
    let n = x.dim(0)?;
    let x1 = Tensor::cat(&[&x, &Tensor::ones((n, 1), DType::F32, dev)?], 1)?; // bias column
    let xtx: Vec<Vec<f32>> = x1.t()?.matmul(&x1)?.to_vec2()?;
    let xty: Vec<Vec<f32>> = x1.t()?.matmul(&y)?.to_vec2()?;
    let dp = xtx.len();
    let mut a: Vec<f64> = xtx.iter().flatten().map(|v| *v as f64).collect();
    let ridge = 1e-3 * (0..dp).map(|i| a[i * dp + i]).sum::<f64>() / dp as f64;
    for i in 0..dp {
        a[i * dp + i] += ridge;
    }
    // Cholesky A = L L^T, then solve for every column of X^T Y.
    for j in 0..dp {
        let mut s = a[j * dp + j] - (0..j).map(|k| a[j * dp + k] * a[j * dp + k]).sum::<f64>();
        if s <= 0.0 {
            s = 1e-12;
        }
        a[j * dp + j] = s.sqrt();
        for i in j + 1..dp {
            let v = (a[i * dp + j] - (0..j).map(|k| a[i * dp + k] * a[j * dp + k]).sum::<f64>()) / a[j * dp + j];
            a[i * dp + j] = v;
        }
    }
    let de = xty[0].len();
    let mut w = vec![0f32; dp * de];
    for c in 0..de {
        let mut z = vec![0f64; dp];
        for i in 0..dp {
            z[i] = (xty[i][c] as f64 - (0..i).map(|k| a[i * dp + k] * z[k]).sum::<f64>()) / a[i * dp + i];
        }
        for i in (0..dp).rev() {
            z[i] = (z[i] - (i + 1..dp).map(|k| a[k * dp + i] * z[k]).sum::<f64>()) / a[i * dp + i];
        }
        for i in 0..dp {
            w[i * de + c] = z[i] as f32;
        }
    }
    let w = Tensor::from_vec(w, (dp, de), dev)?;
    Ok((w.narrow(0, 0, dp - 1)?, w.get(dp - 1)?))
}

impl Embedder for PromptEmbedder {
    fn embed(&self, texts: &[&str], kind: Kind) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.embed_tensor(texts, kind, Path::Fast)?.to_vec2()?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::decoder::max_abs_diff;

    #[test]
    fn shared_opening_keeps_each_rows_last_token() {
        assert_eq!(shared_opening(&[]), 0);
        assert_eq!(shared_opening(&[vec![1, 2, 3]]), 0, "one row has nothing to share");
        assert_eq!(shared_opening(&[vec![1, 2, 3, 4], vec![1, 2, 5]]), 2);
        assert_eq!(shared_opening(&[vec![1, 2, 3], vec![1, 2, 3]]), 2, "identical rows keep their last token");
        assert_eq!(shared_opening(&[vec![1, 2, 3], vec![1, 2, 3, 4], vec![1, 2]]), 1);
        assert_eq!(shared_opening(&[vec![7, 2], vec![1, 2]]), 0);
    }

    /// Needs SmolLM2 (`scripts/fetch-models.sh`, as for the test command).
    #[test]
    fn cached_prefix_gives_the_full_forward_embeddings() -> Result<()> {
        let e = PromptEmbedder::builtin("untrained")?;
        let texts = ["regex search tool", "x", "GNU C compiler: the GNU compiler collection front end for C, with the usual optimisers and code generators"];
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| e.text_ids(t)).collect::<Result<_>>()?;
        for kind in [Kind::Query, Kind::Passage] {
            let cached = e.embed_batch_prefixed(&ids, kind)?;
            let soft = e.constant_prompt(kind)?.unsqueeze(0)?.repeat((ids.len(), 1, 1))?;
            let full = e.embed_batch(&ids, Some(&soft), Path::Fast)?;
            let diff = max_abs_diff(&cached, &full)?;
            assert!(diff < 1e-5, "{kind:?}: cached prefix differs from the full forward by {diff}");
        }
        Ok(())
    }
}
