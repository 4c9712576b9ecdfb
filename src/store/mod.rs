//! Durable state: the sled catalog (database of record) and memory-mapped vector files.
//!
//! A database is a directory:
//!
//! ```text
//! DB/
//!   DUETDB                    marker and format version (written last at creation)
//!   LOCK                      advisory lock: one process at a time
//!   COMMIT                    the commit record: what the catalog last committed (record.rs)
//!   catalog/                  sled: manifest, documents, id map, tombstones
//!   vectors/g000001.vec       append-only vector file of generation 1 (one per generation)
//!   graph/                    hnsw_rs snapshots, derived and rebuildable
//!   fulltext/                 tantivy BM25 index, derived and rebuildable
//!   compact/, COMPACT         only during a compaction: its staging directory and intent (compaction.rs)
//! ```
//!
//! This layer knows vectors of a fixed dimension and a fingerprint string; it knows
//! nothing of models.

mod catalog;
pub mod compaction;
mod layout;
mod record;
mod vectors;

pub use catalog::{id_entry_digest, Catalog, CatalogBatch, DocRecord, GenerationRecord, GraphSnapshot, Manifest, FORMAT_VERSION};
pub use layout::{DirLock, Layout};
pub use record::{CommitState, RecordFile, RecordRead};
pub use vectors::{check_header, check_length, check_rows_crc, row_len, VectorFile, VectorView, VECTOR_HEADER_BYTES};
