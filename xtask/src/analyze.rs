//! `cargo xtask analyze <dump dir> --image <layout>`: the image's own jeprof and binutils
//! over heap dumps, run inside the unpacked image (so symbols resolve against the very
//! binaries that ran): the top allocation sites of the last dump, the difference from the
//! first (or `--base`), and a call-graph SVG of that difference. The dump directory is what
//! `collect` or `e2e` writes: `*.heap` plus `root/<path>` for the libraries loaded at run
//! time (RocksDB's JNI library), which are put back where the dumps say they were.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::heap_profile;
use crate::progress::{self, Step};

#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// A dump directory: `*.heap` files and `root/` (what `collect` and `e2e` write).
    pub dumps: PathBuf,
    /// The profiled image the dumps came from, as an OCI layout (`cargo xtask image --output`).
    #[arg(long)]
    pub image: PathBuf,
    /// The dump to subtract [default: the first one].
    #[arg(long)]
    pub base: Option<String>,
    /// Output directory [default: <dumps>/analysis].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allocation sites to show.
    #[arg(long, default_value_t = 30)]
    pub top: usize,
}

/// Where the dumps are put inside the rootfs.
const INSIDE: &str = "/tmp/flink-jemalloc-dumps";

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub dumps: Vec<String>,
    pub base: String,
    pub last: String,
    /// `jeprof --text` of the last dump, allocation lines.
    pub top_last: Vec<String>,
    /// `jeprof --text --base`, allocation lines.
    pub top_diff: Vec<String>,
    /// A positive line of the difference names a `rocksdb::` frame.
    pub rocksdb_in_diff: bool,
    /// Files the last dump maps that the rootfs lacks (their frames stay unnamed).
    pub missing_files: Vec<String>,
}

/// The allocation lines of a `jeprof --text` report (after `Total:`), at most `n`.
pub fn top_lines(report: &str, n: usize) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("Total:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| l.trim().to_string())
        .collect()
}

/// Whether a line with growth (not a negative one) names a RocksDB frame.
pub fn names_rocksdb(lines: &[String]) -> bool {
    lines
        .iter()
        .filter(|l| !l.starts_with('-'))
        .any(|l| l.contains("rocksdb::"))
}

pub fn run(args: AnalyzeArgs) -> Result<()> {
    if !crate::rootless::is_root() {
        // jeprof runs chrooted in the image: in a user namespace unless root.
        crate::rootless::require_userns()?;
    }
    heap_profile::check_dumps(&args.dumps)?;
    let work = tempfile::Builder::new()
        .prefix(".flink-jemalloc-analyze-")
        .tempdir()?;
    let work_dir = work.path().to_path_buf();
    let _teardown = crate::teardown::on_interrupt(work_dir.display().to_string(), move || {
        let _ = std::fs::remove_dir_all(&work_dir);
    });
    let layout = crate::oci::open_image(&args.image, work.path())?;
    let bundle = Bundle::unpack(&layout, &work.path().join("bundle"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dumps.join("analysis"));
    let a = analyze_in_rootfs(
        &bundle.rootfs(),
        &bundle.java(),
        &args.dumps,
        args.base.as_deref(),
        &out,
        args.top,
    )?;
    println!("{}", serde_json::to_string_pretty(&a)?);
    Ok(())
}

/// The files the last dump maps that neither the image nor the dump directory's `root/`
/// has, each named in a warning: their frames stay unnamed.
fn missing_files(rootfs: &Path, dir: &Path, last: &str) -> Result<Vec<String>> {
    let mapped = heap_profile::mapped_libraries(&String::from_utf8_lossy(
        &std::fs::read(dir.join(last)).with_context(|| format!("reading {last}"))?,
    ));
    let missing: Vec<String> = mapped
        .into_iter()
        .filter(|p| !p.starts_with("/dev/") && !p.starts_with("/memfd:"))
        .filter(|p| !rootfs.join(p.trim_start_matches('/')).exists())
        .collect();
    for m in &missing {
        progress::note(format!(
            "warning: {m} is mapped by the dumps but not in the image or {}/{}; its frames stay unnamed",
            dir.display(),
            heap_profile::ROOT
        ));
    }
    Ok(missing)
}

/// Stages `dir` into `rootfs` and runs the rootfs's jeprof (chrooted) over the dumps;
/// writes `top.txt`, `diff.txt`, `diff.svg` and `analysis.json` to `out`.
pub fn analyze_in_rootfs(
    rootfs: &Path,
    java: &str,
    dir: &Path,
    base: Option<&str>,
    out: &Path,
    top: usize,
) -> Result<Analysis> {
    let dumps = heap_profile::stage_into_rootfs(dir, rootfs, INSIDE)?;
    if dumps.len() < 2 {
        bail!(
            "{} holds {} heap dump(s); at least two are needed for a difference \
             (lower lg_prof_interval in MALLOC_CONF or run longer)",
            dir.display(),
            dumps.len()
        );
    }
    let base = match base {
        Some(b) => {
            let name = Path::new(b)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !dumps.contains(&name) {
                bail!("--base {b} is not one of the dumps in {}", dir.display());
            }
            name
        }
        None => dumps[0].clone(),
    };
    let last = dumps[dumps.len() - 1].clone();
    let missing_files = missing_files(rootfs, dir, &last)?;
    let jeprof_in = |args: Vec<String>| -> Result<String> {
        let mut argv = vec![
            "env",
            "-i",
            "PATH=/opt/jemalloc/bin:/usr/local/bin:/usr/bin:/bin",
        ];
        argv.push("jeprof");
        argv.extend(args.iter().map(String::as_str));
        crate::rootless::run_in(
            rootfs,
            &argv,
            "running the image's jeprof (is it a profiled image?)",
        )
    };
    let (base_in, last_in) = (format!("{INSIDE}/{base}"), format!("{INSIDE}/{last}"));
    let step = Step::start(format!("jeprof over {base} .. {last}"));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let text_last = jeprof_in(s(&["--text", "--show_bytes", java, &last_in]))?;
    let base_flag = format!("--base={base_in}");
    let text_diff = jeprof_in(s(&["--text", "--show_bytes", &base_flag, java, &last_in]))?;
    let svg = jeprof_in(s(&["--svg", "--show_bytes", &base_flag, java, &last_in]))?;
    step.done("");
    std::fs::create_dir_all(out)?;
    let top_diff = top_lines(&text_diff, top);
    let a = Analysis {
        rocksdb_in_diff: names_rocksdb(&top_diff),
        top_last: top_lines(&text_last, top),
        top_diff,
        dumps,
        base,
        last,
        missing_files,
    };
    let write = |name: &str, body: &str| -> Result<PathBuf> {
        let p = out.join(name);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    write("top.txt", &text_last)?;
    write("diff.txt", &text_diff)?;
    write("diff.svg", &svg)?;
    write("analysis.json", &(serde_json::to_string_pretty(&a)? + "\n"))?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_lines_follow_total() {
        let r = "Using local file x\nTotal: 100 B\n  50  50.0%  50.0%  50 50.0% rocksdb::Arena::AllocateNewBlock\n  -5  -5.0% 45.0% -5 -5.0% os::malloc\n";
        assert_eq!(top_lines(r, 10).len(), 2);
        assert!(top_lines(r, 10)[0].ends_with("rocksdb::Arena::AllocateNewBlock"));
        assert!(names_rocksdb(&top_lines(r, 10)));
        let shrinking = vec!["-50 -50.0% 0% -50 -50% rocksdb::Arena::AllocateNewBlock".into()];
        assert!(!names_rocksdb(&shrinking));
    }
}
