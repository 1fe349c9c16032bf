//! What the report holds: the samples of one allocator's run, its growth per restart with
//! robust errors, the run, and the report of every run with its verdict.

use serde::Serialize;

use crate::analyze::Analysis;
use crate::e2e::cluster::Allocator;
use crate::e2e::driver::Driver;
use crate::e2e::scenario::Plan;
use crate::fit::{fit, Fit};
use crate::provenance::Provenance;

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Sample {
    pub restart: u64,
    /// When the restart was seen, seconds since the epoch (dumps are placed by it).
    pub seen_at: f64,
    pub seconds: f64,
    pub rss_kb: u64,
    pub cgroup_kb: Option<u64>,
    pub heap_committed_kb: Option<u64>,
    pub nonheap_committed_kb: Option<u64>,
    pub direct_used_kb: Option<u64>,
    /// RSS minus committed heap and non-heap: malloc'ed memory, thread stacks, direct buffers.
    pub native_kb: Option<i64>,
}

/// Growth per restart, kB, least squares over the samples, with robust errors.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Growth {
    pub rss_kb_per_restart: Option<Fit>,
    pub native_kb_per_restart: Option<Fit>,
    pub cgroup_kb_per_restart: Option<Fit>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunRecord {
    pub allocator: Allocator,
    /// The CPUs the TaskManager saw (RocksDB's core slots follow them).
    pub taskmanager_cpus: Option<u32>,
    /// The profiling run of a scenario with a leak site: the bytes per restart expected on
    /// this TaskManager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bytes_per_restart: Option<f64>,
    pub restarts: u64,
    /// `(restart, seconds since the epoch)`: when each happened (dumps are placed by it).
    pub restart_times: Vec<(u64, f64)>,
    pub oom_kills: u64,
    pub samples: Vec<Sample>,
    pub growth: Growth,
    /// The profiling jemalloc only: the dumps analysed with the image's jeprof.
    pub analysis: Option<Analysis>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub image: String,
    pub driver: Driver,
    /// The commit and the machine that made this report.
    pub made_by: Provenance,
    /// What the ± and the intervals of every growth figure are.
    pub errors: &'static str,
    /// The scenario as run: its name, Flink, mode, restarts, configuration, expectation.
    pub plan: Plan,
    pub memory_limit_mb: u64,
    pub runs: Vec<RunRecord>,
    pub verdict: Vec<String>,
    pub passed: bool,
    pub seconds_to_verdict: f64,
}

/// Fits the growth per restart of RSS, native memory and the cgroup's usage over the
/// samples (least squares with robust errors).
pub(crate) fn growth(samples: &[Sample]) -> Growth {
    let of = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.restart as f64, f(s)?)))
            .collect();
        fit(&pts)
    };
    Growth {
        rss_kb_per_restart: of(&|s| Some(s.rss_kb as f64)),
        native_kb_per_restart: of(&|s| s.native_kb.map(|v| v as f64)),
        cgroup_kb_per_restart: of(&|s| s.cgroup_kb.map(|v| v as f64)),
    }
}

/// Formats KiB as whole MiB, or `missing`.
pub(crate) fn whole_mib(kb: Option<i64>, missing: &str) -> String {
    kb.map(|v| (v / 1024).to_string())
        .unwrap_or_else(|| missing.to_string())
}
