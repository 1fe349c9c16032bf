//! What the e2e scenario needs from a running Flink cluster, whatever runs it: the REST API,
//! the TaskManager's memory, a way to kill the TaskManager (and get a new one), and the heap
//! dumps with the libraries they map. The drivers in `e2e/driver/` implement it: `docker`
//! (a Docker engine), `runc` (root and runc, no engine) and `kind` (a kind cluster).

use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

use crate::e2e::scenario::Plan;
use crate::heap_profile::DUMP_DIR;
use crate::progress;

use crate::e2e::flink_rest::FlinkRest;

/// Which malloc the TaskManager runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// The image's jemalloc, preloaded with profiling on (`LD_PRELOAD` + `MALLOC_CONF`).
    Jemalloc,
    /// The image's jemalloc, preloaded with `prof:false`: the profiling overhead's baseline.
    JemallocNonprof,
    /// glibc's malloc (no preload, no dumps).
    Glibc,
    /// glibc's malloc with `MALLOC_ARENA_MAX=2`, the usual mitigation.
    GlibcArenas2,
}

impl Allocator {
    pub fn name(self) -> &'static str {
        match self {
            Allocator::Jemalloc => "jemalloc",
            Allocator::JemallocNonprof => "jemalloc-nonprof",
            Allocator::Glibc => "glibc",
            Allocator::GlibcArenas2 => "glibc-arenas2",
        }
    }

    /// Returns whether it writes heap dumps (to be collected and analysed).
    pub(crate) fn profiles(self) -> bool {
        self == Allocator::Jemalloc
    }

    /// Returns whether it needs the image's jemalloc.
    pub(crate) fn preloads_jemalloc(self) -> bool {
        matches!(self, Allocator::Jemalloc | Allocator::JemallocNonprof)
    }
}

/// What one cluster runs: Flink configuration over the image's own, the TaskManager's extra
/// environment and its memory limit.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Flink configuration entries over the image's: through `FLINK_PROPERTIES` (docker,
    /// kind, runc on Flink 2) or appended to `flink-conf.yaml` (runc on Flink 1.x).
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
    /// The CPUs online as the TaskManager sees them (`/sys/devices/system/cpu/online`, which
    /// glibc's `get_nprocs` reads and so `std::thread::hardware_concurrency`, RocksDB's count
    /// of core slots): a CPU quota or a cpuset does not change it.
    pub cpus_online: Option<u32>,
}

pub trait Cluster {
    fn rest(&self) -> &FlinkRest;
    /// Returns the REST id of the current TaskManager (a killed one stays listed by the
    /// JobManager until its heartbeat times out, so "the first one listed" may be a dead one).
    fn taskmanager_id(&self) -> Option<&str>;
    /// Returns the TaskManager's memory now.
    fn taskmanager_memory(&self) -> Result<ContainerMemory>;
    /// Kills the TaskManager (SIGKILL, as a node or the OOM killer would) and starts a new
    /// one, which registers with the JobManager; returns once it has.
    fn kill_taskmanager(&mut self) -> Result<()>;
    /// After the TaskManager died unasked (OOM-killed): makes sure a new one runs (starts
    /// it, or waits for the orchestrator's restart) and returns once it registered.
    fn replace_taskmanager(&mut self) -> Result<()> {
        self.kill_taskmanager()
    }
    /// Copies the heap dumps to `out/` and every library they map that is not part of the
    /// image (RocksDB's JNI library, unpacked to /tmp at run time) to `out/root/<its path>`.
    /// Call it while the TaskManager runs: the JVM deletes the JNI library when it exits.
    fn collect(&self, out: &Path) -> Result<()>;
    /// Returns the current TaskManager's heap dumps with their modification times (seconds
    /// since the epoch): when each was written, to place it between restarts.
    fn dump_times(&self) -> Result<Vec<(String, f64)>>;
}

/// Returns the command that lists the heap dumps of `dir` in a container with their
/// modification times, for [`parse_dump_times`] (GNU find, in every Debian and Ubuntu image).
pub(crate) fn dump_times_probe(dir: &str) -> Vec<String> {
    [
        "find",
        dir,
        "-maxdepth",
        "1",
        "-name",
        "*.heap",
        "-printf",
        "%f %T@\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Parses [`dump_times_probe`]'s output: `name seconds.fraction` lines.
pub(crate) fn parse_dump_times(text: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let (name, t) = l.trim().rsplit_once(' ')?;
            Some((name.to_string(), t.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The memory probe that runs in the TaskManager container: it reads PID 1's status (the
/// JVM), then the container cgroup's usage and OOM-kill counter, v2 or v1, then the CPUs
/// online.
pub(crate) const MEMORY_PROBE: &str = "cat /proc/1/status; echo @@cgroup; \
if [ -r /sys/fs/cgroup/memory.current ]; then cat /sys/fs/cgroup/memory.current /sys/fs/cgroup/memory.events; \
elif [ -r /sys/fs/cgroup/memory/memory.usage_in_bytes ]; then cat /sys/fs/cgroup/memory/memory.usage_in_bytes /sys/fs/cgroup/memory/memory.oom_control; fi; \
echo @@cpus; cat /sys/devices/system/cpu/online";

/// Parses [`MEMORY_PROBE`]'s output: VmRSS, cgroup bytes, the cgroup's `oom_kill` count
/// and the CPUs online.
pub(crate) fn parse_memory_probe(text: &str) -> ContainerMemory {
    let (text, cpus) = text.split_once("@@cpus").unwrap_or((text, ""));
    let (status, cgroup) = text.split_once("@@cgroup").unwrap_or((text, ""));
    let mut lines = cgroup.lines().map(str::trim).filter(|l| !l.is_empty());
    let bytes = lines.next().and_then(|l| l.parse().ok());
    let counters: Vec<&str> = lines.collect();
    ContainerMemory {
        rss_kb: vm_rss_kb(status),
        cgroup_bytes: bytes,
        oom_kills: oom_kill_count(&counters.join("\n")),
        cpus_online: crate::provenance::cpu_count(cpus),
    }
}

/// Attempts of the memory probe in a container that runs: an exec can fail for reasons of
/// its own (an API server hiccup, a busy kubelet, a container at its memory limit where
/// the exec'd shell cannot start).
const PROBE_ATTEMPTS: u32 = 3;

/// Runs `probe` while `running` says the container runs. Returns None once it does not (a
/// dead container has no memory to read), the probe's output once it succeeds, and its last
/// error after `attempts` failures. A failed exec is not taken for a death.
pub(crate) fn probe_while_running(
    running: impl FnMut() -> Result<bool>,
    probe: impl FnMut() -> Result<String>,
) -> Result<Option<String>> {
    probe_while_running_with(PROBE_ATTEMPTS, Duration::from_secs(1), running, probe)
}

fn probe_while_running_with(
    attempts: u32,
    pause: Duration,
    mut running: impl FnMut() -> Result<bool>,
    mut probe: impl FnMut() -> Result<String>,
) -> Result<Option<String>> {
    let mut attempt = 1;
    loop {
        if !running()? {
            return Ok(None);
        }
        match probe() {
            Ok(text) => return Ok(Some(text)),
            Err(e) if attempt >= attempts => {
                return Err(e.context(format!("the memory probe failed {attempts} times")))
            }
            Err(e) => {
                progress::note(format!(
                    "memory probe: {e:#}; trying again (attempt {} of {attempts})",
                    attempt + 1
                ));
                attempt += 1;
                std::thread::sleep(pause);
            }
        }
    }
}

/// Returns the `oom_kill N` counter of a v1 `memory.oom_control` or a v2 `memory.events`.
pub(crate) fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Returns the VmRSS of a `/proc/<pid>/status`, in kB.
pub(crate) fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Returns the [`ClusterSpec`] of one run. The Flink configuration of every run has the
/// scenario's settings (RocksDB state, restart strategy, its options), REST on loopback,
/// metrics fresh each second, the TaskManager heap pre-touched (so heap RSS = committed heap,
/// and RSS minus committed heap/non-heap is the native part), and heartbeats that notice a
/// dead TaskManager within 10 s. The TaskManager's environment selects the allocator.
pub(crate) fn cluster_spec(
    allocator: Allocator,
    plan: &Plan,
    rest_port: u16,
    memory_limit_mb: u64,
    jemalloc: Option<&str>,
) -> ClusterSpec {
    ClusterSpec {
        conf: run_conf(plan, rest_port),
        taskmanager_env: allocator_env(allocator, plan, jemalloc),
        taskmanager_memory_limit: memory_limit_mb << 20,
        rest_port,
    }
}

/// Returns the plan's Flink configuration, then what every run sets: REST on loopback at
/// `rest_port`, metrics fetched every second, the TaskManager's heap pre-touched (its
/// resident size is then its committed size), and heartbeats that notice a dead TaskManager
/// in 10 s.
pub(crate) fn run_conf(plan: &Plan, rest_port: u16) -> Vec<(String, String)> {
    let run = [
        ("rest.address", "127.0.0.1".to_string()),
        ("rest.port", rest_port.to_string()),
        ("metrics.fetcher.update-interval", "1000".into()),
        ("env.java.opts.taskmanager", "-XX:+AlwaysPreTouch".into()),
        // A killed or OOM-killed TaskManager is noticed in 10 s, not Flink's default 50 s.
        ("heartbeat.interval", "2000".into()),
        ("heartbeat.timeout", "10000".into()),
    ];
    plan.conf
        .iter()
        .cloned()
        .chain(run.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .collect()
}

/// Returns the TaskManager's environment for an allocator: jemalloc preloaded with profiling
/// (a dump every 2^lg_prof_interval bytes, a sample every 2^lg_prof_sample) or without, or
/// glibc as it is or with two arenas.
pub(crate) fn allocator_env(
    allocator: Allocator,
    plan: &Plan,
    jemalloc: Option<&str>,
) -> Vec<(String, String)> {
    let preload = |conf: String| match jemalloc {
        Some(lib) => vec![
            ("LD_PRELOAD".to_string(), lib.to_string()),
            ("MALLOC_CONF".to_string(), conf),
        ],
        None => Vec::new(),
    };
    match allocator {
        Allocator::Jemalloc => preload(format!(
            "prof:true,lg_prof_interval:{},lg_prof_sample:{},prof_prefix:{DUMP_DIR}/jeprof.out",
            plan.lg_prof_interval, plan.lg_prof_sample
        )),
        Allocator::JemallocNonprof => preload("prof:false".into()),
        Allocator::Glibc => Vec::new(),
        Allocator::GlibcArenas2 => vec![("MALLOC_ARENA_MAX".to_string(), "2".to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[test]
    fn memory_probe_v2_and_v1() {
        let v2 = "Name:\tjava\nVmPeak:\t 4000000 kB\nVmRSS:\t  812344 kB\nThreads:\t80\n@@cgroup\n\
                  1073741824\nlow 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        let m = |rss_kb, cgroup_bytes, oom_kills, cpus_online| ContainerMemory {
            rss_kb,
            cgroup_bytes,
            oom_kills,
            cpus_online,
        };
        assert_eq!(
            parse_memory_probe(&format!("{v2}@@cpus\n0-15\n")),
            m(Some(812344), Some(1 << 30), 1, Some(16))
        );
        let v1 = "VmRSS:\t 1000 kB\n@@cgroup\n2048\noom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_memory_probe(v1), m(Some(1000), Some(2048), 2, None));
        assert_eq!(
            parse_memory_probe("VmRSS: 5 kB\n@@cgroup\n@@cpus\n0\n"),
            m(Some(5), None, 0, Some(1))
        );
        assert_eq!(parse_memory_probe(""), ContainerMemory::default());
    }

    #[test]
    fn a_failed_exec_is_retried_not_taken_for_a_death() {
        let none = Duration::ZERO;
        let mut probes = 0;
        let got = probe_while_running_with(
            3,
            none,
            || Ok(true),
            || {
                probes += 1;
                if probes < 3 {
                    bail!("error dialing backend: EOF")
                }
                Ok("VmRSS: 5 kB".to_string())
            },
        );
        assert_eq!(got.unwrap().as_deref(), Some("VmRSS: 5 kB"));
        assert_eq!(probes, 3);
        let mut probed = false;
        let dead = probe_while_running_with(
            3,
            none,
            || Ok(false),
            || {
                probed = true;
                Ok(String::new())
            },
        );
        assert_eq!(dead.unwrap(), None);
        assert!(!probed, "a container that is not running is not probed");
        let e = probe_while_running_with(2, none, || Ok(true), || bail!("timeout")).unwrap_err();
        assert!(format!("{e:#}").contains("failed 2 times"), "{e:#}");
        // A container that died between the attempts has no memory, and that is not an error.
        let mut alive = true;
        let died = probe_while_running_with(
            3,
            none,
            || Ok(std::mem::replace(&mut alive, false)),
            || bail!("container not found"),
        );
        assert_eq!(died.unwrap(), None);
    }

    #[test]
    fn dump_times_are_parsed() {
        let t = parse_dump_times(
            "jeprof.out.1.2.i2.heap 1764250000.5000000000\njeprof.out.1.1.i1.heap 1764249999.25\nbad\n",
        );
        assert_eq!(
            t,
            vec![
                ("jeprof.out.1.1.i1.heap".to_string(), 1764249999.25),
                ("jeprof.out.1.2.i2.heap".to_string(), 1764250000.5)
            ]
        );
        assert_eq!(dump_times_probe("/jeprof")[1], "/jeprof");
    }

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
