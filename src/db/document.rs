//! Documents going in and hits coming out.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A document to ingest: an external id, the text to embed and optional metadata.
///
/// ```
/// use duetdb::Document;
/// let d = Document::new("ripgrep", "ripgrep recursively searches directories for a regex")
///     .with_metadata(serde_json::json!({"section": "utils"}));
/// assert_eq!(d.id, "ripgrep");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The caller's id; ingesting the same id again replaces the document (upsert).
    pub id: String,
    /// The text that is embedded and returned with hits.
    pub text: String,
    /// A JSON object (or null) stored with the document and usable in filters.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl Document {
    /// A document without metadata.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self { id: id.into(), text: text.into(), metadata: serde_json::Value::Null }
    }

    /// Sets the metadata (a JSON object).
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Checks the document against the limits, naming it in the error.
    pub(crate) fn validate(&self, max_text_bytes: usize) -> Result<()> {
        const MAX_ID_BYTES: usize = 512;
        if self.id.is_empty() {
            return Err(Error::invalid("document id is empty"));
        }
        if self.id.len() > MAX_ID_BYTES {
            return Err(Error::invalid(format!("document id of {} bytes is longer than {MAX_ID_BYTES}", self.id.len())));
        }
        if self.text.trim().is_empty() {
            return Err(Error::invalid(format!("document `{}` has empty text", self.id)));
        }
        if self.text.len() > max_text_bytes {
            return Err(Error::invalid(format!(
                "document `{}` has {} bytes of text, more than the limit of {max_text_bytes} (split it, or raise DbOptions::max_text_bytes)",
                self.id,
                self.text.len()
            )));
        }
        if !(self.metadata.is_object() || self.metadata.is_null()) {
            return Err(Error::invalid(format!("metadata of document `{}` must be a JSON object or null", self.id)));
        }
        Ok(())
    }

    /// SHA-256 of text and metadata, hex: equal hashes make an upsert a no-op.
    pub(crate) fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.text.as_bytes());
        h.update([0u8]);
        h.update(serde_json::to_vec(&self.metadata).expect("JSON value serialises"));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One query result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The document's external id.
    pub id: String,
    /// Higher is closer: the cosine similarity in `vector` mode, the BM25 score in `text`
    /// mode, the fused score in `hybrid` mode.
    pub score: f32,
    /// The document's text.
    pub text: String,
    /// The document's metadata.
    pub metadata: serde_json::Value,
    /// Which rankers returned the document: `"vector"`, `"text"` or both.
    #[serde(default)]
    pub found_by: Vec<String>,
    /// Its rank (1-based) in the vector ranking, if that ranking returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    /// Its rank (1-based) in the BM25 ranking, if that ranking returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_rank: Option<usize>,
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Documents written (new, or replacing a different version).
    pub written: usize,
    /// Documents whose id, text and metadata were already stored as given: nothing was written.
    pub unchanged: usize,
}

impl std::ops::AddAssign for IngestReport {
    fn add_assign(&mut self, o: Self) {
        self.written += o.written;
        self.unchanged += o.unchanged;
    }
}

/// Figures describing a database, as printed by `duetdb stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Live documents.
    pub documents: u64,
    /// Vector dimension.
    pub dimension: usize,
    /// Embedder fingerprint.
    pub embedder: String,
    /// Active generation.
    pub generation: u64,
    /// Rows of dead (deleted or replaced) documents still in the vector file.
    pub tombstones: u64,
    /// Rows in the active vector file.
    pub vector_rows: u64,
    /// Points in the HNSW graph.
    pub graph_points: u64,
    /// Rows covered by the newest graph snapshot.
    pub snapshot_rows: u64,
    /// Bytes of every file of the database.
    pub bytes_on_disk: u64,
    /// Documents in the full-text index (equal to `documents` once it has caught up).
    #[serde(default)]
    pub fulltext_documents: u64,
    /// The generation a reindex is filling (its `rows` are the durable progress).
    #[serde(default)]
    pub reindex: Option<crate::store::GenerationRecord>,
    /// Generations kept for rollback, newest first.
    #[serde(default)]
    pub kept_generations: Vec<crate::store::GenerationRecord>,
    /// Compactions done over the database's life.
    #[serde(default)]
    pub compactions: u64,
    /// The dead-row fraction at which this handle compacts after a write (`None`: off).
    #[serde(default)]
    pub auto_compact: Option<f64>,
}
