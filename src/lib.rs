//! # duetdb
//!
//! An embedded vector search engine with a built-in text embedder. Open a directory,
//! ingest documents, run semantic queries; no server.
//!
//! ```
//! use duetdb::{Db, Document};
//! # let dir = tempfile::tempdir().unwrap();
//! let db = Db::open(dir.path().join("notes.duet"))?; // built-in PromptEmbedder (scripts/fetch-models.sh)
//! db.ingest([Document::new("ripgrep", "ripgrep recursively searches directories for a regex pattern")])?;
//! for h in db.query("search files for a regex").limit(10).run()? {
//!     println!("{:.3} {} {}", h.score, h.id, h.text);
//! }
//! # Ok::<(), duetdb::Error>(())
//! ```
//!
//! Layers (each uses only those below it): [`db`] (the engine: commits, queries in vector,
//! text and hybrid modes, generations) over [`index`] (the HNSW graph, the BM25 index),
//! [`store`] (sled catalog and memory-mapped vector files) and [`embed`]
//! (embedders); [`error`] is shared by all, and [`eval`] holds the retrieval metrics.
//! The trainer (`train`) is compiled with the `train` feature. ARCHITECTURE.md in the
//! repository describes the layers, the files on disk and the commit protocol.

#![warn(missing_docs)]

pub mod db;
pub mod durable;
pub mod embed;
pub mod error;
pub mod eval;
pub mod index;
pub mod limits;
pub mod store;
#[cfg(feature = "train")]
pub mod train;

pub use db::{Db, DbOptions, Document, Filter, Fusion, Hit, IngestReport, Mode, Query, ReindexJob, Stats};
pub use embed::{Embedder, Kind};
pub use error::{Error, Result};
