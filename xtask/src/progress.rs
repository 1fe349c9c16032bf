//! Progress for long work: bars and spinners on a terminal, plain lines elsewhere (CI logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// Returns a byte-count bar for a download of `len` bytes (a spinner when it is unknown),
/// hidden off-terminal.
pub(crate) fn bytes(len: Option<u64>, what: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{spinner} {msg} {bytes}").expect("static")),
    };
    bar.set_message(what.to_string());
    bar
}

/// A named step of long work: prints when it starts and how long it took when done.
pub struct Step {
    what: String,
    started: Instant,
    spinner: ProgressBar,
}

impl Step {
    pub fn start(what: impl Into<String>) -> Step {
        let what = what.into();
        let spinner = if interactive() {
            let s = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static"),
            );
            s.set_message(what.clone());
            s.enable_steady_tick(Duration::from_millis(120));
            s
        } else {
            eprintln!("==> {what}");
            ProgressBar::hidden()
        };
        Step {
            what,
            started: Instant::now(),
            spinner,
        }
    }

    pub fn done(self, detail: impl AsRef<str>) {
        let detail = detail.as_ref();
        let sep = if detail.is_empty() { "" } else { ": " };
        let secs = self.started.elapsed().as_secs_f64();
        if self.spinner.is_hidden() {
            eprintln!("    done ({secs:.1}s){sep}{detail}");
        } else {
            self.spinner.finish_and_clear();
            eprintln!("==> {} ({secs:.1}s){sep}{detail}", self.what);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
    }
}

/// Prints a plain informational line.
pub fn note(msg: impl AsRef<str>) {
    eprintln!("    {}", msg.as_ref());
}

/// Returns the command-line name of a value (`runc`, `cancel-resubmit`).
pub(crate) fn flag<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}
