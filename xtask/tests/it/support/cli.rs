//! The real `xtask` binary run as a user runs it, and its output read.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the real `xtask` binary with plain (CI-style) progress output.
pub fn xtask(args: &[&str]) -> Output {
    xtask_with_env(args, &[])
}

/// [`xtask`] with `env` set as well.
pub fn xtask_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("CI", "1")
        .envs(env.iter().copied())
        .output()
        .expect("running the xtask binary");
    eprintln!(
        "$ xtask {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PATH with every command of this one but `hidden`, as symlinks in `dir`: what a machine
/// without those commands has.
pub fn path_without(hidden: &[&str], dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name();
            let link = dir.join(&name);
            if !hidden.iter().any(|h| name == **h) && !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    dir.as_os_str().to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `script` with `sh -c`; returns whether it succeeded, its stdout and its stderr.
pub fn sh(script: &str) -> (bool, String, String) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
