//! The CPU thread count of candle's kernels, fixed once per process.
//!
//! candle 0.11 asks for its thread count on every matrix product; when
//! `RAYON_NUM_THREADS` is unset the answer comes from `num_cpus::get_physical`, which
//! reads and parses `/proc/cpuinfo` each time. For a query (one short forward, ~200
//! products) that was a quarter of the time on a 2-core machine: p50 52 ms unset,
//! 41 ms with the variable set (`benches/query_profile.rs`).

use std::sync::Once;

static PIN: Once = Once::new();

/// Sets `RAYON_NUM_THREADS` to candle's own default (physical cores) when the user has
/// not set it, so candle stops recounting cores; the thread count it uses is the same.
///
/// Called when a model is loaded, before any model work starts. The variable is only
/// written when absent, and only once per process. Writing the environment races with
/// C code reading it on another thread (`getenv`); Rust's own `std::env` accesses are
/// locked, and this runs before the model spawns any thread of its own.
///
/// It also sets `CANDLE_NUM_THREADS` to 1 when absent: candle 0.11 runs its elementwise
/// operations on large tensors in a pool of its own, beside rayon's, whose workers spin
/// while they wait. Where duetdb runs batches side by side on rayon's threads (`minilm`),
/// that pool's spinning worker took a core's share from them: `minilm` embedded 5-12%
/// more documents/s without it (docs/benchmarks.md), and the decoders' documents/s did
/// not change either way (their time is in matrix products, which use rayon's pool).
pub(crate) fn pin_cpu_threads() {
    PIN.call_once(|| {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let n = candle_core::utils::get_num_threads();
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            tracing::debug!(threads = n, "pinned candle's CPU thread count");
        }
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
    });
}

/// Runs `f` on one of rayon's threads (where it is already on one, here).
///
/// A forward hands each matrix product to rayon's threads. From a thread outside the
/// pool, every hand-off wakes a worker and then wakes the caller when the product is
/// done, and the caller's core sits idle meanwhile; from a worker, the caller takes a
/// share of the product itself and at most one other thread is woken. A query makes
/// about 126 products, so the hand-offs add up: one query's embedding took 15-18 ms so
/// against 19-24 ms from outside (docs/benchmarks.md). `DUETDB_ON_POOL=0` keeps the
/// caller's thread, for measuring one against the other in the same run.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // The variable is read once a process, like `DUETDB_AMX`: this runs for every query.
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if rayon::current_thread_index().is_some() || *OFF.get_or_init(|| std::env::var_os("DUETDB_ON_POOL").is_some_and(|v| v == "0")) {
        return f();
    }
    rayon::scope(|_| f())
}
