//! The one error type of the crate.
//!
//! Every variant says what was expected and what was found, and names the file,
//! document or line involved, so that a CLI user can act on the message alone.

use std::path::PathBuf;

/// Result alias used throughout duetdb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of a dependency (candle, tokenizers, tantivy, hnsw_rs) kept as the source of
/// ours, so that callers can walk the chain with [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `": {source}"` when there is a source: our message, then the dependency's.
fn cause(source: &Option<BoxError>) -> String {
    source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

/// Everything that can go wrong in duetdb.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a named path.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// No database exists at the path (and creating one was not asked for).
    #[error("no duetdb database at {path}")]
    NotFound {
        /// The path that was opened.
        path: PathBuf,
    },

    /// Another process (or another `Db` in this process) holds the database.
    #[error("database {path} is locked: another process has it open (only one process may open a database at a time)")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },

    /// The path exists but is not a duetdb database.
    #[error("{path} is not a duetdb database: {detail}")]
    Foreign {
        /// The path that was opened.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },

    /// A file of the database (or of a checkpoint) is damaged.
    #[error("file {path} is corrupt: {detail}{}", cause(.source))]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What was expected and what was found.
        detail: String,
        /// The parser's error (serde_json, safetensors, tantivy), if one found the damage.
        #[source]
        source: Option<BoxError>,
    },

    /// The database was written by a newer or older, incompatible format.
    #[error("{path} has format version {found}, this build reads version {expected}")]
    FormatVersion {
        /// The file or directory.
        path: PathBuf,
        /// The version this build understands.
        expected: u32,
        /// The version found on disk.
        found: u32,
    },

    /// The embedder asked for differs from the one the database was built with.
    #[error("database was built with embedder `{stored}` but `{requested}` was requested; vectors of different embedders cannot be mixed: open it without choosing an embedder, or re-embed it into a new generation with reindex")]
    EmbedderMismatch {
        /// Fingerprint recorded in the catalog.
        stored: String,
        /// Fingerprint of the embedder that was passed.
        requested: String,
    },

    /// A vector had the wrong number of components.
    #[error("dimension mismatch: expected {expected} components, found {found}")]
    Dimension {
        /// The dimension the database or embedder uses.
        expected: usize,
        /// The dimension that was supplied.
        found: usize,
    },

    /// A document or query was rejected before anything was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An embedder name or checkpoint that cannot be resolved.
    #[error("unknown embedder `{spec}`: {detail}")]
    UnknownEmbedder {
        /// What was asked for.
        spec: String,
        /// Why it could not be used.
        detail: String,
    },

    /// The embedder failed while computing vectors.
    #[error("embedder error: {detail}")]
    Embed {
        /// What the embedder returned and what was expected.
        detail: String,
    },

    /// A model file could not be loaded or run.
    #[error("model error: {detail}{}", cause(.source))]
    Model {
        /// What failed, naming the file or tensor involved.
        detail: String,
        /// The dependency's error (candle, tokenizers), if one caused it.
        #[source]
        source: Option<BoxError>,
    },

    /// The sled catalog reported an error.
    #[error("catalog error in {path}: {source}")]
    Catalog {
        /// The catalog directory.
        path: PathBuf,
        /// The underlying sled error.
        #[source]
        source: sled::Error,
    },

    /// A derived index (the ANN graph or the full-text index) could not be built,
    /// written, loaded or searched.
    #[error("index error: {detail}{}", cause(.source))]
    Index {
        /// What failed, naming the file involved.
        detail: String,
        /// The dependency's error (hnsw_rs, tantivy), if one caused it.
        #[source]
        source: Option<BoxError>,
    },

    /// An operation failed; `context` says which (a line of an input file, a command).
    #[error("{context}: {source}")]
    Context {
        /// Where it happened.
        context: String,
        /// What went wrong there.
        #[source]
        source: Box<Error>,
    },

    /// The database was closed and can no longer be used.
    #[error("database is closed")]
    Closed,
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A corruption error for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), detail: detail.into(), source: None }
    }

    /// A corruption error for `path` found by a parser, whose error is kept as the source.
    pub fn corrupt_from(path: impl Into<PathBuf>, detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Corrupt { path: path.into(), detail: detail.into(), source: Some(source.into()) }
    }

    /// An invalid-input error.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Error::InvalidInput(detail.into())
    }

    /// A model error of our own (no dependency's error behind it).
    pub fn model(detail: impl Into<String>) -> Self {
        Error::Model { detail: detail.into(), source: None }
    }

    /// A model error caused by a dependency's error, which is kept as the source.
    pub fn model_from(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Model { detail: detail.into(), source: Some(source.into()) }
    }

    /// An embedder that returned something unusable.
    pub fn embed(detail: impl Into<String>) -> Self {
        Error::Embed { detail: detail.into() }
    }

    /// An index error of our own.
    pub fn index(detail: impl Into<String>) -> Self {
        Error::Index { detail: detail.into(), source: None }
    }

    /// An index error caused by a dependency's error, which is kept as the source.
    pub fn index_from(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Index { detail: detail.into(), source: Some(source.into()) }
    }

    /// This error, with where it happened in front (`line 7: ...`).
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context { context: context.into(), source: Box::new(self) }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::model_from("tensor operation failed", e)
    }
}
