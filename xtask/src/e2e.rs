//! `cargo xtask e2e`: the RocksDB restart scenario on a profiled image. The image's OCI
//! layout is unpacked; the job (compiled against the image's flink-dist) runs on a
//! JobManager and a TaskManager started by a driver (`docker` on a Docker engine, `runc` as
//! root without one, `kind` for a Kubernetes cluster);
//! the job restarts (injected failure, cancel + resubmit, or TaskManager kill) and at each
//! restart the TaskManager's memory is sampled: RSS, cgroup usage, and the native part
//! (RSS minus the JVM's committed heap and non-heap, from Flink's metrics; the heap is
//! pre-touched so its resident size is its committed size). Once per allocator (jemalloc
//! preloaded with profiling, glibc's malloc). The jemalloc run's heap dumps, with the
//! libraries they map, are analysed by the image's own jeprof inside the rootfs. The report
//! directory gets report.json, summary.md, memory.svg, and per allocator the dumps and the
//! jeprof outputs. The verdict fails unless every run saw the restarts asked for and the
//! jemalloc run's difference between its first and last dump names `rocksdb::` frames.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::analyze::{self, Analysis};
use crate::bundle::Bundle;
use crate::cluster::{Allocator, Cluster, ClusterSpec, DUMP_DIR};
use crate::docker::{self, LoadedImage};
use crate::docker_cluster::{DockerCluster, DockerOptions};
use crate::flink_job;
use crate::heap_profile;
use crate::kind_cluster::{KindCluster, KindOptions, KindSession};
use crate::plot::{self, Series};
use crate::progress::{self, Step};
use crate::runc_cluster::RuncCluster;
use crate::teardown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// JobManager and TaskManager as containers of a Docker engine (needs access to it).
    Docker,
    /// JobManager and TaskManager as runc containers on this machine (needs root, no engine).
    Runc,
    /// Standalone JobManager/TaskManager deployments on a kind cluster.
    Kind,
}

impl Driver {
    /// The driver when none is asked for: docker when a Docker engine answers, else runc.
    pub fn default_here() -> Driver {
        if docker::engine_answers() {
            Driver::Docker
        } else {
            Driver::Runc
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The job throws every --fail-every-ms; Flink restarts it in the same TaskManager.
    Injected,
    /// Every --fail-every-ms the job is cancelled over REST and submitted again.
    CancelResubmit,
    /// Every --fail-every-ms the TaskManager is killed (SIGKILL) and replaced.
    TmKill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Allocators {
    Jemalloc,
    Glibc,
    /// jemalloc first, then glibc.
    Both,
}

impl Allocators {
    fn list(self) -> Vec<Allocator> {
        match self {
            Allocators::Jemalloc => vec![Allocator::Jemalloc],
            Allocators::Glibc => vec![Allocator::Glibc],
            Allocators::Both => vec![Allocator::Jemalloc, Allocator::Glibc],
        }
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
    #[arg(long, value_enum, default_value = "both")]
    pub allocator: Allocators,
    #[arg(long, value_enum, default_value = "injected")]
    pub mode: Mode,
    /// Restarts to observe per allocator before the verdict.
    #[arg(long, default_value_t = 6)]
    pub restarts: u64,
    /// Period of the failure, cancel or kill.
    #[arg(long, default_value_t = 15_000)]
    pub fail_every_ms: u64,
    /// jemalloc writes a dump every 2^N bytes allocated.
    #[arg(long, default_value_t = 28)]
    pub lg_prof_interval: u32,
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
    #[arg(long, default_value = "flink-jemalloc")]
    pub kind_cluster: String,
    /// docker: a user-defined network (created if missing) where the containers find the
    /// JobManager by name, for engines with a bridge (Docker Desktop) [default: the host
    /// network].
    #[arg(long)]
    pub docker_network: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub restart: u64,
    pub seconds: f64,
    pub rss_kb: u64,
    pub cgroup_kb: Option<u64>,
    pub heap_committed_kb: Option<u64>,
    pub nonheap_committed_kb: Option<u64>,
    pub direct_used_kb: Option<u64>,
    /// RSS minus committed heap and non-heap: malloc'ed memory, thread stacks, direct buffers.
    pub native_kb: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub rss_kb_per_restart: Option<f64>,
    pub native_kb_per_restart: Option<f64>,
    pub cgroup_kb_per_restart: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub allocator: Allocator,
    pub restarts: u64,
    pub oom_kills: u64,
    pub samples: Vec<Sample>,
    pub growth: Growth,
    /// jemalloc only: the dumps analysed with the image's jeprof.
    pub analysis: Option<Analysis>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub driver: Driver,
    pub mode: Mode,
    pub restarts_asked: u64,
    pub memory_limit_mb: u64,
    pub runs: Vec<Run>,
    pub verdict: Vec<String>,
    pub passed: bool,
    pub seconds_to_verdict: f64,
}

/// The command-line name of a value (`runc`, `cancel-resubmit`).
fn flag<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

pub fn growth(samples: &[Sample]) -> Growth {
    let of = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.restart as f64, f(s)?)))
            .collect();
        slope(&pts)
    };
    Growth {
        rss_kb_per_restart: of(&|s| Some(s.rss_kb as f64)),
        native_kb_per_restart: of(&|s| s.native_kb.map(|v| v as f64)),
        cgroup_kb_per_restart: of(&|s| s.cgroup_kb.map(|v| v as f64)),
    }
}

/// What must hold for the e2e to pass; an empty list passes.
pub fn verdict(runs: &[Run], restarts_asked: u64) -> Vec<String> {
    let mut failures = Vec::new();
    for r in runs {
        let a = r.allocator.name();
        if r.restarts < restarts_asked {
            failures.push(format!("{a}: {} of {restarts_asked} restarts", r.restarts));
        }
        if r.allocator == Allocator::Jemalloc {
            match &r.analysis {
                None => failures.push(format!("{a}: no heap dumps analysed")),
                Some(an) if an.dumps.len() < 2 => {
                    failures.push(format!("{a}: only {} dump(s) analysed", an.dumps.len()))
                }
                Some(an) if !an.rocksdb_in_diff => failures.push(format!(
                    "{a}: the top sites of the difference between {} and {} name no rocksdb:: frame",
                    an.base, an.last
                )),
                Some(_) => {}
            }
        }
    }
    failures
}

/// The Flink configuration of every run: RocksDB state, REST on loopback, metrics fresh
/// each second, the TaskManager heap pre-touched (so heap RSS = committed heap, and RSS
/// minus committed heap/non-heap is the native part), heartbeats that notice a dead
/// TaskManager within 10 s.
pub fn cluster_spec(allocator: Allocator, args: &E2eArgs, jemalloc: Option<&str>) -> ClusterSpec {
    let conf = [
        ("state.backend", "rocksdb".to_string()),
        (
            "state.checkpoints.dir",
            "file:///tmp/flink-checkpoints".into(),
        ),
        ("rest.address", "127.0.0.1".into()),
        ("rest.port", args.rest_port.to_string()),
        ("metrics.fetcher.update-interval", "1000".into()),
        ("env.java.opts.taskmanager", "-XX:+AlwaysPreTouch".into()),
        // A killed or OOM-killed TaskManager is noticed in 10 s, not Flink's default 50 s.
        ("heartbeat.interval", "2000".into()),
        ("heartbeat.timeout", "10000".into()),
    ];
    let taskmanager_env = match (allocator, jemalloc) {
        (Allocator::Jemalloc, Some(lib)) => vec![
            ("LD_PRELOAD".to_string(), lib.to_string()),
            (
                "MALLOC_CONF".to_string(),
                format!(
                    "prof:true,lg_prof_interval:{},lg_prof_sample:17,prof_prefix:{DUMP_DIR}/jeprof.out",
                    args.lg_prof_interval
                ),
            ),
        ],
        _ => Vec::new(),
    };
    ClusterSpec {
        conf: conf
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        taskmanager_env,
        taskmanager_memory_limit: args.memory_limit_mb << 20,
        rest_port: args.rest_port,
    }
}

pub fn run(args: E2eArgs) -> Result<()> {
    let report = e2e(&args)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.passed {
        bail!("e2e verdict: {}", report.verdict.join("; "));
    }
    Ok(())
}

/// What the driver needs, checked before any work: the error names what to do.
fn require(driver: Driver) -> Result<()> {
    match driver {
        Driver::Docker => docker::require("--driver docker"),
        Driver::Kind => crate::kind_cluster::require_tools(),
        Driver::Runc => crate::runc_cluster::require(),
    }
}

/// What a driver prepares once per run, for every allocator.
enum Engine {
    Runc,
    /// The image loaded into the Docker engine.
    Docker(LoadedImage),
    /// The kind cluster with the image loaded, and the image's entrypoint.
    Kind(KindSession, Vec<String>),
}

fn prepare(
    driver: Driver,
    args: &E2eArgs,
    layout: &Path,
    work: &Path,
    out: &Path,
) -> Result<Engine> {
    Ok(match driver {
        Driver::Runc => Engine::Runc,
        Driver::Docker => Engine::Docker(LoadedImage::from_layout(layout, work)?),
        Driver::Kind => {
            // kind loads docker-archives: the layout rewritten once, named as e2e names it.
            let name = docker::image_name(&crate::oci::layout_ref(layout)?.ref_name);
            let archive = work.join("image.docker.tar");
            crate::oci::layout_to_docker_archive(layout, &archive, &name, 0)?;
            let config = crate::oci::layout_config(layout)?;
            let entrypoint = config["config"]["Entrypoint"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_else(|| vec!["/docker-entrypoint.sh".to_string()]);
            let session = KindSession::start(&args.kind_cluster, &archive, &name, out, args.keep)?;
            Engine::Kind(session, entrypoint)
        }
    })
}

/// Runs the scenario and writes the report; an `Ok` report may still have failed its verdict.
pub fn e2e(args: &E2eArgs) -> Result<Report> {
    let started = Instant::now();
    let driver = args.driver.unwrap_or_else(Driver::default_here);
    require(driver)?;
    crate::oci::check_image(&args.image)?;
    if args.allocator != Allocators::Glibc && !crate::rootless::is_root() {
        // The dumps are read by the image's jeprof chrooted in it: a user namespace.
        crate::rootless::require_userns()?;
    }
    if args.driver.is_none() {
        progress::note(format!("--driver {}", flag(&driver)));
    }
    let out = args
        .report
        .clone()
        .unwrap_or_else(|| crate::project::root().join("target/flink-jemalloc/e2e-report"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::path::absolute(&out)?;
    let work = tempfile::Builder::new().prefix(".e2e-").tempdir_in(&out)?;
    let work_dir = work.path().to_path_buf();
    let _work_teardown = teardown::on_interrupt(format!("{}", work_dir.display()), move || {
        let _ = std::fs::remove_dir_all(&work_dir);
    });
    let layout = crate::oci::open_image(&args.image, work.path())?;
    let bundle = Bundle::unpack(&layout, &work.path().join("bundle"))?;
    let flink_dist = bundle.flink_dist()?;
    let jemalloc = bundle.env_var("JEMALLOC_PATH").map(str::to_string);
    let allocators = args.allocator.list();
    if allocators.contains(&Allocator::Jemalloc) && jemalloc.is_none() {
        bail!(
            "{} has no JEMALLOC_PATH in its environment: is it a profiled image (cargo xtask image)?",
            args.image.display()
        );
    }
    let jar = flink_job::compile(&flink_dist, work.path())?;
    let engine = prepare(driver, args, &layout, work.path(), &out)?;
    // An earlier report's dumps, analysis and logs give way only now, when this run has
    // everything it needs to replace them.
    for old in ["dumps", "analysis", "logs"] {
        let p = out.join(old);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
    }

    let mut runs = Vec::new();
    for allocator in allocators {
        let spec = cluster_spec(allocator, args, jemalloc.as_deref());
        let ctx = RunContext {
            args,
            driver,
            engine: &engine,
            bundle: &bundle,
            jar: &jar,
            work: work.path(),
            out: &out,
        };
        runs.push(run_allocator(&ctx, allocator, &spec)?);
    }
    drop(engine);

    let verdict = verdict(&runs, args.restarts);
    let report = Report {
        image: bundle.image.clone(),
        driver,
        mode: args.mode,
        restarts_asked: args.restarts,
        memory_limit_mb: args.memory_limit_mb,
        passed: verdict.is_empty(),
        verdict,
        runs,
        seconds_to_verdict: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(out.join("summary.md"), summary(&report))?;
    std::fs::write(out.join("memory.svg"), memory_plot(&report))?;
    progress::note(format!(
        "report: {} — {} in {:.0} s from start to verdict",
        out.display(),
        if report.passed { "PASSED" } else { "FAILED" },
        report.seconds_to_verdict
    ));
    Ok(report)
}

/// What every allocator's run shares.
struct RunContext<'a> {
    args: &'a E2eArgs,
    driver: Driver,
    engine: &'a Engine,
    bundle: &'a Bundle,
    jar: &'a Path,
    work: &'a Path,
    out: &'a Path,
}

fn start_cluster(
    ctx: &RunContext,
    allocator: Allocator,
    spec: &ClusterSpec,
    work: &Path,
    logs: &Path,
) -> Result<Box<dyn Cluster>> {
    Ok(match ctx.engine {
        Engine::Runc => Box::new(RuncCluster::start(&ctx.bundle.dir, spec, work, logs)?),
        Engine::Docker(image) => Box::new(DockerCluster::start(
            &DockerOptions {
                image: image.name.clone(),
                network: ctx.args.docker_network.clone(),
                dumps: work.join("dumps"),
                logs: logs.to_path_buf(),
            },
            spec,
        )?),
        Engine::Kind(session, entrypoint) => Box::new(KindCluster::start(
            &KindOptions {
                kubeconfig: session.kubeconfig.clone(),
                image: session.image.clone(),
                entrypoint: entrypoint.clone(),
                namespace: format!("flink-jemalloc-e2e-{}", allocator.name()),
                allocator,
                keep: ctx.args.keep,
                logs: logs.to_path_buf(),
            },
            spec,
        )?),
    })
}

fn run_allocator(ctx: &RunContext, allocator: Allocator, spec: &ClusterSpec) -> Result<Run> {
    let (args, bundle, out) = (ctx.args, ctx.bundle, ctx.out);
    let started = Instant::now();
    let name = allocator.name();
    let run_work = ctx.work.join(name);
    let dumps_out = out.join("dumps").join(name);
    let step = Step::start(format!(
        "{name}: starting JobManager and TaskManager (--driver {}, TaskManager limit {} MB)",
        flag(&ctx.driver),
        args.memory_limit_mb
    ));
    let logs = out.join("logs").join(name);
    let mut cluster = start_cluster(ctx, allocator, spec, &run_work, &logs)?;
    step.done("");
    let rest_jar = cluster.rest().upload(ctx.jar)?;
    let fail_every = match args.mode {
        Mode::Injected => args.fail_every_ms,
        _ => 0,
    };
    let job_args: Vec<String> = [
        "--fail-every-ms".to_string(),
        fail_every.to_string(),
        "--keys".into(),
        args.keys.to_string(),
    ]
    .to_vec();
    let submit = |c: &dyn Cluster| -> Result<String> {
        let job = c
            .rest()
            .run(&rest_jar, flink_job::MAIN_CLASS, &job_args, 1)?;
        c.rest()
            .wait_for_state(&job, &["RUNNING"], Duration::from_secs(120))?;
        Ok(job)
    };
    let mut job = submit(cluster.as_ref())?;
    let running = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let step = Step::start(format!(
        "{name}: {} restarts (--mode {}, every {} ms)",
        args.restarts,
        flag(&args.mode),
        args.fail_every_ms
    ));
    let mut samples = vec![sample(cluster.as_ref(), 0, running)?];
    let mut restarts = 0;
    let mut incarnation = 1;
    let mut unexpected_deaths = 0;
    while restarts < args.restarts {
        if Instant::now() > deadline {
            progress::note(format!(
                "{name}: only {restarts} of {} restarts within {} s",
                args.restarts, args.timeout_secs
            ));
            break;
        }
        match args.mode {
            Mode::Injected => {
                std::thread::sleep(Duration::from_millis(500));
                let r = cluster.rest().restarts(&job)?;
                if r <= restarts {
                    if cluster.taskmanager_memory()?.rss_kb.is_none() {
                        // Dead without being asked: OOM-killed, most likely. Like a pod,
                        // it is replaced; the job restarts on the new one.
                        unexpected_deaths += 1;
                        progress::note(format!(
                            "{name}: the TaskManager died (OOM kills so far: {}); starting a new one",
                            cluster.taskmanager_memory()?.oom_kills
                        ));
                        let dir = dumps_out.join(format!("tm-{incarnation}"));
                        if allocator == Allocator::Jemalloc {
                            if let Err(e) = cluster.collect(&dir) {
                                progress::note(format!(
                                    "{name}: the dead TaskManager's dumps were not copied: {e:#}"
                                ));
                            }
                        }
                        cluster.replace_taskmanager()?;
                        incarnation += 1;
                    }
                    continue;
                }
                restarts = r;
            }
            Mode::CancelResubmit => {
                std::thread::sleep(Duration::from_millis(args.fail_every_ms));
                cluster.rest().cancel(&job)?;
                cluster
                    .rest()
                    .wait_for_state(&job, &["CANCELED"], Duration::from_secs(60))?;
                job = submit(cluster.as_ref())?;
                restarts += 1;
            }
            Mode::TmKill => {
                std::thread::sleep(Duration::from_millis(args.fail_every_ms));
                if allocator == Allocator::Jemalloc {
                    cluster.collect(&dumps_out.join(format!("tm-{incarnation}")))?;
                }
                let before = cluster.rest().restarts(&job)?;
                cluster.kill_taskmanager()?;
                incarnation += 1;
                cluster
                    .rest()
                    .wait_for_restart(&job, before, Duration::from_secs(150))?;
                cluster
                    .rest()
                    .wait_for_state(&job, &["RUNNING"], Duration::from_secs(120))?;
                restarts += 1;
            }
        }
        let s = sample(cluster.as_ref(), restarts, running)?;
        progress::note(format!(
            "{name}: restart {restarts}: RSS {} MB, native {} MB, cgroup {} MB",
            s.rss_kb / 1024,
            whole_mb(s.native_kb, "?"),
            whole_mb(s.cgroup_kb.map(|v| v as i64), "?"),
        ));
        samples.push(s);
    }
    step.done("");
    // While the TaskManager runs: its JVM deletes RocksDB's JNI library when it exits.
    let last_dir = dumps_out.join(format!("tm-{incarnation}"));
    if allocator == Allocator::Jemalloc {
        cluster.collect(&last_dir)?;
    }
    let oom_kills = cluster.taskmanager_memory()?.oom_kills;
    if oom_kills > 0 || unexpected_deaths > 0 {
        progress::note(format!(
            "{name}: {oom_kills} OOM kill(s), {unexpected_deaths} unexpected TaskManager death(s)"
        ));
    }
    let _ = cluster.rest().cancel(&job);
    drop(cluster);

    let analysis = if allocator == Allocator::Jemalloc {
        // The TaskManager that lived longest has the most to say.
        let mut best: Option<(usize, PathBuf)> = None;
        for e in std::fs::read_dir(&dumps_out)?.flatten() {
            let n = heap_profile::dumps_in(&e.path())?.len();
            if best.as_ref().is_none_or(|b| n > b.0) {
                best = Some((n, e.path()));
            }
        }
        let dir = best.map(|b| b.1).unwrap_or(last_dir);
        match analyze::analyze_in_rootfs(
            &bundle.rootfs(),
            &bundle.java(),
            &dir,
            None,
            &out.join("analysis").join(name),
            30,
        ) {
            Ok(a) => Some(a),
            Err(e) => {
                progress::note(format!("{name}: no analysis: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    Ok(Run {
        allocator,
        restarts,
        oom_kills,
        growth: growth(&samples),
        samples,
        analysis,
        seconds: started.elapsed().as_secs_f64(),
    })
}

const HEAP_COMMITTED: &str = "Status.JVM.Memory.Heap.Committed";
const NONHEAP_COMMITTED: &str = "Status.JVM.Memory.NonHeap.Committed";
const DIRECT_USED: &str = "Status.JVM.Memory.Direct.MemoryUsed";

fn sample(cluster: &dyn Cluster, restart: u64, since: Instant) -> Result<Sample> {
    let mem = cluster.taskmanager_memory()?;
    let rss_kb = mem
        .rss_kb
        .context("the TaskManager is not running (OOM-killed?)")?;
    // A new TaskManager's metrics appear a few seconds after it registered.
    let asked = Instant::now();
    let tm = match cluster.taskmanager_id() {
        Some(id) => Some(id.to_string()),
        None => cluster.rest().taskmanager_ids()?.first().cloned(),
    };
    let metrics = loop {
        let m = match &tm {
            Some(tm) => cluster
                .rest()
                .taskmanager_metrics(tm, &[HEAP_COMMITTED, NONHEAP_COMMITTED, DIRECT_USED])?,
            None => Default::default(),
        };
        if m.contains_key(HEAP_COMMITTED) || asked.elapsed() > Duration::from_secs(15) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let kb = |k: &str| metrics.get(k).map(|v| (*v as u64) / 1024);
    let (heap, nonheap) = (kb(HEAP_COMMITTED), kb(NONHEAP_COMMITTED));
    Ok(Sample {
        restart,
        seconds: since.elapsed().as_secs_f64(),
        rss_kb,
        cgroup_kb: mem.cgroup_bytes.map(|b| b / 1024),
        heap_committed_kb: heap,
        nonheap_committed_kb: nonheap,
        direct_used_kb: kb(DIRECT_USED),
        native_kb: match (heap, nonheap) {
            (Some(h), Some(n)) => Some(rss_kb as i64 - h as i64 - n as i64),
            _ => None,
        },
    })
}

fn color(a: Allocator) -> &'static str {
    match a {
        Allocator::Jemalloc => "#1f77b4",
        Allocator::Glibc => "#d62728",
    }
}

/// TaskManager native memory (solid) and RSS (dashed) against restart, per allocator.
pub fn memory_plot(r: &Report) -> String {
    let mut series = Vec::new();
    for run in &r.runs {
        let mb = |kb: f64| (kb / 1024.0).round();
        series.push(Series {
            label: format!("{} native", run.allocator.name()),
            color: color(run.allocator),
            dashed: false,
            points: run
                .samples
                .iter()
                .filter_map(|s| Some((s.restart as f64, mb(s.native_kb? as f64))))
                .collect(),
        });
        series.push(Series {
            label: format!("{} RSS", run.allocator.name()),
            color: color(run.allocator),
            dashed: true,
            points: run
                .samples
                .iter()
                .map(|s| (s.restart as f64, mb(s.rss_kb as f64)))
                .collect(),
        });
    }
    plot::line_chart(
        &format!(
            "TaskManager memory per restart (--driver {}, --mode {})",
            flag(&r.driver),
            flag(&r.mode)
        ),
        "restart",
        "MB",
        &series,
    )
}

/// kB as whole MB, or `missing`.
fn whole_mb(kb: Option<i64>, missing: &str) -> String {
    kb.map(|v| (v / 1024).to_string())
        .unwrap_or_else(|| missing.to_string())
}

fn mb(kb: Option<f64>) -> String {
    kb.map(|v| format!("{:+.1}", v / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "# flink-jemalloc e2e: {}\n\nImage `{}`, driver {}, mode {}, TaskManager limit {} MB, \
         {} restarts asked; {:.0} s from start to verdict.\n\n![memory](memory.svg)\n\n",
        if r.passed { "passed" } else { "FAILED" },
        r.image,
        flag(&r.driver),
        flag(&r.mode),
        r.memory_limit_mb,
        r.restarts_asked,
        r.seconds_to_verdict
    );
    s.push_str("| allocator | restarts | OOM kills | native MB/restart | RSS MB/restart | cgroup MB/restart |\n|---|---|---|---|---|---|\n");
    for run in &r.runs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            run.allocator.name(),
            run.restarts,
            run.oom_kills,
            mb(run.growth.native_kb_per_restart),
            mb(run.growth.rss_kb_per_restart),
            mb(run.growth.cgroup_kb_per_restart),
        ));
    }
    s.push_str(
        "\nGrowth is the least-squares slope over the samples. Native = RSS − committed heap − \
         committed non-heap (Flink's JVM metrics; the heap is pre-touched, so its resident size \
         is its committed size). Samples are taken within 0.5 s of each restart.\n",
    );
    for run in &r.runs {
        s.push_str(&format!(
            "\n## {}\n\n| restart | s | RSS MB | native MB | cgroup MB |\n|---|---|---|---|---|\n",
            run.allocator.name()
        ));
        for x in &run.samples {
            s.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} |\n",
                x.restart,
                x.seconds,
                x.rss_kb / 1024,
                whole_mb(x.native_kb, "n/a"),
                whole_mb(x.cgroup_kb.map(|v| v as i64), "n/a"),
            ));
        }
        if let Some(a) = &run.analysis {
            s.push_str(&format!(
                "\nTop allocation sites, `{}` minus `{}` (`jeprof --base`, {} dumps):\n\n```\n",
                a.last,
                a.base,
                a.dumps.len()
            ));
            // Lines with nothing allocated at the site itself (`0 0.0% …`) are call-graph
            // noise here; diff.txt has them all.
            for l in a.top_diff.iter().filter(|l| !l.starts_with("0 ")).take(15) {
                s.push_str(l);
                s.push('\n');
            }
            s.push_str("```\n");
        }
    }
    if !r.verdict.is_empty() {
        s.push_str("\n## Verdict failures\n\n");
        for v in &r.verdict {
            s.push_str(&format!("- {v}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_least_squares() {
        assert_eq!(
            slope(&[(0.0, 100.0), (1.0, 110.0), (2.0, 120.0)]),
            Some(10.0)
        );
        assert_eq!(slope(&[(0.0, 100.0)]), None);
        let s = |restart, rss_kb, native_kb| Sample {
            restart,
            rss_kb,
            native_kb,
            ..Default::default()
        };
        let g = growth(&[s(0, 100, Some(10)), s(1, 130, None), s(2, 160, Some(50))]);
        assert_eq!(g.rss_kb_per_restart, Some(30.0));
        assert_eq!(g.native_kb_per_restart, Some(20.0));
        assert_eq!(g.cgroup_kb_per_restart, None);
    }

    fn analysis(dumps: usize, rocksdb: bool) -> Analysis {
        Analysis {
            dumps: (0..dumps)
                .map(|i| format!("jeprof.out.1.{i}.i{i}.heap"))
                .collect(),
            base: "a".into(),
            last: "b".into(),
            top_last: vec![],
            top_diff: vec![],
            rocksdb_in_diff: rocksdb,
            missing_files: vec![],
        }
    }

    fn run(allocator: Allocator, restarts: u64, analysis: Option<Analysis>) -> Run {
        Run {
            allocator,
            restarts,
            oom_kills: 0,
            samples: vec![],
            growth: growth(&[]),
            analysis,
            seconds: 0.0,
        }
    }

    #[test]
    fn verdict_needs_restarts_dumps_and_rocksdb() {
        let good = run(Allocator::Jemalloc, 4, Some(analysis(3, true)));
        assert!(verdict(&[good.clone(), run(Allocator::Glibc, 4, None)], 4).is_empty());
        assert_eq!(verdict(&[run(Allocator::Glibc, 3, None)], 4).len(), 1);
        assert_eq!(verdict(&[run(Allocator::Jemalloc, 4, None)], 4).len(), 1);
        assert_eq!(
            verdict(&[run(Allocator::Jemalloc, 4, Some(analysis(1, true)))], 4).len(),
            1
        );
        let v = verdict(&[run(Allocator::Jemalloc, 4, Some(analysis(3, false)))], 4);
        assert!(v[0].contains("rocksdb::"), "{v:?}");
    }

    #[test]
    fn only_the_jemalloc_taskmanager_is_preloaded() {
        let args = E2eArgs {
            image: "x".into(),
            driver: Some(Driver::Runc),
            allocator: Allocators::Both,
            mode: Mode::Injected,
            restarts: 1,
            fail_every_ms: 1,
            lg_prof_interval: 26,
            memory_limit_mb: 2048,
            keys: 1,
            rest_port: 8081,
            report: None,
            timeout_secs: 1,
            keep: false,
            kind_cluster: "k".into(),
            docker_network: None,
        };
        let lib = Some("/opt/jemalloc/lib/libjemalloc.so.2");
        let j = cluster_spec(Allocator::Jemalloc, &args, lib);
        assert_eq!(j.taskmanager_env[0].1, "/opt/jemalloc/lib/libjemalloc.so.2");
        assert!(j.taskmanager_env[1]
            .1
            .contains("prof_prefix:/jeprof/jeprof.out"));
        assert!(j.taskmanager_env[1].1.contains("lg_prof_interval:26"));
        assert_eq!(j.taskmanager_memory_limit, 2048 << 20);
        assert!(cluster_spec(Allocator::Glibc, &args, lib)
            .taskmanager_env
            .is_empty());
        assert!(j
            .conf
            .iter()
            .any(|(k, v)| k == "state.backend" && v == "rocksdb"));
    }
}
