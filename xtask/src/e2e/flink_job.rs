//! The e2e scenario's Flink job (`e2e/job/src`): keyed RocksDB state and injected failures.
//! It is compiled with the host JDK (`javac --release 8`) against the `flink-dist` jar taken
//! from the image under test, so API and runtime always match.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::project;

pub const MAIN_CLASS: &str = "flinkjemalloc.RocksDbRestartJob";

/// The job's Java sources, in a stable order.
pub fn sources() -> Result<Vec<PathBuf>> {
    let dir = project::root().join("e2e/job/src/flinkjemalloc");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "java"))
        .collect();
    out.sort();
    Ok(out)
}

/// Compiles the job against `flink_dist` into `<out_dir>/rocksdb-restart-job.jar`.
pub fn compile(flink_dist: &Path, out_dir: &Path) -> Result<PathBuf> {
    let sh = Shell::new()?;
    let classes = out_dir.join("classes");
    if classes.exists() {
        std::fs::remove_dir_all(&classes)?;
    }
    std::fs::create_dir_all(&classes)?;
    let srcs = sources()?;
    cmd!(sh, "javac --release 8 -nowarn -encoding UTF-8 -cp {flink_dist} -d {classes} {srcs...}")
        .quiet()
        .run()
        .with_context(|| {
            format!(
                "compiling the e2e job against {} (a JDK >= 9 is needed: apt-get install default-jdk-headless)",
                flink_dist.display()
            )
        })?;
    let jar = out_dir.join("rocksdb-restart-job.jar");
    let _d = sh.push_dir(&classes);
    cmd!(
        sh,
        "jar --create --file {jar} --date 1980-01-01T00:00:02Z ."
    )
    .quiet()
    .run()
    .context("packing the e2e job with `jar`")?;
    Ok(jar)
}
