//! The embedder of a generation: named by its record (spec, fingerprint, dimension) and
//! loaded on first use, so that opening a database (or `get`, `delete`, `stats`) never
//! loads a model. Readers' snapshots and reindex jobs both hold one.

use crate::embed::{self, Embedder};
use crate::error::{Error, Result};
use crate::store::{GenerationRecord, Manifest};
use std::sync::{Arc, OnceLock};

/// A generation's embedder, loaded from its record on first use, so that opening a
/// database (or `get`, `delete`, `stats`) never loads a model.
pub(crate) struct GenEmbedder {
    pub(crate) generation: u64,
    pub(crate) dim: usize,
    pub(crate) fingerprint: String,
    pub(crate) spec: Option<String>,
    loaded: OnceLock<Arc<dyn Embedder>>,
}

impl GenEmbedder {
    pub(crate) fn active(m: &Manifest, loaded: Option<Arc<dyn Embedder>>) -> Self {
        Self::of(&m.active_generation(), loaded)
    }

    pub(crate) fn of(g: &GenerationRecord, loaded: Option<Arc<dyn Embedder>>) -> Self {
        let cell = OnceLock::new();
        if let Some(e) = loaded {
            let _ = cell.set(e);
        }
        Self { generation: g.generation, dim: g.dim, fingerprint: g.embedder_fingerprint.clone(), spec: g.embedder_spec.clone(), loaded: cell }
    }

    pub(crate) fn get(&self) -> Result<Arc<dyn Embedder>> {
        if let Some(e) = self.loaded.get() {
            return Ok(e.clone());
        }
        let spec = self.spec.as_deref().ok_or_else(|| Error::UnknownEmbedder {
            spec: self.fingerprint.clone(),
            detail: "the database was built with a custom embedder: pass it with Db::options().embedder(..)".into(),
        })?;
        let e = embed::from_record(spec, &self.fingerprint)?;
        check(&self.fingerprint, self.dim, e.as_ref())?;
        Ok(self.loaded.get_or_init(|| e).clone())
    }
}

/// An embedder may fill a generation only if it computes the same function.
pub(crate) fn check(fingerprint: &str, dim: usize, e: &dyn Embedder) -> Result<()> {
    if e.fingerprint() != fingerprint {
        return Err(Error::EmbedderMismatch { stored: fingerprint.to_string(), requested: e.fingerprint() });
    }
    if e.dim() != dim {
        return Err(Error::Dimension { expected: dim, found: e.dim() });
    }
    Ok(())
}
