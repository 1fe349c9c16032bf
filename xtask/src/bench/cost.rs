//! `bench --profiling-cost`: what profiling costs a TaskManager with RocksDB, measured. For
//! each allocator configuration (glibc, glibc with two arenas, jemalloc without profiling,
//! jemalloc profiling at `lg_prof_sample` 21, 19 and 17) a Docker cluster runs the e2e
//! RocksDB job unthrottled and without failures (every record a RocksDB read and write of
//! its key, enough keys that the block cache turns over); after a warm-up, samples every
//! few seconds of the state operator's records, the TaskManager container's CPU seconds,
//! its RSS and native memory and the dumps written make the windows. Runs are repeated in
//! rounds, each round in a rotated order, so the machine's drift shows in the error, not as
//! a difference. The report: `cost.json` (every sample), `summary.md` (the table, ratios to
//! `jemalloc-nonprof` and `glibc` with ± error) and `throughput.svg`.

use anyhow::{bail, Context, Result};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cost_model::{Config, RunRecord};
use super::cost_report::{rows, write_report, CostReport};
use super::stats::{self, Sample};
use crate::bundle::Bundle;
use crate::docker::{docker_text, LoadedImage};
use crate::e2e::cluster::{Cluster, ClusterSpec};
use crate::e2e::driver::docker::{DockerCluster, DockerOptions};
use crate::e2e::restarts::{HEAP_COMMITTED, NONHEAP_COMMITTED};
use crate::e2e::{allocator_env, flink_job, run_conf, scenario};
use crate::progress::{self, Step};
use crate::provenance::Provenance;

/// What the measurement is asked for.
#[derive(Debug, Clone)]
pub(crate) struct CostRequest {
    pub image: PathBuf,
    pub configs: Vec<Config>,
    pub repeats: u32,
    pub warm_up: Duration,
    pub window: Duration,
    pub windows: u32,
    pub sample_every: Duration,
    pub keys: u64,
    pub memory_limit_mb: u64,
    pub rest_port: u16,
    pub report: PathBuf,
}

/// Runs the measurement and writes its report; returns it.
pub(crate) fn profiling_cost(req: &CostRequest) -> Result<CostReport> {
    check(req)?;
    crate::docker::require("bench --profiling-cost")?;
    let (work, _work_teardown) = crate::project::work_dir_beside(&req.report, ".cost-")?;
    let setup = setup(req, work.path())?;
    let runs = rounds(req, &setup, work.path())?;
    let report = CostReport {
        image: setup.bundle.image.clone(),
        flink: setup.flink.clone(),
        keys: req.keys,
        taskmanager_limit_mib: req.memory_limit_mb,
        warm_up_seconds: req.warm_up.as_secs_f64(),
        window_seconds: req.window.as_secs_f64(),
        windows: req.windows,
        rows: rows(&req.configs, &runs),
        runs,
        made_by: Provenance::here(
            &crate::project::root(),
            crate::e2e::driver::engine_version(crate::e2e::Driver::Docker),
        ),
    };
    write_report(&report, &req.report, work.path())?;
    Ok(report)
}

/// Refuses bad requests, before any work.
fn check(req: &CostRequest) -> Result<()> {
    if req.configs.is_empty() {
        bail!("--configs is empty: name at least one (e.g. --configs jemalloc-nonprof,jemalloc-sample19)");
    }
    if req.repeats == 0 || req.windows == 0 {
        bail!("--repeats and --windows must be at least 1");
    }
    if req.window < req.sample_every * 3 {
        bail!(
            "--window {}s holds fewer than three samples (one every {}s): make it longer",
            req.window.as_secs(),
            req.sample_every.as_secs()
        );
    }
    crate::oci::check_image(&req.image)
}

/// What every run shares: the image unpacked (its jemalloc, its Flink), loaded into the
/// engine, the job compiled for it, the scenario configuration of its Flink generation.
struct Setup {
    bundle: Bundle,
    flink: String,
    jemalloc: Option<String>,
    plan: scenario::Plan,
    jar: PathBuf,
    image: LoadedImage,
}

fn setup(req: &CostRequest, work: &Path) -> Result<Setup> {
    let layout = crate::oci::open_image(&req.image, work)?;
    let bundle = Bundle::unpack(&layout, &work.join("bundle"))?;
    let jemalloc = bundle.env_var("JEMALLOC_PATH").map(str::to_string);
    if req
        .configs
        .iter()
        .any(|c| c.allocator().preloads_jemalloc())
        && jemalloc.is_none()
    {
        bail!(
            "{} has no JEMALLOC_PATH in its environment: is it a profiled image (cargo xtask image)?",
            req.image.display()
        );
    }
    let compiled = flink_job::compile_for(&bundle, work)?;
    let (plan, _) = scenario::resolve(
        &scenario::load_default()?,
        "restart-growth",
        compiled.flink,
        &scenario::Overrides::default(),
    )?;
    let image = LoadedImage::from_layout(&layout, work)?;
    Ok(Setup {
        flink: compiled.flink.to_string(),
        jar: compiled.jar,
        bundle,
        jemalloc,
        plan,
        image,
    })
}

/// Returns every configuration once per round, each round's order rotated by one.
pub(crate) fn order(configs: &[Config], round: u32) -> Vec<Config> {
    let mut v = configs.to_vec();
    if !v.is_empty() {
        let k = round as usize % v.len();
        v.rotate_left(k);
    }
    v
}

fn rounds(req: &CostRequest, setup: &Setup, work: &Path) -> Result<Vec<RunRecord>> {
    let mut runs = Vec::new();
    let total = req.repeats as usize * req.configs.len();
    for round in 0..req.repeats {
        for config in order(&req.configs, round) {
            progress::note(format!(
                "run {} of {total}: {} (round {})",
                runs.len() + 1,
                config.name(),
                round + 1
            ));
            let dir = work.join(format!("{}-{round}", config.name()));
            runs.push(
                run_one(req, setup, config, round, &dir)
                    .with_context(|| format!("{} (round {})", config.name(), round + 1))?,
            );
        }
    }
    Ok(runs)
}

/// Returns the TaskManager's environment for `config`: the allocator's, at its sampling.
fn config_env(config: Config, setup: &Setup) -> Vec<(String, String)> {
    let mut plan = setup.plan.clone();
    if let Some((sample, interval)) = config.sampling() {
        plan.lg_prof_sample = sample;
        plan.lg_prof_interval = interval;
    }
    let mut env = allocator_env(config.allocator(), &plan, setup.jemalloc.as_deref());
    if config.no_junk() {
        for (k, v) in &mut env {
            if k == "MALLOC_CONF" {
                v.push_str(",junk:false");
            }
        }
    }
    env
}

/// Starts a cluster for `config`, submits the job unthrottled and without failures, waits
/// out the warm-up, then takes a sample every `sample_every` for the windows.
fn run_one(
    req: &CostRequest,
    setup: &Setup,
    config: Config,
    round: u32,
    dir: &Path,
) -> Result<RunRecord> {
    let cluster = start_cluster(req, setup, config, dir)?;
    let job = submit(&cluster, req, setup)?;
    let state = Vertex {
        job: &job,
        id: cluster.rest().vertex_id(&job, "rocksdb-state")?,
    };
    warm_up(&cluster, &state, req, config)?;
    let samples = measure(&cluster, &state, req, config)?;
    let _ = cluster.rest().cancel(&job);
    Ok(RunRecord {
        config,
        round,
        windows: stats::windows(&samples, req.window.as_secs_f64(), req.windows as usize),
        samples,
    })
}

fn start_cluster(
    req: &CostRequest,
    setup: &Setup,
    config: Config,
    dir: &Path,
) -> Result<DockerCluster> {
    let spec = ClusterSpec {
        conf: run_conf(&setup.plan, req.rest_port),
        taskmanager_env: config_env(config, setup),
        taskmanager_memory_limit: req.memory_limit_mb << 20,
        rest_port: req.rest_port,
    };
    let step = Step::start(format!(
        "{}: starting JobManager and TaskManager",
        config.name()
    ));
    let cluster = DockerCluster::start(
        &DockerOptions {
            image: setup.image.name.clone(),
            network: None,
            dumps: dir.join("dumps"),
            logs: dir.join("logs"),
        },
        &spec,
    )?;
    step.done("");
    Ok(cluster)
}

/// Submits the job, unthrottled and never failing; returns its id once it runs.
fn submit(cluster: &DockerCluster, req: &CostRequest, setup: &Setup) -> Result<String> {
    let rest = cluster.rest();
    let jar = rest.upload(&setup.jar)?;
    let args: Vec<String> = [
        "--fail-every-ms",
        "0",
        "--records-per-second",
        "1000000000",
        "--keys",
        &req.keys.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let job = rest.run(&jar, flink_job::MAIN_CLASS, &args, 1)?;
    rest.wait_for_state(&job, &["RUNNING"], Duration::from_secs(120))?;
    Ok(job)
}

/// The job's state operator (and what is chained to it), whose records are counted.
struct Vertex<'a> {
    job: &'a str,
    id: String,
}

impl Vertex<'_> {
    /// Returns Flink's `numRecordsIn` of the vertex, over its subtasks.
    fn records(&self, cluster: &DockerCluster) -> Result<Option<f64>> {
        cluster
            .rest()
            .vertex_metric_sum(self.job, &self.id, "numRecordsIn")
    }
}

/// Waits out the warm-up, asking for the record count early: the JobManager fetches a
/// metric on the first request for it.
fn warm_up(
    cluster: &DockerCluster,
    state: &Vertex,
    req: &CostRequest,
    config: Config,
) -> Result<()> {
    let step = Step::start(format!(
        "{}: warm-up, {} s",
        config.name(),
        req.warm_up.as_secs()
    ));
    let warm = Instant::now();
    let reported = warm + req.warm_up.max(Duration::from_secs(30));
    while state.records(cluster)?.is_none() {
        if Instant::now() > reported {
            bail!(
                "the state operator reports no numRecordsIn (Flink's REST API, job {})",
                state.job
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if let Some(rest_of_it) = req.warm_up.checked_sub(warm.elapsed()) {
        std::thread::sleep(rest_of_it);
    }
    step.done("");
    Ok(())
}

/// Takes a sample every `sample_every` until the windows are covered.
fn measure(
    cluster: &DockerCluster,
    state: &Vertex,
    req: &CostRequest,
    config: Config,
) -> Result<Vec<Sample>> {
    let step = Step::start(format!(
        "{}: measuring, {} windows of {} s",
        config.name(),
        req.windows,
        req.window.as_secs()
    ));
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let next = start + req.sample_every * samples.len() as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        samples.push(sample(cluster, state, start.elapsed().as_secs_f64())?);
        if start.elapsed() >= req.window * req.windows {
            break;
        }
    }
    let windows = stats::windows(&samples, req.window.as_secs_f64(), req.windows as usize);
    step.done(format!(
        "{} records/s",
        stats::estimate(&windows.iter().map(|w| w.throughput).collect::<Vec<_>>())
            .map_or("?".into(), |e| e.plus_minus(0))
    ));
    Ok(samples)
}

/// Re-cuts a recorded report's windows to start `skip` seconds into its measurement (the
/// samples before count as warm-up; the windows that fit after), recomputes its figures
/// and rewrites the report in place.
pub(crate) fn recut(dir: &Path, skip: Duration) -> Result<CostReport> {
    let path = dir.join("cost.json");
    let mut report: CostReport = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a bench --profiling-cost report", path.display()))?;
    let skip = skip.as_secs_f64();
    let measured = report.window_seconds * report.windows as f64;
    let windows = ((measured - skip) / report.window_seconds).floor();
    if skip <= 0.0 || windows < 1.0 {
        bail!(
            "--skip-seconds {skip}: give more than 0 and leave at least one {} s window of the {measured} s measured",
            report.window_seconds
        );
    }
    for run in &mut report.runs {
        run.samples.retain(|s| s.t >= skip - 1e-9);
        for s in &mut run.samples {
            s.t -= skip;
        }
        run.windows = stats::windows(&run.samples, report.window_seconds, windows as usize);
    }
    report.warm_up_seconds += skip;
    report.windows = windows as u32;
    let configs: Vec<Config> = report.rows.iter().map(|r| r.config).collect();
    report.rows = rows(&configs, &report.runs);
    let (work, _work_teardown) = crate::project::work_dir_beside(dir, ".cost-")?;
    write_report(&report, dir, work.path())?;
    Ok(report)
}

/// The TaskManager container's CPU seconds: cgroup v2 `cpu.stat`, else v1 `cpuacct.usage`.
const CPU_PROBE: &str = "cat /sys/fs/cgroup/cpu.stat 2>/dev/null || \
cat /sys/fs/cgroup/cpuacct/cpuacct.usage 2>/dev/null || \
cat /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage";

/// Parses [`CPU_PROBE`]'s output into seconds (`usage_usec` of cpu.stat, or nanoseconds).
fn parse_cpu_probe(text: &str) -> Option<f64> {
    if let Some(l) = text.lines().find(|l| l.starts_with("usage_usec ")) {
        return l["usage_usec ".len()..]
            .trim()
            .parse::<f64>()
            .ok()
            .map(|u| u / 1e6);
    }
    text.trim().parse::<f64>().ok().map(|ns| ns / 1e9)
}

fn sample(cluster: &DockerCluster, state: &Vertex, t: f64) -> Result<Sample> {
    let rest = cluster.rest();
    let records = state
        .records(cluster)?
        .context("the state operator reports no numRecordsIn")?;
    let tm = cluster.taskmanager_container().context("no TaskManager")?;
    let cpu = docker_text(&["exec", tm, "sh", "-c", CPU_PROBE])
        .ok()
        .as_deref()
        .and_then(parse_cpu_probe)
        .with_context(|| format!("reading the CPU time of {tm} (its cgroup)"))?;
    let mem = cluster.taskmanager_memory()?;
    let rss_kb = mem.rss_kb.context(
        "the TaskManager is not running (OOM-killed? give it more with --memory-limit-mb)",
    )?;
    let metrics = match cluster.taskmanager_id() {
        Some(id) => rest.taskmanager_metrics(id, &[HEAP_COMMITTED, NONHEAP_COMMITTED])?,
        None => Default::default(),
    };
    let kb = |k: &str| metrics.get(k).map(|v| (*v as i64) / 1024);
    let (dumps, dump_bytes) = dumps_written(&cluster.dump_volume(1));
    Ok(Sample {
        t,
        records,
        cpu_seconds: cpu,
        rss_kb: Some(rss_kb),
        native_kb: match (kb(HEAP_COMMITTED), kb(NONHEAP_COMMITTED)) {
            (Some(h), Some(n)) => Some(rss_kb as i64 - h - n),
            _ => None,
        },
        dumps,
        dump_bytes,
    })
}

/// Counts the heap dumps in `dir` (the TaskManager's bind-mounted dump directory) and their
/// bytes.
fn dumps_written(dir: &Path) -> (u64, u64) {
    let names = crate::heap_profile::dumps_in(dir).unwrap_or_default();
    let bytes = names
        .iter()
        .map(|n| std::fs::metadata(dir.join(n)).map_or(0, |m| m.len()))
        .sum();
    (names.len() as u64, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::cluster::Allocator;

    #[test]
    fn cpu_time_from_either_cgroup() {
        assert_eq!(
            parse_cpu_probe("usage_usec 2500000\nuser_usec 2000000\n"),
            Some(2.5)
        );
        assert_eq!(parse_cpu_probe("3000000000\n"), Some(3.0));
        assert_eq!(parse_cpu_probe(""), None);
    }

    #[test]
    fn configurations_say_their_malloc_conf() {
        assert_eq!(
            Config::JemallocSample19Nojunk.malloc_conf(),
            "prof:true,lg_prof_sample:19,lg_prof_interval:32,junk:false"
        );
        assert_eq!(Config::JemallocNonprof.malloc_conf(), "prof:false");
        assert_eq!(
            Config::JemallocNonprofNojunk.name(),
            "jemalloc-nonprof-nojunk"
        );
        assert_eq!(
            Config::JemallocNonprofNojunk.allocator(),
            Allocator::JemallocNonprof
        );
        assert_eq!(Config::GlibcArenas2.malloc_conf(), "MALLOC_ARENA_MAX=2");
    }

    #[test]
    fn recut_moves_the_windows_past_a_slow_start() {
        // A run twice as fast in its first 30 s as after.
        let samples: Vec<Sample> = (0..=40)
            .map(|i| {
                let t = 3.0 * i as f64;
                let records = if t <= 30.0 {
                    2000.0 * t
                } else {
                    60_000.0 + 1000.0 * (t - 30.0)
                };
                Sample {
                    t,
                    records,
                    cpu_seconds: t,
                    rss_kb: Some(1024),
                    native_kb: None,
                    dumps: 0,
                    dump_bytes: 0,
                }
            })
            .collect();
        let run = RunRecord {
            config: Config::Glibc,
            round: 0,
            windows: stats::windows(&samples, 30.0, 4),
            samples,
        };
        assert!((run.windows[0].throughput - 2000.0).abs() < 1e-6);
        let report = CostReport {
            image: "i".into(),
            flink: "2.2.1".into(),
            keys: 1,
            taskmanager_limit_mib: 1,
            warm_up_seconds: 90.0,
            window_seconds: 30.0,
            windows: 4,
            rows: rows(&[Config::Glibc], std::slice::from_ref(&run)),
            runs: vec![run],
            made_by: Provenance::here(Path::new("/nonexistent"), None),
        };
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cost");
        write_report(&report, &dir, &d.path().join("w")).unwrap();
        let cut = recut(&dir, Duration::from_secs(30)).unwrap();
        assert_eq!((cut.windows, cut.warm_up_seconds), (3, 120.0));
        assert_eq!(cut.runs[0].windows.len(), 3);
        let t = cut.rows[0].throughput.unwrap();
        assert!((t.mean - 1000.0).abs() < 1e-6, "{t:?}");
        let again: CostReport =
            serde_json::from_slice(&std::fs::read(dir.join("cost.json")).unwrap()).unwrap();
        assert_eq!(again.windows, 3);
        assert!(
            recut(&dir, Duration::from_secs(90)).is_err(),
            "no window left"
        );
        let work_dirs: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cost-"))
            .collect();
        assert!(work_dirs.is_empty(), "{work_dirs:?}");
    }

    #[test]
    fn rounds_rotate_the_order() {
        let c = [
            Config::Glibc,
            Config::JemallocNonprof,
            Config::JemallocSample19,
        ];
        assert_eq!(order(&c, 0), c.to_vec());
        assert_eq!(
            order(&c, 1),
            vec![
                Config::JemallocNonprof,
                Config::JemallocSample19,
                Config::Glibc
            ]
        );
        assert_eq!(order(&c, 3), c.to_vec());
    }
}
