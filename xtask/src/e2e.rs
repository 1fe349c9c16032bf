//! `cargo xtask e2e`: the RocksDB restart scenario on a profiled image. The image's OCI
//! layout is unpacked; the job (compiled against the image's flink-dist) runs on a
//! JobManager and a TaskManager started by a driver (`docker` on a Docker engine, `runc` as
//! root without one, `kind` for a Kubernetes cluster);
//! the job restarts (injected failure, cancel + resubmit, or TaskManager kill) and at each
//! restart the TaskManager's memory is sampled: RSS, cgroup usage, and the native part
//! (RSS minus the JVM's committed heap and non-heap, from Flink's metrics; the heap is
//! pre-touched so its resident size is its committed size). This runs once per allocator
//! (jemalloc preloaded with profiling or without, glibc's malloc as it is or with two
//! arenas). The scenario (`e2e/scenarios.toml`) sets the pace, the configuration and the
//! expectation. The profiling run's heap dumps, with the libraries they map, are analysed by
//! the image's own jeprof inside the rootfs, including every allocation site's growth per
//! restart. The report directory gets report.json, summary.md, memory.svg, and per
//! allocator the dumps and the jeprof outputs. The verdict fails unless every run saw the
//! restarts asked for and the profiling run shows what the scenario expects.

pub mod cluster;
pub(crate) mod context;
pub mod driver;
pub mod flink_job;
pub mod flink_rest;
pub(crate) mod report;
pub(crate) mod request;
pub(crate) mod restarts;
pub(crate) mod scenario;

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::analyze::sites::Per;
use crate::analyze::{self, Analysis};
use crate::bundle::Bundle;
use crate::heap_profile;
use crate::progress::{self, flag, Step};
use crate::teardown;
pub(crate) use cluster::{allocator_env, cluster_spec, run_conf};
use cluster::{Allocator, ClusterSpec};
use context::RunContext;
pub(crate) use driver::Driver;
pub(crate) use report::{growth, Report, RunRecord};
use request::Request;
use restarts::{restart_loop, Job};
pub(crate) use scenario::Mode;
use scenario::Plan;

/// What `--allocator` takes: an allocator, or a set of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Allocators {
    /// The image's jemalloc with profiling (heap dumps, analysed).
    Jemalloc,
    /// The image's jemalloc with `prof:false`: the profiling overhead's baseline.
    JemallocNonprof,
    /// glibc's malloc.
    Glibc,
    /// glibc's malloc with `MALLOC_ARENA_MAX=2`.
    GlibcArenas2,
    /// jemalloc, then glibc.
    Both,
    /// The matrix: jemalloc, jemalloc-nonprof, glibc, glibc-arenas2.
    All,
}

impl Allocators {
    fn members(self) -> Vec<Allocator> {
        match self {
            Allocators::Jemalloc => vec![Allocator::Jemalloc],
            Allocators::JemallocNonprof => vec![Allocator::JemallocNonprof],
            Allocators::Glibc => vec![Allocator::Glibc],
            Allocators::GlibcArenas2 => vec![Allocator::GlibcArenas2],
            Allocators::Both => vec![Allocator::Jemalloc, Allocator::Glibc],
            Allocators::All => vec![
                Allocator::Jemalloc,
                Allocator::JemallocNonprof,
                Allocator::Glibc,
                Allocator::GlibcArenas2,
            ],
        }
    }

    /// Returns the allocators of a `--allocator` list, each once, in the order given.
    pub(crate) fn expand(list: &[Allocators]) -> Vec<Allocator> {
        let mut out = Vec::new();
        for a in list.iter().flat_map(|a| a.members()) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    /// The profiled image as an OCI layout directory (what `cargo xtask image --output` wrote).
    #[arg(long)]
    pub image: PathBuf,
    /// Where the JobManager and TaskManager run [default: docker when a Docker engine
    /// answers, else runc].
    #[arg(long, value_enum)]
    pub driver: Option<Driver>,
    /// The scenario (e2e/scenarios.toml): job settings, Flink configuration, restart mode
    /// and what the report must show.
    #[arg(long, default_value = "restart-growth")]
    pub scenario: String,
    /// Allocators to run, one after the other (a comma-separated list).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "both")]
    pub allocator: Vec<Allocators>,
    /// How restarts happen [default: the scenario's].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Restarts to observe per allocator before the verdict [default: the scenario's].
    #[arg(long)]
    pub restarts: Option<u64>,
    /// `--mode steady`: minutes the job runs, without restarts [default: the scenario's].
    #[arg(long)]
    pub minutes: Option<u64>,
    /// Period of the failure, cancel or kill; in `--mode steady`, of the samples [default:
    /// the scenario's].
    #[arg(long)]
    pub fail_every_ms: Option<u64>,
    /// jemalloc writes a dump every 2^N bytes allocated [default: the scenario's].
    #[arg(long)]
    pub lg_prof_interval: Option<u32>,
    /// The TaskManager container's memory limit (Flink's process size is 1728m).
    #[arg(long, default_value_t = 2048)]
    pub memory_limit_mb: u64,
    /// Distinct keys of the job's RocksDB state.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// REST port of the JobManager on this machine.
    #[arg(long, default_value_t = 8081)]
    pub rest_port: u16,
    /// Report directory [default: target/flink-jemalloc/e2e-report].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// kind: keep the namespace (and the cluster) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// kind: the cluster's name (created from ci/kind.yaml unless it exists).
    #[arg(long, default_value = driver::kind::tools::DEFAULT_CLUSTER)]
    pub kind_cluster: String,
    /// docker: a user-defined network (created if missing) where the containers find the
    /// JobManager by name, for engines with a bridge (Docker Desktop) [default: the host
    /// network].
    #[arg(long)]
    pub docker_network: Option<String>,
}

impl E2eArgs {
    /// Returns the request these flags make: it chooses the driver (docker when an engine
    /// answers, else runc), expands the allocators and gathers the scenario's overrides.
    fn into_request(self) -> Request {
        Request {
            driver: self.driver.unwrap_or_else(Driver::default_here),
            allocators: Allocators::expand(&self.allocator),
            overrides: scenario::Overrides {
                mode: self.mode,
                restarts: self.restarts,
                minutes: self.minutes,
                fail_every_ms: self.fail_every_ms,
                lg_prof_interval: self.lg_prof_interval,
            },
            image: self.image,
            scenario: self.scenario,
            memory_limit_mb: self.memory_limit_mb,
            keys: self.keys,
            rest_port: self.rest_port,
            report: self.report,
            timeout_secs: self.timeout_secs,
            options: driver::Options {
                docker_network: self.docker_network,
                kind_cluster: self.kind_cluster,
                keep: self.keep,
            },
        }
    }
}

/// `cargo xtask e2e`: prints the report as JSON; a failed verdict is an error.
pub fn run(args: E2eArgs) -> Result<()> {
    let chosen_here = args.driver.is_none();
    let req = args.into_request();
    if chosen_here {
        progress::note(format!("--driver {}", flag(&req.driver)));
    }
    let report = run_scenario(&req)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.passed {
        bail!("e2e verdict: {}", report.verdict.join("; "));
    }
    Ok(())
}

/// Runs the scenario and writes the report; an `Ok` report may still have failed its verdict.
fn run_scenario(req: &Request) -> Result<Report> {
    let started = Instant::now();
    let driver = req.driver;
    driver::require(driver)?;
    crate::oci::check_image(&req.image)?;
    let scenarios = scenario::load_default()?;
    scenarios.get(&req.scenario)?;
    if req.allocators.iter().any(|a| a.profiles()) && !crate::rootless::is_root() {
        // The image's jeprof reads the dumps chrooted in the image, which needs a user
        // namespace.
        crate::rootless::require_userns()?;
    }
    let out = report_dir(req)?;
    let work = tempfile::Builder::new().prefix(".e2e-").tempdir_in(&out)?;
    let _work_teardown = teardown::remove_on_interrupt(work.path());
    let layout = crate::oci::open_image(&req.image, work.path())?;
    let bundle = Bundle::unpack(&layout, &work.path().join("bundle"))?;
    let jemalloc = bundle.env_var("JEMALLOC_PATH").map(str::to_string);
    if req.allocators.iter().any(|a| a.preloads_jemalloc()) && jemalloc.is_none() {
        bail!(
            "{} has no JEMALLOC_PATH in its environment: is it a profiled image (cargo xtask image)?",
            req.image.display()
        );
    }
    let (plan, jar) = plan_and_job(req, &scenarios, &bundle, work.path())?;
    let engine = driver::prepare(driver, &req.options, &layout, &bundle.dir, work.path())?;
    // An earlier report's dumps, analysis and logs give way only now, when this run has
    // everything it needs to replace them.
    for old in ["dumps", "analysis", "logs"] {
        let p = out.join(old);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
    }
    let ctx = RunContext {
        plan: &plan,
        driver,
        options: &req.options,
        engine: &engine,
        bundle: &bundle,
        jar: &jar,
        keys: req.keys,
        timeout_secs: req.timeout_secs,
        memory_limit_mb: req.memory_limit_mb,
        work: work.path(),
        out: &out,
    };
    let mut runs = Vec::new();
    for &allocator in &req.allocators {
        let spec = cluster_spec(
            allocator,
            &plan,
            req.rest_port,
            req.memory_limit_mb,
            jemalloc.as_deref(),
        );
        runs.push(run_allocator(&ctx, allocator, &spec)?);
    }
    drop(engine);
    let report = Report::new(
        &bundle.image,
        driver,
        &plan,
        req.memory_limit_mb,
        runs,
        started,
    );
    report.write(&out)?;
    Ok(report)
}

/// Makes `--report` and returns it absolute [default: target/flink-jemalloc/e2e-report].
fn report_dir(req: &Request) -> Result<PathBuf> {
    let out = req
        .report
        .clone()
        .unwrap_or_else(|| crate::project::root().join("target/flink-jemalloc/e2e-report"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(std::path::absolute(&out)?)
}

/// Resolves the scenario for the image's Flink and compiles the job for it (the 2.x job
/// with `--release` of the image's Java).
fn plan_and_job(
    req: &Request,
    scenarios: &scenario::Scenarios,
    bundle: &Bundle,
    work: &Path,
) -> Result<(Plan, PathBuf)> {
    let flink = crate::flink_version::flink_version(&bundle.flink_dist()?)?;
    let (plan, warning) = scenario::resolve(scenarios, &req.scenario, flink, &req.overrides)?;
    if let Some(w) = warning {
        progress::note(format!("warning: {w}"));
    }
    let pace = match plan.mode {
        scenario::Mode::Steady => format!("{} minutes", plan.minutes),
        _ => format!("{} restarts", plan.restarts),
    };
    // The deadline counts from each allocator's start: its cluster's start and the job's
    // submission come before the minutes.
    let needed = plan.minutes * 60 + 120;
    if plan.mode == scenario::Mode::Steady && req.timeout_secs < needed {
        bail!(
            "--minutes {} needs --timeout-secs {needed} or more (the cluster starts first); \
             it is {}",
            plan.minutes,
            req.timeout_secs
        );
    }
    let compiled = flink_job::compile_for(bundle, work)?;
    progress::note(format!(
        "scenario {}: Flink {flink}, --mode {}, {pace}, the job compiled with --release {}",
        plan.scenario,
        flag(&plan.mode),
        compiled.release
    ));
    let jar = compiled.jar;
    Ok((plan, jar))
}

/// Runs one allocator: starts a cluster, submits the job, restarts it and takes samples
/// (`restart_loop`), collects the last dumps, tears the cluster down and analyses the dumps.
fn run_allocator(ctx: &RunContext, allocator: Allocator, spec: &ClusterSpec) -> Result<RunRecord> {
    let out = ctx.out;
    let started = Instant::now();
    let name = allocator.name();
    let step = Step::start(format!(
        "{name}: starting JobManager and TaskManager (--driver {}, TaskManager limit {} MiB)",
        flag(&ctx.driver),
        ctx.memory_limit_mb
    ));
    let logs = out.join("logs").join(name);
    let mut cluster = driver::start(
        ctx.engine,
        ctx.options,
        allocator,
        spec,
        &ctx.work.join(name),
        &logs,
    )?;
    step.done("");
    let mut job = Job::submit(ctx, cluster.as_ref())?;
    let dumps = out.join("dumps").join(name);
    let lp = restart_loop(ctx, allocator, cluster.as_mut(), &mut job, &dumps, started)?;
    // Collect while the TaskManager runs: its JVM deletes RocksDB's JNI library when it
    // exits.
    let last_dir = dumps.join(format!("tm-{}", lp.incarnation));
    if allocator.profiles() {
        restarts::collect_dumps(cluster.as_ref(), &last_dir)?;
    }
    let oom_kills = cluster.taskmanager_memory()?.oom_kills;
    if oom_kills > 0 || lp.unexpected_deaths > 0 {
        progress::note(format!(
            "{name}: {oom_kills} OOM kill(s), {} unexpected TaskManager death(s)",
            lp.unexpected_deaths
        ));
    }
    let timeline = restarts::timeline(ctx, cluster.as_ref(), &job, &lp.samples);
    let _ = cluster.rest().cancel(&job.id);
    drop(cluster);
    let analysis = allocator
        .profiles()
        .then(|| analyse(ctx, allocator, &dumps, &last_dir, &timeline))
        .flatten();
    let per = ctx.plan.mode.per();
    let expected = allocator
        .profiles()
        .then(|| ctx.plan.expect.expected_bytes(lp.cpus))
        .flatten();
    Ok(RunRecord {
        allocator,
        taskmanager_cpus: lp.cpus,
        expected_bytes_per_restart: expected.filter(|_| per == Per::Restart),
        expected_bytes_per_hour: expected.filter(|_| per == Per::Hour),
        restarts: lp.restarts,
        restart_times: timeline.restarts,
        oom_kills,
        growth: growth(&lp.samples, per),
        samples: lp.samples,
        analysis,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads the dumps of the TaskManager that lived longest (it has the most to say) with the
/// image's jeprof, with every site's growth per restart (the dumps are placed by their times
/// among the restarts'), or per hour in `steady` mode; returns None, with a note, when they
/// cannot be read.
fn analyse(
    ctx: &RunContext,
    allocator: Allocator,
    dumps: &Path,
    last_dir: &Path,
    timeline: &restarts::Timeline,
) -> Option<Analysis> {
    // Prefer the directory with the dumps' times, then the one with the most dumps.
    let mut best: Option<((bool, usize), PathBuf)> = None;
    for e in std::fs::read_dir(dumps).into_iter().flatten().flatten() {
        let n = heap_profile::dumps_in(&e.path()).map_or(0, |d| d.len());
        let key = (e.path().join(analyze::DUMP_TIMES).is_file(), n);
        if best.as_ref().is_none_or(|b| key > b.0) {
            best = Some((key, e.path()));
        }
    }
    let dir = best.map(|b| b.1).unwrap_or(last_dir.to_path_buf());
    let dump_times: BTreeMap<String, f64> = std::fs::read(dir.join(analyze::DUMP_TIMES))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let focus = ctx
        .plan
        .expect
        .site
        .as_deref()
        .and_then(|p| regex::Regex::new(p).ok());
    let series = analyze::Series {
        restarts: &timeline.restarts,
        dump_times: &dump_times,
        focus: focus.as_ref(),
        live: &timeline.live,
    };
    let base = base_before_the_job(&dir, &dump_times, &timeline.live);
    match analyze::analyze_in_rootfs(
        ctx.bundle,
        &dir,
        base.as_deref(),
        &ctx.out.join("analysis").join(allocator.name()),
        30,
        match ctx.plan.mode.per() {
            _ if dump_times.is_empty() => analyze::Growth::No,
            Per::Hour => analyze::Growth::PerHour(&dump_times, focus.as_ref()),
            _ => analyze::Growth::PerRestart(&series),
        },
    ) {
        Ok(a) => Some(a),
        Err(e) => {
            progress::note(format!("{}: no analysis: {e:#}", allocator.name()));
            None
        }
    }
}

/// Returns the difference's base: the last dump of the TaskManager's JVM written before the
/// job first opened its state (the first live window's start), when there is one. The first
/// dump comes 2^lg_prof_interval bytes after the JVM started, which on a slow start is
/// after RocksDB opened: a base holding RocksDB at its peak hides what RocksDB grew by.
fn base_before_the_job(
    dir: &Path,
    dump_times: &BTreeMap<String, f64>,
    live: &[(f64, f64)],
) -> Option<String> {
    let open = live.first()?.0;
    let dumps = heap_profile::main_process(&heap_profile::dumps_in(dir).ok()?).0;
    before(&dumps, dump_times, open)
}

/// Returns the last of `dumps` (in order) written before `t`.
fn before(dumps: &[String], dump_times: &BTreeMap<String, f64>, t: f64) -> Option<String> {
    dumps
        .iter()
        .rfind(|d| dump_times.get(*d).is_some_and(|w| *w < t))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_the_last_dump_before_the_job_opened_its_state() {
        let dumps: Vec<String> = (0..4)
            .map(|i| format!("jeprof.out.1.{i}.i{i}.heap"))
            .collect();
        let times: BTreeMap<String, f64> = dumps
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), 10.0 * i as f64))
            .collect();
        assert_eq!(
            before(&dumps, &times, 25.0).as_deref(),
            Some("jeprof.out.1.2.i2.heap")
        );
        assert_eq!(
            before(&dumps, &times, 0.0),
            None,
            "none before: the first then"
        );
    }

    #[test]
    fn each_allocator_gets_its_environment() {
        let overrides = scenario::Overrides {
            lg_prof_interval: Some(26),
            ..Default::default()
        };
        let (plan, _) = scenario::resolve(
            &scenario::load_default().unwrap(),
            "restart-growth",
            "1.10.3".parse().unwrap(),
            &overrides,
        )
        .unwrap();
        let lib = Some("/opt/jemalloc/lib/libjemalloc.so.2");
        let j = cluster_spec(Allocator::Jemalloc, &plan, 8081, 2048, lib);
        assert_eq!(j.taskmanager_env[0].1, "/opt/jemalloc/lib/libjemalloc.so.2");
        assert!(j.taskmanager_env[1]
            .1
            .contains("prof_prefix:/jeprof/jeprof.out"));
        assert!(j.taskmanager_env[1].1.contains("lg_prof_interval:26"));
        assert!(j.taskmanager_env[1].1.contains("lg_prof_sample:17"));
        assert_eq!(j.taskmanager_memory_limit, 2048 << 20);
        let env = |a| allocator_env(a, &plan, lib);
        assert!(env(Allocator::Glibc).is_empty());
        assert_eq!(
            env(Allocator::GlibcArenas2),
            vec![("MALLOC_ARENA_MAX".to_string(), "2".to_string())]
        );
        assert_eq!(env(Allocator::JemallocNonprof)[1].1, "prof:false");
        assert!(j
            .conf
            .iter()
            .any(|(k, v)| k == "state.backend" && v == "rocksdb"));
        assert_eq!(
            Allocators::expand(&[Allocators::Glibc, Allocators::All]),
            vec![
                Allocator::Glibc,
                Allocator::Jemalloc,
                Allocator::JemallocNonprof,
                Allocator::GlibcArenas2
            ]
        );
    }
}
