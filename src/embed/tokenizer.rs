//! Tokenizers for the decoders: built from a GGUF file's own vocabulary and merges, or
//! read from a `tokenizer.json`.

use super::gguf::Gguf;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// Qwen2's pre-tokenizer pattern (as in its tokenizer.json and llama.cpp's `qwen2`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A text tokenizer and the special ids a decoder needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Beginning-of-sequence id, when the model prepends one.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab", &self.inner.get_vocab_size(true)).field("bos", &self.bos).finish()
    }
}

fn tok_err(e: tokenizers::Error) -> Error {
    Error::model_from("tokenizer", e)
}

impl TextTokenizer {
    /// Builds the byte-level BPE tokenizer stored in a GGUF file (`tokenizer.ggml.model`
    /// = `gpt2`), with the pre-tokenizer named by `tokenizer.ggml.pre`.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::model(format!("{}: tokenizer model `{model}` is not byte-level BPE; pass its tokenizer.json instead", g.path().display())));
        }
        let tokens: Vec<String> = g.meta("tokenizer.ggml.tokens")?.to_vec()?.iter().map(|v| v.to_string().cloned()).collect::<Result<_, _>>()?;
        let types: Vec<i32> = match g.meta_opt("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec()?.iter().map(|t| t.to_i32()).collect::<Result<_, _>>()?,
            None => vec![1; tokens.len()],
        };
        let merges: Vec<(String, String)> = g
            .meta("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|m| {
                let m = m.to_string()?;
                let (a, b) = m.split_once(' ').ok_or_else(|| candle_core::Error::Msg(format!("merge `{m}` has no space")))?;
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_, candle_core::Error>>()?;
        let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or("default");
        let pre_tok: PreTokenizerWrapper = match pre {
            // SmolLM2's tokenizer.json: single digits, then GPT-2's byte-level regex.
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
            "qwen2" => {
                inner.with_normalizer(Some(NFC)).map_err(tok_err)?;
                let split = Split::new(SplitPattern::Regex(QWEN2_PATTERN.into()), SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
            "default" | "gpt2" => ByteLevel::new(false, true, true).into(),
            other => return Err(Error::model(format!("{}: unsupported pre-tokenizer `{other}`", g.path().display()))),
        };
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control and user-defined tokens (types 3 and 4) match as whole strings.
        let special: Vec<AddedToken> =
            tokens.iter().zip(&types).filter(|(_, t)| **t == 3 || **t == 4).map(|(s, _)| AddedToken::from(s.clone(), true)).collect();
        inner.add_special_tokens(special).map_err(tok_err)?;
        let id = |k: &str| g.meta_u32(k).ok();
        let add_bos = g.meta_opt("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        Ok(Self { inner, bos: id("tokenizer.ggml.bos_token_id"), eos: id("tokenizer.ggml.eos_token_id"), add_bos })
    }

    /// Reads a Hugging Face `tokenizer.json`; `bos` is prepended when given.
    pub fn from_file(path: &Path, bos: Option<u32>, eos: Option<u32>) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| Error::model_from(format!("tokenizer {}", path.display()), e))?;
        Ok(Self { inner, bos, eos, add_bos: bos.is_some() })
    }

    /// Token ids of `text` (with the model's BOS when it uses one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every token string with its id.
    pub fn vocab(&self) -> HashMap<String, u32> {
        self.inner.get_vocab(true)
    }
}
