//! Embedders: the seam between text and vectors.
//!
//! The database only ever sees the [`Embedder`] trait: a batch of texts in, one
//! L2-normalised vector per text out, a fixed dimension and a fingerprint that
//! identifies the exact function (so vectors of different embedders are never mixed).
//! Nothing in this module knows about storage.

pub mod bert;
pub mod decoder;
mod device;
pub mod gguf;
mod hash;
mod precision;
pub mod prompt;
mod threads;
pub mod tokenizer;

pub use device::{device, device_choice, set_device, DeviceChoice, DEFAULT_DEVICE};
pub use hash::{HashEmbedder, HashEmbedderConfig};
pub use precision::{precision, set_precision, Precision, DEFAULT_PRECISION};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether a text is a search query or a stored passage.
///
/// Asymmetric embedders (PromptEmbedder) use a different instruction for each;
/// symmetric ones ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A search query.
    Query,
    /// A document stored in the database.
    Passage,
}

/// Turns texts into vectors.
///
/// Implementations must be deterministic for a given fingerprint, return vectors of
/// exactly [`Embedder::dim`] components, and L2-normalise them (the index scores by
/// dot product).
pub trait Embedder: Send + Sync {
    /// Embeds a batch of texts; the result has one vector per text, in order.
    fn embed(&self, texts: &[&str], kind: Kind) -> Result<Vec<Vec<f32>>>;
    /// Number of components of every vector.
    fn dim(&self) -> usize;
    /// A string that changes whenever the function from text to vector changes.
    fn fingerprint(&self) -> String;
    /// The spec that [`from_spec`] turns back into this embedder, if any.
    ///
    /// The database records it so that reopening restores the embedder without the
    /// caller naming it again. `None` means the embedder must be passed explicitly.
    fn spec(&self) -> Option<String>;
}

/// The spec of the embedder a new database gets when none is chosen: the trained
/// PromptEmbedder shipped with the crate, SmolLM2-135M prompting Gemma3-270M (see
/// docs/evaluation.md for how it was trained and what it scores).
pub const DEFAULT_SPEC: &str = "default";

/// One built-in embedder name: the one table that [`from_spec`], its error message and
/// `duetdb embed --help` read, so a name is added in one place.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name, as written in a spec.
    pub name: &'static str,
    /// What the optional `:ARG` after the name is, if the name takes one.
    pub arg: Option<&'static str>,
    /// One line on what it is.
    pub about: &'static str,
    build: BuildFn,
}

/// How a [`Builtin`] is built from its name and optional argument.
type BuildFn = fn(name: &str, arg: Option<&str>) -> Result<Arc<dyn Embedder>>;

fn build_hash(name: &str, arg: Option<&str>) -> Result<Arc<dyn Embedder>> {
    let mut cfg = HashEmbedderConfig::default();
    if let Some(a) = arg {
        cfg.dim =
            a.parse().map_err(|_| Error::UnknownEmbedder { spec: format!("{name}:{a}"), detail: "expected `hash:DIM` with DIM a positive integer".into() })?;
    }
    Ok(Arc::new(HashEmbedder::new(cfg)?))
}

fn build_prompt(name: &str, arg: Option<&str>) -> Result<Arc<dyn Embedder>> {
    match arg {
        Some(b) => Ok(Arc::new(prompt::PromptEmbedder::backbone_alone(name, b)?)),
        None => Ok(Arc::new(prompt::PromptEmbedder::builtin(name)?)),
    }
}

fn build_minilm(_: &str, _: Option<&str>) -> Result<Arc<dyn Embedder>> {
    Ok(Arc::new(bert::BertEmbedder::load(&model_path("all-MiniLM-L6-v2")?)?))
}

/// Every built-in embedder name (besides a checkpoint directory, which any spec may be).
pub const BUILTINS: &[Builtin] = &[
    Builtin { name: "hash", arg: Some("DIM"), about: "feature hashing of word and character n-grams, no model (384 dimensions unless DIM)", build: build_hash },
    Builtin {
        name: "default",
        arg: None,
        about:
            "the trained PromptEmbedder shipped in checkpoints/default/: SmolLM2-135M prompting Gemma3-270M, trained on Debian, Python, Rust and glossary pairs, with a trained readout",
        build: build_prompt,
    },
    Builtin {
        name: "general",
        arg: None,
        about: "the same without the readout (checkpoints/general/), the default before the first readout",
        build: build_prompt,
    },
    Builtin {
        name: "debian",
        arg: None,
        about: "the same trained on Debian descriptions alone (checkpoints/debian/), the default before the multi-source training",
        build: build_prompt,
    },
    Builtin {
        name: "smollm2",
        arg: None,
        about: "the trained PromptEmbedder on SmolLM2 alone (checkpoints/smollm2/), the default before the Gemma3 transfer",
        build: build_prompt,
    },
    Builtin { name: "prompt", arg: None, about: "the old name of smollm2", build: build_prompt },
    Builtin { name: "untrained", arg: None, about: "PromptEmbedder on SmolLM2 before training (soft prompt from the instruction alone)", build: build_prompt },
    Builtin { name: "prompt-text", arg: None, about: "untrained, with the prompt also reading the text", build: build_prompt },
    Builtin {
        name: "m-mean",
        arg: Some("BACKBONE"),
        about: "a backbone alone, no soft prompt, mean pooling (SmolLM2, or qwen2.5 / gemma3)",
        build: build_prompt,
    },
    Builtin { name: "m-last", arg: Some("BACKBONE"), about: "a backbone alone, no soft prompt, last-token pooling", build: build_prompt },
    Builtin { name: "minilm", arg: None, about: "all-MiniLM-L6-v2 (BERT, mean pooling), the classic small encoder", build: build_minilm },
];

/// Builds an embedder from its spec: a built-in name from [`BUILTINS`] (with its
/// `:ARG` where it takes one) or a PromptEmbedder checkpoint directory (`config.json`,
/// `alignment.safetensors`).
///
/// Model files are looked up as described in [`model_path`].
///
/// ```
/// let e = duetdb::embed::from_spec("hash").unwrap();
/// assert_eq!(e.dim(), 384);
/// let err = duetdb::embed::from_spec("no-such-embedder").err().unwrap();
/// assert!(err.to_string().contains("minilm"), "the error lists the names: {err}");
/// ```
pub fn from_spec(spec: &str) -> Result<Arc<dyn Embedder>> {
    let spec = spec.trim();
    let (name, arg) = match spec.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (spec, None),
    };
    if let Some(b) = BUILTINS.iter().find(|b| b.name == name && (arg.is_none() || b.arg.is_some())) {
        return (b.build)(name, arg);
    }
    if Path::new(spec).join("config.json").is_file() {
        return Ok(Arc::new(prompt::PromptEmbedder::load(Path::new(spec))?));
    }
    let names: Vec<String> = BUILTINS.iter().map(|b| b.arg.map_or(b.name.to_string(), |a| format!("{}, {}:{a}", b.name, b.name))).collect();
    Err(Error::UnknownEmbedder { spec: spec.to_string(), detail: format!("expected {}, or a checkpoint directory", names.join(", ")) })
}

/// Earlier defaults kept as checkpoint directories of the repository, not built into the
/// crate (crates.io's 10 MB holds one readout): a database that recorded one of them finds
/// it when the crate was built from a clone; otherwise opening it names both fingerprints
/// and `reindex`.
const REPOSITORY_DEFAULTS: &[(&str, &str)] = [
    ("checkpoints/readout-4500", "the first readout default (4,500 training pairs a source, 2026-12-05)"),
    ("checkpoints/readout-12k", "the second readout default (12,000 training pairs a source, 2026-12-05 to 12-06)"),
]
.as_slice();

/// The embedder a database recorded, by spec and fingerprint.
///
/// `default` has named seven functions over time: the untrained PromptEmbedder, then the
/// trained one on SmolLM2 (`smollm2`), then SmolLM2 prompting Gemma3 trained on Debian
/// alone (`debian`), then the same trained on four sources (`general`), then `general`
/// with a first readout (`checkpoints/readout-4500`), then with one trained on more pairs
/// (`checkpoints/readout-12k`), now with one trained on every Debian pair too. A database
/// that recorded `default` with an earlier default's fingerprint gets that embedder back
/// (and a warning that says how to move to today's default), never vectors of another
/// function.
pub fn from_record(spec: &str, fingerprint: &str) -> Result<Arc<dyn Embedder>> {
    let e = from_spec(spec)?;
    if e.fingerprint() == fingerprint || spec.trim() != "default" {
        return Ok(e);
    }
    let warn = |what: &str, name: &str| {
        tracing::warn!(
            "this database was built with {what}; it keeps working with it (`{name}`), but today's default retrieves \
             better: move it with `duetdb reindex DB --embedder default` (a new generation, queries keep being answered \
             meanwhile)"
        )
    };
    for (old_spec, what) in [
        ("general", "the multi-source default (before its readout became the default)"),
        ("debian", "the Debian-only default (before the multi-source training became the default)"),
        ("smollm2", "the SmolLM2 default (before the Gemma3 transfer became the default)"),
        ("untrained", "the untrained default (before training landed)"),
    ] {
        let old = from_spec(old_spec)?;
        if old.fingerprint() == fingerprint {
            warn(what, old_spec);
            return Ok(old);
        }
    }
    for (dir, what) in REPOSITORY_DEFAULTS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        if path.join("config.json").is_file() {
            let old: Arc<dyn Embedder> = Arc::new(prompt::PromptEmbedder::load(&path)?);
            if old.fingerprint() == fingerprint {
                warn(what, &path.display().to_string());
                return Ok(old);
            }
        }
    }
    Ok(e)
}

/// Finds a model file (or directory) by name: in `$DUETDB_MODELS`, then `./models`, then the fetch
/// cache (`$DUETDB_CACHE`, default `~/.cache/duetdb`). A missing file is an error that
/// names the fetch command.
pub fn model_path(file: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("DUETDB_MODELS") {
        dirs.push(d.into());
    }
    dirs.push("models".into());
    if let Ok(d) = std::env::var("DUETDB_CACHE") {
        dirs.push(d.into());
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/duetdb"));
    }
    dirs.iter().map(|d| d.join(file)).find(|p| p.exists()).ok_or_else(|| {
        Error::model(format!(
            "model file {file} not found in {}: run scripts/fetch-models.sh",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Each row of `x` (along its last dimension) L2-normalised; a zero row stays zero (its
/// norm is clamped at 1e-12).
pub(crate) fn normalize_rows(x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
    let norm = x.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// L2-normalises `v` in place; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Checks that the file at `path` has the SHA-256 `expected`; a mismatch names the file
/// and the fetch command (`scripts/fetch-models.sh {fetch_arg}`). Hashes are remembered
/// by path, size and modification time, so that opening a database does not hash
/// hundreds of megabytes every time.
pub(crate) fn verify_sha256(path: &Path, expected: &str, fetch_arg: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    use std::sync::Mutex;
    type Seen = Vec<((PathBuf, u64, std::time::SystemTime), String)>;
    static SEEN: Mutex<Seen> = Mutex::new(Vec::new());
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().map_err(|e| Error::io(path, e))?);
    let known = SEEN.lock().unwrap().iter().find(|(k, _)| *k == key).map(|(_, h)| h.clone());
    let got = match known {
        Some(h) => h,
        None => {
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
            let h = hex(&h.finalize());
            SEEN.lock().unwrap().push((key, h.clone()));
            h
        }
    };
    if got != expected {
        let cmd = format!("scripts/fetch-models.sh {fetch_arg}");
        return Err(Error::model(format!("{} has SHA-256 {got}, expected {expected}: run {} to get the pinned file", path.display(), cmd.trim_end())));
    }
    Ok(())
}

/// Lower-case hex of bytes.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
