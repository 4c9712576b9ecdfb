//! What a PromptEmbedder is made of: the backbone catalogue (pinned model files), where
//! the soft tokens go, how M's states are pooled, and the serialised configuration.

use super::*;

/// A backbone model file and the SHA-256 it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backbone {
    /// File name of the GGUF, looked up in the model directories (see [`crate::embed::model_path`]).
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
    /// How many of M's blocks run: the pooled states are those after block `n` (then M's
    /// final norm), so a document costs `n / layers` of the whole forward. `None`: all of
    /// them. Needs M to be another model than P.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_layers: Option<usize>,
    /// Low-rank adapters on P (trained with the soft prompt); `None`: P as loaded.
    /// Stored in the checkpoint's `prompting_lora.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Low-rank adapters on M itself: the LoRA baseline of training, which fine-tunes the
    /// Embedding LLM instead of prompting it (use it with `soft_tokens: 0`). Stored in the
    /// checkpoint's `embedding_lora.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_lora: Option<LoraConfig>,
    /// A trained linear map from M's states at the soft positions (after several blocks)
    /// to the vector, stored in `readout.safetensors`; `None`: the pooled state itself
    /// (see [`super::readout`]). Needs soft tokens after the text, pooled over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readout: Option<ReadoutConfig>,
}

/// Qwen2.5-Coder-0.5B-Instruct, the second backbone (ARCHITECTURE.md, "Models").
pub fn qwen25() -> Backbone {
    Backbone {
        file: "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf".into(),
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
        tokenizer: None,
    }
}

/// Gemma3-270M, the third backbone (ARCHITECTURE.md, "Models"); its tokenizer comes from a
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
            let p = Path::new(path);
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            Ok(Backbone {
                file: std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?.display().to_string(),
                sha256: crate::embed::hex(&Sha256::digest(&bytes)),
                tokenizer: None,
            })
        }
        other => Err(Error::UnknownEmbedder { spec: other.into(), detail: "a backbone is smollm2, qwen2.5, gemma3 or a .gguf file".into() }),
    }
}

/// How the fresh alignment of a transfer starts (see [`PromptEmbedder::transfer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignInit {
    /// Least-squares fit between P's and M's token embeddings over their shared token
    /// strings (ARCHITECTURE.md, "The embedder").
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

/// SmolLM2-135M-Instruct, the default P and M (ARCHITECTURE.md, "Models").
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
            m_layers: None,
            readout: None,
        }
    }
}

/// Shape changes for a run that starts from a trained checkpoint
/// ([`super::PromptEmbedder::load_reshaped`]); each `None` keeps the checkpoint's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reshape {
    /// Run only M's first n blocks (an earlier exit; see [`PromptConfig::m_layers`]).
    pub m_layers: Option<usize>,
    /// Let P write this many soft tokens instead (the first ones are unchanged: relaxed
    /// decoding writes them one after another).
    pub soft_tokens: Option<usize>,
}
