//! What the report holds: the samples of one allocator's run, its growth per restart (per
//! hour in `steady` mode) with robust errors, the run, and the report of every run with its
//! verdict.

use serde::ser::SerializeMap;
use serde::Serialize;

use crate::analyze::sites::Per;
use crate::analyze::Analysis;
use crate::e2e::cluster::Allocator;
use crate::e2e::driver::Driver;
use crate::e2e::scenario::Plan;
use crate::fit::{fit, Fit};
use crate::provenance::Provenance;

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Sample {
    /// The job's restarts so far.
    pub restart: u64,
    /// When the sample was taken, seconds since the epoch (dumps are placed by it).
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

/// Growth per restart (per hour in `steady` mode), kB, least squares over the samples, with
/// robust errors; written as `rss_kb_per_restart` (`rss_kb_per_hour`) and so on.
#[derive(Debug, Clone)]
pub(crate) struct Growth {
    pub per: Per,
    pub rss_kb: Option<Fit>,
    pub native_kb: Option<Fit>,
    pub cgroup_kb: Option<Fit>,
}

impl Serialize for Growth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        let per = self.per.word();
        m.serialize_entry(&format!("rss_kb_per_{per}"), &self.rss_kb)?;
        m.serialize_entry(&format!("native_kb_per_{per}"), &self.native_kb)?;
        m.serialize_entry(&format!("cgroup_kb_per_{per}"), &self.cgroup_kb)?;
        m.end()
    }
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
    /// The same in `steady` mode, per hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bytes_per_hour: Option<f64>,
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

impl RunRecord {
    /// Returns the bytes per restart, or per hour, the scenario expects of this run.
    pub(crate) fn expected_bytes(&self) -> Option<f64> {
        self.expected_bytes_per_restart
            .or(self.expected_bytes_per_hour)
    }
}

/// Returns a sample's place on the growth's axis: its restart, or the hours since the
/// first sample.
pub(crate) fn x_of(s: &Sample, first: &Sample, per: Per) -> f64 {
    match per {
        Per::Hour => (s.seen_at - first.seen_at) / 3600.0,
        _ => s.restart as f64,
    }
}

/// Fits the growth per restart (per hour in `steady` mode, over the samples after the
/// warm-up, as the sites' growth is) of RSS, native memory and the cgroup's usage over the
/// samples (least squares with robust errors).
pub(crate) fn growth(samples: &[Sample], per: Per) -> Growth {
    // A steady run's growth is one JVM's: the samples since the job's last restart (a
    // TaskManager that died and was replaced restarts it).
    let samples = match (per, samples.last()) {
        (Per::Hour, Some(last)) => {
            &samples[samples.partition_point(|s| s.restart < last.restart)..]
        }
        _ => samples,
    };
    let samples = match (per, samples.first(), samples.last()) {
        (Per::Hour, Some(a), Some(b)) => {
            let from = a.seen_at + crate::analyze::warm_up(b.seen_at - a.seen_at);
            let start = samples.partition_point(|s| s.seen_at < from);
            &samples[start..]
        }
        _ => samples,
    };
    let of = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let first = samples.first()?;
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((x_of(s, first, per), f(s)?)))
            .collect();
        fit(&pts)
    };
    Growth {
        per,
        rss_kb: of(&|s| Some(s.rss_kb as f64)),
        native_kb: of(&|s| s.native_kb.map(|v| v as f64)),
        cgroup_kb: of(&|s| s.cgroup_kb.map(|v| v as f64)),
    }
}

/// Formats KiB as whole MiB, or `missing`.
pub(crate) fn whole_mib(kb: Option<i64>, missing: &str) -> String {
    kb.map(|v| (v / 1024).to_string())
        .unwrap_or_else(|| missing.to_string())
}
