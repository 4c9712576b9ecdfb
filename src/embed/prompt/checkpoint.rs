//! Checkpoint directories: reading and writing `config.json` and the tensor files, and the
//! fingerprint that names the function from text to vector.

use super::readout::READOUT_FILE;
use super::*;

/// File name of P's adapters in a checkpoint directory.
pub(super) const LORA_FILE: &str = "prompting_lora.safetensors";
/// File name of M's adapters (the LoRA baseline) in a checkpoint directory.
pub(super) const M_LORA_FILE: &str = "embedding_lora.safetensors";
/// File name of the constant soft prompts in M's space, when the soft prompt reads only
/// the instruction: with it, embedding never needs P (see [`PromptEmbedder::load`]).
pub(super) const PROMPTS_FILE: &str = "soft_prompts.safetensors";

/// The contents of a checkpoint's tensor files.
pub(super) struct CheckpointFiles {
    pub(super) alignment: Vec<u8>,
    pub(super) prompting_lora: Option<Vec<u8>>,
    pub(super) embedding_lora: Option<Vec<u8>>,
    pub(super) soft_prompts: Option<Vec<u8>>,
    pub(super) readout: Option<Vec<u8>>,
}

impl CheckpointFiles {
    /// The alignment's weight and bias; `origin` (the checkpoint directory) names the file
    /// in errors.
    pub(super) fn alignment(&self, origin: &Path, device: &Device) -> Result<(Tensor, Tensor)> {
        let path = origin.join("alignment.safetensors");
        let tensors = candle_core::safetensors::load_buffer(&self.alignment, device).map_err(|e| Error::corrupt_from(&path, "unreadable safetensors", e))?;
        let get = |n: &str| tensors.get(n).cloned().ok_or_else(|| Error::corrupt(&path, format!("no tensor `{n}`")));
        Ok((get("weight")?, get("bias")?))
    }
}

/// Reads a checkpoint directory's config and tensor files (adapter files only where the
/// config has adapters; a missing one is an error naming it).
pub(super) fn read_checkpoint(dir: &Path) -> Result<(PromptConfig, CheckpointFiles)> {
    let read = |n: &str| std::fs::read(dir.join(n)).map_err(|e| Error::io(dir.join(n), e));
    let cfg: PromptConfig = serde_json::from_slice(&read("config.json")?).map_err(|e| Error::corrupt_from(dir.join("config.json"), "invalid JSON", e))?;
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
        readout: match &cfg.readout {
            Some(_) if !dir.join(READOUT_FILE).exists() => {
                return Err(Error::corrupt(dir.join(READOUT_FILE), "missing: the checkpoint's config.json has a readout"))
            }
            Some(_) => Some(read(READOUT_FILE)?),
            None => None,
        },
    };
    Ok((cfg, files))
}

/// A safetensors file's tensors as f32 (as adapters are held), for hashing.
pub(super) fn f32_tensors(bytes: &[u8], path: &Path) -> Result<HashMap<String, Tensor>> {
    let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| Error::corrupt_from(path, "unreadable safetensors", e))?;
    t.into_iter().map(|(n, x)| Ok((n, x.to_dtype(DType::F32)?))).collect()
}

/// The fingerprint of a PromptEmbedder: its config, alignment, adapters and readout, hashed.
pub(super) fn fingerprint(
    cfg: &PromptConfig,
    align_w: &Tensor,
    align_b: &Tensor,
    p_lora: Option<&HashMap<String, Tensor>>,
    m_lora: Option<&HashMap<String, Tensor>>,
    readout: Option<&Tensor>,
) -> Result<String> {
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
    // Hashed last, and only when present: checkpoints without one keep their fingerprints.
    if let Some(w) = readout {
        h.update(b"readout.weight");
        hash_tensor(&mut h, w)?;
    }
    let de = align_b.dims().first().copied().unwrap_or(0);
    Ok(format!("prompt-v1:{}:d{de}", &crate::embed::hex(&h.finalize())[..16]))
}

impl PromptEmbedder {
    /// Loads a checkpoint directory (`config.json`, `alignment.safetensors`, and
    /// `prompting_lora.safetensors` / `embedding_lora.safetensors` when the config has
    /// adapters).
    ///
    /// When the soft prompt reads only the instruction, [`PromptEmbedder::save`] also
    /// writes `soft_prompts.safetensors`: the two constant prompts in M's space, keyed by
    /// the checkpoint's fingerprint. With it, embedding needs only M, and P is loaded
    /// (its file is checked at once) only when training or a cleared cache needs it;
    /// a stale file is ignored with a warning.
    pub fn load(dir: &Path) -> Result<Self> {
        let (cfg, files) = read_checkpoint(dir)?;
        let spec = std::fs::canonicalize(dir).ok().map(|d| d.display().to_string());
        Self::from_files(cfg, &files, dir, spec)
    }

    /// [`PromptEmbedder::load`] with the shape changes of `reshape` (each `None`: as
    /// saved): the start of a run that trains the checkpoint for an earlier exit of M or
    /// for another number of soft tokens. The result is another embedder, with its own
    /// fingerprint, without the checkpoint's readout if it has one; a shipped constant
    /// prompt written for the saved shape is ignored.
    ///
    /// ```no_run
    /// use duetdb::embed::prompt::{PromptEmbedder, Reshape};
    /// let dir = std::path::Path::new("checkpoints/default");
    /// let ten = PromptEmbedder::load_reshaped(dir, Reshape { soft_tokens: Some(10), ..Reshape::default() })?;
    /// assert_eq!(ten.config().soft_tokens, 10);
    /// # Ok::<(), duetdb::Error>(())
    /// ```
    pub fn load_reshaped(dir: &Path, reshape: Reshape) -> Result<Self> {
        if reshape == Reshape::default() {
            return Self::load(dir);
        }
        let (mut cfg, files) = read_checkpoint(dir)?;
        // A readout reads the saved shape's states (and a prompt-mode run cannot train
        // through one): the reshaped embedder starts without it.
        cfg.readout = None;
        if let Some(n) = reshape.m_layers {
            cfg.m_layers = Some(n);
        }
        if let Some(k) = reshape.soft_tokens {
            // Without soft tokens a checkpoint has no trained prompt to extend (its P
            // and alignment, if any, were never read).
            if cfg.soft_tokens == 0 || k == 0 {
                return Err(Error::invalid(format!(
                    "--soft-tokens {k}: {} has {} soft tokens; only a prompted checkpoint can change their number, and not to 0",
                    dir.display(),
                    cfg.soft_tokens
                )));
            }
            cfg.soft_tokens = k;
        }
        Self::from_files(cfg, &files, dir, None)
    }

    /// A checkpoint from its files' contents; `origin` names them in errors.
    pub(super) fn from_files(cfg: PromptConfig, files: &CheckpointFiles, origin: &Path, spec: Option<String>) -> Result<Self> {
        let device = crate::embed::device()?;
        let (align_w, align_b) = files.alignment(origin, &device)?;
        let m = embedding_depth(&cfg, Arc::new(load_model(&cfg.embedding, &device)?))?;
        let m_lora = match (&cfg.embedding_lora, &files.embedding_lora) {
            (Some(l), Some(b)) => Some(Lora::from_bytes(l.clone(), &m.dec, b, &origin.join(M_LORA_FILE))?),
            (Some(_), None) => return Err(Error::corrupt(origin.join(M_LORA_FILE), "missing: the checkpoint's config.json has LoRA adapters")),
            (None, _) => None,
        };
        let readout = match (&cfg.readout, &files.readout) {
            (Some(r), Some(b)) => Some(Readout::from_bytes(r.clone(), b, &origin.join(READOUT_FILE), cfg.soft_tokens, m.dec.config().hidden, &device)?),
            (Some(_), None) => return Err(Error::corrupt(origin.join(READOUT_FILE), "missing: the checkpoint's config.json has a readout")),
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
            let readout_w = readout.as_ref().map(|r| r.weight());
            if let Some(prompts) = Self::shipped_prompts(&cfg, bytes, origin, (&align_w, &align_b), adapters, readout_w, m.dec.config().hidden)? {
                verify_backbone(&cfg.prompting)?;
                let deferred = DeferredPrompting { lora: files.prompting_lora.clone(), origin: origin.to_path_buf() };
                let input = PromptingInput::Deferred { lora_tensors, deferred, prompts };
                return Self::assemble(cfg, spec, input, m, (align_w, align_b), m_lora, readout, &device);
            }
        }
        let p = if cfg.embedding == cfg.prompting { m.clone() } else { Arc::new(load_model(&cfg.prompting, &device)?) };
        let lora = match (&cfg.lora, &files.prompting_lora) {
            (Some(l), Some(b)) => Some(Lora::from_bytes(l.clone(), &p.dec, b, &origin.join(LORA_FILE))?),
            _ => None,
        };
        Self::assemble(cfg, spec, PromptingInput::Loaded(Prompting { model: p, lora }), m, (align_w, align_b), m_lora, readout, &device)
    }

    /// The checkpoint's constant soft prompts (`soft_prompts.safetensors`, its `bytes`), by
    /// kind, when the file was written for exactly these parameters (its recorded
    /// fingerprint matches). A stale or damaged file is ignored with a warning: P then
    /// computes the prompts, as without the file. `adapters`: P's and M's adapter tensors,
    /// as the fingerprint hashes them.
    pub(super) fn shipped_prompts(
        cfg: &PromptConfig,
        bytes: &[u8],
        origin: &Path,
        (align_w, align_b): (&Tensor, &Tensor),
        adapters: [Option<&HashMap<String, Tensor>>; 2],
        readout: Option<&Tensor>,
        de: usize,
    ) -> Result<Option<HashMap<Kind, Tensor>>> {
        let path = origin.join(PROMPTS_FILE);
        let want = fingerprint(cfg, align_w, align_b, adapters[0], adapters[1], readout)?;
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

    /// The fingerprint of the parameters as they are now (training changes them in place;
    /// the embedder's own fingerprint is the one it was built with). Loads P if needed.
    pub(super) fn current_fingerprint(&self) -> Result<String> {
        let (w, b) = self.alignment();
        let p_lora = self.lora()?.map(|l| l.tensors());
        fingerprint(&self.cfg, w, b, p_lora.as_ref(), self.m_lora.as_ref().map(|l| l.tensors()).as_ref(), self.readout.as_ref().map(|r| r.weight()))
    }

    /// Writes this embedder as a checkpoint directory.
    ///
    /// Each file is written under a temporary name and renamed into place, tensors
    /// first and `config.json` last, so a crash leaves either the old file or the new
    /// one, never a torn file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let put = |name: &str, write: &dyn Fn(&Path) -> Result<()>| crate::durable::replace_file(&dir.join(name), write);
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
            let fp = self.current_fingerprint()?;
            let mut t: HashMap<String, Tensor> = HashMap::new();
            for (kind, name) in [(Kind::Query, "query"), (Kind::Passage, "passage")] {
                t.insert(name.into(), self.soft_prompts(&[self.instruction_prompt(kind)], Kernels::Fast)?.squeeze(0)?);
            }
            let n = fp.len();
            t.insert("fingerprint".into(), Tensor::from_vec(fp.into_bytes(), n, &Device::Cpu)?);
            put(PROMPTS_FILE, &|f| Ok(candle_core::safetensors::save(&t, f)?))?;
        } else {
            remove(PROMPTS_FILE)?;
        }
        match &self.readout {
            Some(r) => put(READOUT_FILE, &|f| r.save(f))?,
            None => remove(READOUT_FILE)?,
        }
        let cfg = serde_json::to_vec_pretty(&self.cfg).expect("config serialises");
        put("config.json", &|f| std::fs::write(f, &cfg).map_err(|e| Error::io(f, e)))?;
        Ok(())
    }
}
