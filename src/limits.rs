//! Every bound on a number a caller passes, in one place (the library checks them, so
//! Rust callers get them too; the CLI reports the same messages). A value out of range is
//! an [`Error::InvalidInput`] that names the value and the limit, never an allocation
//! that aborts the process or a thread count the machine cannot run.
//!
//! ```
//! let e = duetdb::limits::check("k (hits per query)", 0, 1, duetdb::limits::MAX_K).unwrap_err();
//! assert_eq!(e.to_string(), "invalid input: k (hits per query) is 0; it must be from 1 to 10000");
//! ```

use crate::error::{Error, Result};

/// Documents in one ingest batch (`Db::ingest_batch`, `duetdb ingest --batch`) or one
/// reindex batch: a batch is embedded and held in memory whole.
pub const MAX_BATCH: usize = 100_000;

/// Hits a query may ask for (`Query::limit`, `duetdb query -k`).
pub const MAX_K: usize = 10_000;

/// HNSW search beam (`Query::ef`, `--ef`); the graph allocates it per query.
pub const MAX_EF: usize = 100_000;

/// Candidates each ranking contributes in hybrid mode (`Query::candidates`).
pub const MAX_CANDIDATES: usize = 100_000;

/// Components of a vector (`hash:DIM`, any embedder): the vector file's rows and the
/// graph hold this many floats per document.
pub const MAX_DIM: usize = 65_536;

/// Threads a reindex may embed with: twice the cores this process may use. More only
/// adds contention (and a thread each costs a stack).
pub fn max_threads() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `value` if it lies in `min..=max`, otherwise an error that names `what` and the range.
pub fn check(what: &str, value: usize, min: usize, max: usize) -> Result<usize> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(format!("{what} is {value}; it must be from {min} to {max}")))
    }
}
