//! The arithmetic of the decoders' many-row products (a batch of documents): f32, or
//! bfloat16 with f32 sums where the CPU has AVX-512 BF16 (`decoder/bf16.rs`), or 8-bit
//! activations times the file's weight codes where it has AVX2 (`decoder/int8.rs`).
//!
//! One setting per process, like the thread count: [`set_precision`], or the
//! `DUETDB_PRECISION` environment variable (`f32`, `bf16`, `int8`, `auto`) read on first use.
//! Queries (a few rows) take bfloat16 only on AMX tiles (`decoder/bf16.rs`, `for_queries`),
//! the f32 kernels elsewhere. A database records its embedder, not
//! the precision: vectors of the two differ by about 1e-3 (docs/benchmarks.md), less than
//! it takes to change a ranking in the dev split's measurements.

use std::sync::atomic::{AtomicU8, Ordering};

/// How the decoders multiply a batch of documents by their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere.
    F32,
    /// Weights and activations rounded to bfloat16, products summed in f32; where the
    /// CPU lacks AVX-512 BF16, f32 (with a warning).
    Bf16,
    /// bfloat16 where it is the faster: on AMX tiles, or with AVX-512 BF16 on CPUs other
    /// than Intel's (whose cores multiply-add bfloat16 pairs no faster than f32 without
    /// the tiles); f32 elsewhere.
    Auto,
    /// Activations rounded to 8 bits per block of inputs, times the GGUF file's own
    /// weight codes in integers (`decoder/int8.rs`), on CPUs with AVX2; f32 elsewhere
    /// and for weights that are not of the file's block form.
    Int8,
}

/// The precision when neither [`set_precision`] nor `DUETDB_PRECISION` says otherwise:
/// bfloat16 where the CPU runs it faster than f32 ([`Precision::Auto`]). On the Debian
/// dev split the default embedder's MRR@10 was 0.7578 with it and 0.7562 in f32, at
/// 1.55x the documents/s (docs/benchmarks.md).
pub const DEFAULT_PRECISION: Precision = Precision::Auto;

impl std::str::FromStr for Precision {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            "int8" => Ok(Precision::Int8),
            _ => Err(crate::Error::invalid(format!("precision `{s}`: expected f32, bf16, int8 or auto"))),
        }
    }
}

const UNSET: u8 = 0;
static CHOSEN: AtomicU8 = AtomicU8::new(UNSET);

fn code(p: Precision) -> u8 {
    match p {
        Precision::F32 => 1,
        Precision::Bf16 => 2,
        Precision::Auto => 3,
        Precision::Int8 => 4,
    }
}

/// Sets the precision of this process's decoders from now on.
///
/// ```
/// use duetdb::embed::{precision, set_precision, Precision};
/// set_precision(Precision::F32);
/// assert_eq!(precision(), Precision::F32);
/// ```
pub fn set_precision(p: Precision) {
    CHOSEN.store(code(p), Ordering::Relaxed);
}

/// The precision in force: set, or from `DUETDB_PRECISION`, or [`DEFAULT_PRECISION`].
/// An unreadable `DUETDB_PRECISION` is logged and ignored.
pub fn precision() -> Precision {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Precision::F32,
        2 => Precision::Bf16,
        3 => Precision::Auto,
        4 => Precision::Int8,
        _ => {
            let p = match std::env::var("DUETDB_PRECISION") {
                Ok(v) => v.parse().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "ignoring DUETDB_PRECISION");
                    DEFAULT_PRECISION
                }),
                Err(_) => DEFAULT_PRECISION,
            };
            // A concurrent set_precision wins over the environment.
            let _ = CHOSEN.compare_exchange(UNSET, code(p), Ordering::Relaxed, Ordering::Relaxed);
            precision()
        }
    }
}
