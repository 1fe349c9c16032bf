//! `cargo xtask job`: the e2e scenarios' RocksDB job (keyed RocksDB state, a failure every
//! `--fail-every-ms`), compiled for a profiled image's Flink, for trying `deploy`, `collect`
//! and `analyze` on a cluster of your own before your production job goes onto the profiled
//! image (on Flink 2.x with a RocksDB ticker metric on, it reproduces FLINK-39923). The
//! publish workflow's kind job submits it to the session cluster it profiles.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::e2e::flink_job;
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The profiled image's OCI layout (what `cargo xtask image --output` wrote); the job is
    /// compiled against its flink-dist, for its Java.
    #[arg(long)]
    pub image: PathBuf,
    /// The directory the jar goes into (`rocksdb-restart-job.jar`, replaced if there).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: JobArgs) -> Result<()> {
    let jar = compile(&args.image, &args.out)?;
    progress::note(format!(
        "main class {} (the jar's Main-Class); arguments --fail-every-ms N (default 20000), \
         --keys N (100000), --value-bytes N (256), --records-per-second N (20000); on Flink \
         2.x --async-state true (the async State V2 API)",
        flink_job::MAIN_CLASS
    ));
    println!("{}", jar.display());
    Ok(())
}

/// Compiles the job against the flink-dist of `image` (a layout, or a tarball of one, or a
/// docker-archive) into `out/rocksdb-restart-job.jar`.
pub(crate) fn compile(image: &Path, out: &Path) -> Result<PathBuf> {
    crate::oci::check_image(image)?;
    // The work (the unpacked image) goes beside `out`, which is made only for the jar.
    let (work, _work_teardown) = crate::project::work_dir_beside(out, ".job-")?;
    let layout = crate::oci::open_image(image, work.path())?;
    let bundle = Bundle::unpack(&layout, &work.path().join("bundle"))?;
    let compiled = flink_job::compile_for(&bundle, work.path())?;
    progress::note(format!(
        "the job for Flink {}, compiled with --release {}",
        compiled.flink, compiled.release
    ));
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let jar = out.join("rocksdb-restart-job.jar");
    std::fs::rename(&compiled.jar, &jar)
        .with_context(|| format!("moving the jar to {}", jar.display()))?;
    Ok(jar)
}
