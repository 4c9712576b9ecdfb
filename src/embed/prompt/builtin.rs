//! The embedders built into the crate by name: the shipped trained checkpoints (their
//! files compiled in) and the untrained and backbone-alone variants.

use super::*;

impl PromptEmbedder {
    /// A built-in embedder by name:
    /// - `default`: the trained PromptEmbedder shipped in `checkpoints/default/`
    ///   (SmolLM2-135M as the Prompting LLM, Gemma3-270M as the Embedding LLM): `general`
    ///   with a trained readout (see [`super::readout`]);
    /// - `general`: the same backbones trained on Debian descriptions, Python and Rust
    ///   docs and two glossaries (`checkpoints/general/`), the default before the readout;
    /// - `debian`: the same backbones trained on Debian descriptions alone
    ///   (`checkpoints/debian/`), the default before the multi-source training;
    /// - `smollm2` (also `prompt`): the trained PromptEmbedder with SmolLM2 as both,
    ///   shipped in `checkpoints/smollm2/`, the default until the Gemma3 transfer;
    /// - `untrained`: PromptEmbedder on SmolLM2 before training, soft prompt from the
    ///   instruction only, the default of databases created before training landed;
    /// - `prompt-text`: untrained, P also reads the text;
    /// - `m-mean` / `m-last`: SmolLM2 alone, mean or last-token pooling.
    pub fn builtin(name: &str) -> Result<Self> {
        match name {
            "default" => return Self::shipped("default"),
            "general" => return Self::shipped("general"),
            "debian" => return Self::shipped("debian"),
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
        let mut e = Self::new(cfg, &crate::embed::device()?)?;
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
        let mut e = Self::new(cfg, &crate::embed::device()?)?;
        e.spec = Some(format!("{pooling}:{name}"));
        Ok(e)
    }

    /// A trained checkpoint built into the crate (`checkpoints/default/`, `general/`,
    /// `debian/` or `smollm2/`; each README says how it was trained), so a fresh clone
    /// needs only the backbone files. All ship their constant soft prompts, so they
    /// embed without loading the Prompting LLM (`examples/write_soft_prompts.rs`).
    pub(super) fn shipped(name: &str) -> Result<Self> {
        macro_rules! file {
            ($d:literal, $f:literal) => {
                include_bytes!(concat!("../../../checkpoints/", $d, "/", $f)).as_slice()
            };
        }
        // A file that two checkpoints share byte for byte is compiled in once, from the
        // checkpoint it was trained in: the crate must stay under crates.io's 10 MB.
        // `files!(own, alignment's, adapters')`: `debian` kept `smollm2`'s adapters (a
        // transfer trains only the alignment); the default is `general` with a readout.
        macro_rules! files {
            ($own:literal, $align:literal, $lora:literal) => {
                (
                    $own,
                    file!($own, "config.json"),
                    file!($align, "alignment.safetensors"),
                    file!($lora, "prompting_lora.safetensors"),
                    file!($own, "soft_prompts.safetensors"),
                )
            };
        }
        let (dir, config, alignment, lora, prompts) = match name {
            "default" => files!("default", "general", "general"),
            "general" => files!("general", "general", "general"),
            "debian" => files!("debian", "debian", "smollm2"),
            "smollm2" => files!("smollm2", "smollm2", "smollm2"),
            other => return Err(Error::UnknownEmbedder { spec: other.into(), detail: "not a shipped checkpoint".into() }),
        };
        let dir = format!("{}/checkpoints/{dir}", env!("CARGO_MANIFEST_DIR"));
        let origin = Path::new(&dir);
        let cfg: PromptConfig = serde_json::from_slice(config).map_err(|e| Error::corrupt_from(origin.join("config.json"), "invalid JSON", e))?;
        // The default's readout (trained over `general`, whose other files it shares).
        let readout = (name == "default").then(|| file!("default", "readout.safetensors").to_vec());
        let files = CheckpointFiles {
            alignment: alignment.to_vec(),
            prompting_lora: Some(lora.to_vec()),
            embedding_lora: None,
            soft_prompts: Some(prompts.to_vec()),
            readout,
        };
        Self::from_files(cfg, &files, origin, Some(name.into()))
    }
}
