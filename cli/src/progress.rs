//! Progress bars, one style for every command: elapsed time, position, rate and the time
//! left. indicatif draws only when stderr is a terminal, so scripts see clean output.

use indicatif::{ProgressBar, ProgressStyle};

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    // The templates are constants of this file; a bad one is a bug caught by any run.
    bar.with_style(ProgressStyle::with_template(template).expect("valid progress template"))
}

/// A bar over `total` items named `unit` (documents, rows, steps), with their rate.
pub(crate) fn counter(total: u64, unit: &str) -> ProgressBar {
    styled(ProgressBar::new(total), &format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left) {{msg}}"))
}

/// A bar over the bytes of an input file, with the documents committed as its message.
pub(crate) fn bytes(total: u64) -> ProgressBar {
    styled(ProgressBar::new(total), "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}")
}

/// A spinner for input of unknown length (standard input).
pub(crate) fn spinner() -> ProgressBar {
    styled(ProgressBar::new_spinner(), "{spinner} [{elapsed_precise}] {bytes} ({bytes_per_sec}) {msg}")
}
