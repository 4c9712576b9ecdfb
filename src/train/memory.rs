//! Memory figures of this process, for the log and the summary (Linux `/proc`; 0 elsewhere).

/// A memory figure of this process from /proc/self/status, MiB; 0 where /proc is missing.
pub(super) fn proc_status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}
