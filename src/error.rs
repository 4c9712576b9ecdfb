//! The one error type of the crate.
//!
//! Every variant says what was expected and what was found, and names the file,
//! document or line involved, so that a CLI user can act on the message alone.

use std::path::PathBuf;

/// Result alias used throughout duetdb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    /// A file of the database is damaged.
    #[error("database file {path} is corrupt: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What was expected and what was found.
        detail: String,
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
    #[error("embedder error: {0}")]
    Embed(String),

    /// A model file could not be loaded or run.
    #[error("model error: {0}")]
    Model(String),

    /// The sled catalog reported an error.
    #[error("catalog error in {path}: {source}")]
    Catalog {
        /// The catalog directory.
        path: PathBuf,
        /// The underlying sled error.
        #[source]
        source: sled::Error,
    },

    /// The ANN graph could not be built, dumped or loaded.
    #[error("graph error: {0}")]
    Graph(String),

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
        Error::Corrupt { path: path.into(), detail: detail.into() }
    }

    /// An invalid-input error.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Error::InvalidInput(detail.into())
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Model(e.to_string())
    }
}
