//! What the e2e scenario needs from a running Flink cluster, whatever runs it: the REST API,
//! the TaskManager's memory, a way to kill the TaskManager (and get a new one), and the heap
//! dumps with the libraries they map. `runc_cluster` (this machine, no Kubernetes) and
//! `kind_cluster` (a kind cluster) implement it.

use anyhow::Result;
use serde::Serialize;
use std::path::Path;

use crate::flink_rest::FlinkRest;

/// Which malloc the TaskManager runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Allocator {
    /// The image's profiling jemalloc, preloaded (`LD_PRELOAD` + `MALLOC_CONF`).
    Jemalloc,
    /// glibc's malloc (no preload, no dumps).
    Glibc,
}

impl Allocator {
    pub fn name(self) -> &'static str {
        match self {
            Allocator::Jemalloc => "jemalloc",
            Allocator::Glibc => "glibc",
        }
    }
}

/// Where the TaskManager writes its heap dumps, inside its container (a volume).
pub const DUMP_DIR: &str = "/jeprof";

/// What one cluster runs: the configuration appended to the image's `flink-conf.yaml`, the
/// TaskManager's extra environment and its memory limit.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// `flink-conf.yaml` entries appended to the image's configuration.
    pub conf: Vec<(String, String)>,
    /// Extra environment of the TaskManager only (LD_PRELOAD, MALLOC_CONF).
    pub taskmanager_env: Vec<(String, String)>,
    /// The TaskManager container's memory limit, bytes (like a pod's `limits.memory`).
    pub taskmanager_memory_limit: u64,
    /// REST port of the JobManager as seen from this machine.
    pub rest_port: u16,
}

/// The TaskManager's memory as the kernel sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerMemory {
    /// VmRSS of the TaskManager's JVM, kB; None when it is not running.
    pub rss_kb: Option<u64>,
    /// The container's cgroup memory usage (page cache included), bytes.
    pub cgroup_bytes: Option<u64>,
    /// OOM kills recorded by the container's cgroup so far.
    pub oom_kills: u64,
}

pub trait Cluster {
    fn rest(&self) -> &FlinkRest;
    /// The TaskManager's memory now.
    fn taskmanager_memory(&self) -> Result<ContainerMemory>;
    /// Kills the TaskManager (SIGKILL, as a node or the OOM killer would) and starts a new
    /// one, which registers with the JobManager; returns once it has.
    fn kill_taskmanager(&mut self) -> Result<()>;
    /// Copies the heap dumps to `out/` and every library they map that is not part of the
    /// image (RocksDB's JNI library, unpacked to /tmp at run time) to `out/root/<its path>`.
    /// Call it while the TaskManager runs: the JVM deletes the JNI library when it exits.
    fn collect(&self, out: &Path) -> Result<()>;
}

/// The `oom_kill N` counter of a v1 `memory.oom_control` or a v2 `memory.events`.
pub fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// VmRSS of a `/proc/<pid>/status`, kB.
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_and_rss_are_read() {
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(
            vm_rss_kb("Name:\tjava\nVmRSS:\t  423052 kB\n"),
            Some(423052)
        );
    }
}
