//! A build step's command run with its output kept in a log file, whose tail a failure shows.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Runs `cmd`, keeping its output in `log`; on failure the error shows the log's tail.
pub(super) fn run_logged(cmd: xshell::Cmd<'_>, log: &Path) -> Result<()> {
    let shown = cmd.to_string();
    let output = cmd
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("starting `{shown}`"))?;
    let mut text = output.stdout.clone();
    text.extend_from_slice(&output.stderr);
    std::fs::write(log, &text).with_context(|| format!("writing {}", log.display()))?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
        bail!(
            "`{shown}` failed ({}); last lines of {}:\n{tail}",
            output.status,
            log.display()
        );
    }
    Ok(())
}
