//! Progress bars, one style for every command: elapsed time, position, rate and the time
//! left. On a terminal indicatif draws them in place. When stderr is not a terminal (a
//! run in the background, its stderr in a log file) the same figures come as a plain line
//! at most every 30 seconds (`DUETDB_PROGRESS_EVERY`, in seconds; 0: none), without
//! colour or cursor codes, so a log shows how far a long job is.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The seconds between two progress lines in a log (stderr not a terminal).
const LOG_EVERY_S: f64 = 30.0;

/// A draw target for stderr that is not a terminal: indicatif writes each redraw here,
/// and the text of one redraw in `LOG_EVERY_S` becomes a line. The first comes after one
/// interval, so a short command's stderr stays as it was (its one-line errors included).
#[derive(Debug)]
struct LogLines {
    every: Duration,
    /// When the last line went out (or the bar started), and the redraw being written.
    state: Mutex<(Instant, String)>,
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        160
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1.push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1.clear();
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = st.0.elapsed() >= self.every;
        let line = std::mem::take(&mut st.1);
        if due && !line.trim().is_empty() {
            st.0 = Instant::now();
            writeln!(std::io::stderr().lock(), "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// How often a log gets a progress line, when stderr is not a terminal (`None`: never).
fn log_every() -> Option<Duration> {
    if std::io::stderr().is_terminal() {
        return None;
    }
    let s = std::env::var("DUETDB_PROGRESS_EVERY").ok().and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(LOG_EVERY_S);
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s.min(86_400.0)))
}

/// `bar` styled by `template` on a terminal, or by `plain` (no bar, no spinner) as lines
/// in a log.
fn styled(bar: ProgressBar, template: &str, plain: &str) -> ProgressBar {
    // The templates are constants of this file; a bad one is a bug caught by any run.
    let style = |t: &str| ProgressStyle::with_template(t).expect("valid progress template");
    match log_every() {
        Some(every) => {
            bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(LogLines { every, state: Mutex::new((Instant::now(), String::new())) }), 1));
            bar.with_style(style(plain))
        }
        None => bar.with_style(style(template)),
    }
}

/// A bar over `total` items named `unit` (documents, rows, steps), with their rate.
pub(crate) fn counter(total: u64, unit: &str) -> ProgressBar {
    let figures = format!("{{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left) {{msg}}");
    styled(ProgressBar::new(total), &format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {figures}"), &format!("[{{elapsed_precise}}] {figures}"))
}

/// A bar over the bytes of an input file, with the documents committed as its message.
pub(crate) fn bytes(total: u64) -> ProgressBar {
    let figures = "{bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}";
    styled(ProgressBar::new(total), &format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {figures}"), &format!("[{{elapsed_precise}}] {figures}"))
}

/// A spinner for input of unknown length (standard input).
pub(crate) fn spinner() -> ProgressBar {
    styled(ProgressBar::new_spinner(), "{spinner} [{elapsed_precise}] {bytes} ({bytes_per_sec}) {msg}", "[{elapsed_precise}] {bytes} ({bytes_per_sec}) {msg}")
}
