//! `cargo xtask bench --profiling-cost`: what profiling costs a TaskManager with RocksDB,
//! per allocator configuration (`bench/cost.rs`, its configurations and records in
//! `bench/cost_model.rs`, its report in `bench/cost_report.rs`, its arithmetic in
//! `bench/stats.rs`); `--recut` re-cuts a recorded report. The README's speed and size
//! figures are measured on the test fixtures by `cargo harness bench` (the `harness`
//! crate), which users do not build.

pub(crate) mod cost;
pub(crate) mod cost_model;
pub(crate) mod cost_report;
pub(crate) mod stats;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Measure what profiling costs: the RocksDB job's throughput, CPU per record, RSS and
    /// dumps per allocator configuration, on a Docker engine (see README "What profiling
    /// costs").
    #[arg(long, requires = "image")]
    pub profiling_cost: bool,
    /// The profiled image (OCI layout or tarball) for --profiling-cost.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// The configurations to measure.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = cost_model::Config::ALL)]
    pub configs: Vec<cost_model::Config>,
    /// Rounds: every configuration runs once per round, each round in a rotated order.
    #[arg(long, default_value_t = 2)]
    pub repeats: u32,
    /// Seconds of each run before the measurement (JIT; RocksDB filling its levels and the
    /// block cache, which took about two minutes on the recorded runs).
    #[arg(long, default_value_t = 150)]
    pub warm_up: u64,
    /// Seconds per window.
    #[arg(long, default_value_t = 30)]
    pub window: u64,
    /// Windows per run.
    #[arg(long, default_value_t = 4)]
    pub windows: u32,
    /// Seconds between samples.
    #[arg(long, default_value_t = 3)]
    pub sample_every: u64,
    /// Keys of the job's state (256-byte values): 2,000,000 hold ~500 MiB, more than the
    /// block cache, so that it turns over.
    #[arg(long, default_value_t = 2_000_000)]
    pub keys: u64,
    /// The TaskManager container's memory limit, MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_limit_mb: u64,
    /// The JobManager's REST port on this machine.
    #[arg(long, default_value_t = 18097)]
    pub rest_port: u16,
    /// Where the report goes (replaced when the measurement is done).
    #[arg(long, default_value = "bench/profiling-cost")]
    pub report: PathBuf,
    /// Re-cut a recorded --profiling-cost report (its directory) to start --skip-seconds
    /// into its measurement, when its first window was still warming up; rewrites it.
    #[arg(
        long,
        value_name = "DIR",
        requires = "skip_seconds",
        conflicts_with = "profiling_cost"
    )]
    pub recut: Option<PathBuf>,
    /// Seconds of each run's measurement to count as warm-up, for --recut.
    #[arg(long)]
    pub skip_seconds: Option<u64>,
}

impl BenchArgs {
    fn cost_request(&self) -> Option<cost::CostRequest> {
        let secs = std::time::Duration::from_secs;
        Some(cost::CostRequest {
            image: self.image.clone()?,
            configs: self.configs.clone(),
            repeats: self.repeats,
            warm_up: secs(self.warm_up),
            window: secs(self.window),
            windows: self.windows,
            sample_every: secs(self.sample_every),
            keys: self.keys,
            memory_limit_mb: self.memory_limit_mb,
            rest_port: self.rest_port,
            report: self.report.clone(),
        })
    }
}

/// `--recut DIR`, or `--profiling-cost --image …`: prints the table and writes the report.
pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(dir) = &args.recut {
        let skip = std::time::Duration::from_secs(args.skip_seconds.unwrap_or(0));
        let report = cost::recut(dir, skip)?;
        print!("{}", cost_report::table(&report.rows));
        return Ok(());
    }
    if !args.profiling_cost {
        bail!(
            "`cargo xtask bench` measures --profiling-cost (with --image) or re-cuts a report \
             (--recut DIR); the README's speed and size figures are `cargo harness bench`"
        );
    }
    let req = args
        .cost_request()
        .context("--profiling-cost needs --image")?;
    let report = cost::profiling_cost(&req)?;
    print!("{}", cost_report::table(&report.rows));
    crate::progress::note(format!("report: {}", req.report.display()));
    Ok(())
}
