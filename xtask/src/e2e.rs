//! `cargo xtask e2e --driver chroot`: the RocksDB restart scenario on a profiled image, on
//! this machine. The image's OCI layout is unpacked with umoci; JobManager and TaskManager
//! run chrooted (see `flink_cluster`), the TaskManager with the image's jemalloc preloaded
//! and profiling on; the job (compiled against the image's flink-dist) fails every
//! `--fail-every-ms`; at each restart the TaskManager's RSS is sampled; the heap dumps are
//! analysed with the image's own jeprof inside the rootfs; a report directory is written.
//! The verdict fails unless enough restarts happened, at least two dumps were analysed, and
//! the difference between the first and last dump names `rocksdb::` frames.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use crate::flink_cluster::{bundle_env, ChrootCluster, ClusterSpec};
use crate::flink_job;
use crate::progress::{self, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// JobManager and TaskManager chrooted into the unpacked image (no Kubernetes).
    Chroot,
}

#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    /// The profiled image as an OCI layout directory (what `cargo xtask image` writes).
    #[arg(long)]
    pub image: PathBuf,
    #[arg(long, value_enum, default_value = "chroot")]
    pub driver: Driver,
    /// Restarts to observe before the verdict.
    #[arg(long, default_value_t = 6)]
    pub restarts: u64,
    /// Injected failure period.
    #[arg(long, default_value_t = 15_000)]
    pub fail_every_ms: u64,
    /// jemalloc writes a dump every 2^N bytes allocated.
    #[arg(long, default_value_t = 28)]
    pub lg_prof_interval: u32,
    /// REST port of the JobManager (on loopback).
    #[arg(long, default_value_t = 8081)]
    pub rest_port: u16,
    /// Report directory [default: target/flink-jemalloc/e2e-report].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub restart: u64,
    pub seconds: f64,
    pub rss_kb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub driver: String,
    pub restarts: u64,
    pub samples: Vec<Sample>,
    pub dumps: Vec<String>,
    pub rss_growth_kb_per_restart: Option<f64>,
    pub top_last: Vec<String>,
    pub top_diff: Vec<String>,
    pub rocksdb_in_diff: bool,
    pub seconds_to_verdict: f64,
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Least-squares slope of RSS over restart number.
pub fn growth_per_restart(samples: &[Sample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.restart as f64).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.rss_kb as f64).sum::<f64>() / n;
    let sxx: f64 = samples
        .iter()
        .map(|s| (s.restart as f64 - mx).powi(2))
        .sum();
    let sxy: f64 = samples
        .iter()
        .map(|s| (s.restart as f64 - mx) * (s.rss_kb as f64 - my))
        .sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Dump files `jeprof.out.<pid>.<seq>.i<seq>.heap`, by sequence number.
pub fn sorted_dumps(names: &[String]) -> Vec<String> {
    let seq = |n: &str| {
        n.split('.')
            .nth(3)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let mut v: Vec<String> = names
        .iter()
        .filter(|n| n.ends_with(".heap"))
        .cloned()
        .collect();
    v.sort_by_key(|n| seq(n));
    v
}

/// The allocation lines of a `jeprof --text` report (after `Total:`), at most `n`.
pub fn top_lines(report: &str, n: usize) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("Total:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| l.trim().to_string())
        .collect()
}

pub fn run(args: E2eArgs) -> Result<()> {
    let report = e2e(&args)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn e2e(args: &E2eArgs) -> Result<Report> {
    let started = Instant::now();
    let out = args
        .report
        .clone()
        .unwrap_or_else(|| crate::project::root().join("target/flink-jemalloc/e2e-report"));
    std::fs::create_dir_all(&out)?;
    let work = tempfile::Builder::new().prefix(".e2e-").tempdir_in(&out)?;
    let sh = Shell::new()?;

    // The image, unpacked.
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(args.image.join("index.json"))
            .with_context(|| format!("{} is not an OCI layout", args.image.display()))?,
    )?;
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .context("the layout's index names no image (org.opencontainers.image.ref.name)")?
        .to_string();
    let bundle = work.path().join("bundle");
    let image = format!("{}:{tag}", args.image.display());
    let step = Step::start(format!("unpacking {image}"));
    cmd!(sh, "umoci unpack --image {image} {bundle}")
        .quiet()
        .run()
        .context("umoci unpack (apt-get install umoci)")?;
    step.done("");
    let rootfs = bundle.join("rootfs");
    let env = bundle_env(&bundle)?;
    let jemalloc = env
        .iter()
        .find_map(|e| e.strip_prefix("JEMALLOC_PATH="))
        .context("the image has no JEMALLOC_PATH: is it a profiled image?")?
        .to_string();
    let dist = std::fs::read_dir(rootfs.join("opt/flink/lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flink-dist"))
        })
        .context("no flink-dist jar in /opt/flink/lib")?;
    let jar = flink_job::compile(&dist, work.path())?;
    let dumps_dir = rootfs.join("tmp/jeprof");
    std::fs::create_dir_all(&dumps_dir)?;
    cmd!(sh, "chown 9999:9999 {dumps_dir}").quiet().run()?;

    // The cluster, the job, the restarts.
    let mut spec = ClusterSpec::rocksdb(args.rest_port);
    spec.taskmanager_env = vec![
        ("LD_PRELOAD".into(), jemalloc.clone()),
        (
            "MALLOC_CONF".into(),
            format!("prof:true,lg_prof_interval:{},lg_prof_sample:17,prof_prefix:/tmp/jeprof/jeprof.out", args.lg_prof_interval),
        ),
    ];
    let step = Step::start("starting JobManager and TaskManager");
    let cluster = ChrootCluster::start(&bundle, &spec, &out.join("logs"))?;
    step.done("");
    let tm = cluster
        .taskmanager_pid()
        .context("no TaskManager process")?;
    let jar_id = cluster.rest.upload(&jar)?;
    let job_args: Vec<String> = vec!["--fail-every-ms".into(), args.fail_every_ms.to_string()];
    let job = cluster
        .rest
        .run(&jar_id, flink_job::MAIN_CLASS, &job_args, 1)?;
    cluster
        .rest
        .wait_for_state(&job, &["RUNNING"], Duration::from_secs(120))?;
    let running = Instant::now();
    let step = Step::start(format!("observing {} restarts", args.restarts));
    let mut samples = vec![Sample {
        restart: 0,
        seconds: 0.0,
        rss_kb: rss_kb(tm).unwrap_or(0),
    }];
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut restarts = 0;
    while restarts < args.restarts {
        if Instant::now() > deadline {
            bail!(
                "only {restarts} of {} restarts within {}s",
                args.restarts,
                args.timeout_secs
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        let r = cluster.rest.restarts(&job)?;
        if r > restarts {
            restarts = r;
            let rss = rss_kb(tm).context("the TaskManager died (OOM-killed?)")?;
            samples.push(Sample {
                restart: r,
                seconds: running.elapsed().as_secs_f64(),
                rss_kb: rss,
            });
            progress::note(format!("restart {r}: TaskManager RSS {} MB", rss / 1024));
        }
    }
    step.done("");
    // The dumps written while the job ran: those after the cancel see RocksDB closed.
    let names: Vec<String> = std::fs::read_dir(&dumps_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // RocksDB's JNI library is unpacked to /tmp at run time and deleted when the JVM exits:
    // save it now, while the dumps' MAPPED_LIBRARIES still point at it.
    let kept = out.join("dumps");
    if kept.exists() {
        std::fs::remove_dir_all(&kept)?;
    }
    std::fs::create_dir_all(&kept)?;
    let mut libs = Vec::new();
    for e in std::fs::read_dir(rootfs.join("tmp"))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("rocksdb-lib-") {
            let (from, dest) = (e.path(), kept.join(e.file_name()));
            cmd!(sh, "cp -a {from} {dest}").quiet().run()?;
            libs.push((dest, e.path()));
        }
    }
    cluster.rest.cancel(&job)?;
    drop(cluster);
    // Put them back where the dumps say they were, for jeprof inside the rootfs.
    for (saved, original) in &libs {
        let (from, to) = (format!("{}/.", saved.display()), original);
        std::fs::create_dir_all(to)?;
        cmd!(sh, "cp -a {from} {to}").quiet().run()?;
    }

    // Analysis with the image's own jeprof, inside the rootfs.
    let dumps = sorted_dumps(&names);
    if dumps.len() < 2 {
        bail!(
            "only {} heap dump(s) in {}: lower --lg-prof-interval or run longer",
            dumps.len(),
            dumps_dir.display()
        );
    }
    let java = env
        .iter()
        .find_map(|e| e.strip_prefix("JAVA_HOME="))
        .map(|j| format!("{j}/bin/java"))
        .unwrap_or_else(|| "/usr/bin/java".into());
    let (first, last) = (
        format!("/tmp/jeprof/{}", dumps[0]),
        format!("/tmp/jeprof/{}", dumps[dumps.len() - 1]),
    );
    let step = Step::start(format!("jeprof over {} dumps", dumps.len()));
    let path = "PATH=/opt/jemalloc/bin:/usr/bin:/bin";
    let text_last = cmd!(
        sh,
        "chroot {rootfs} env -i {path} jeprof --text --show_bytes {java} {last}"
    )
    .quiet()
    .ignore_stderr()
    .read()?;
    let base = format!("--base={first}");
    let text_diff = cmd!(
        sh,
        "chroot {rootfs} env -i {path} jeprof --text --show_bytes {base} {java} {last}"
    )
    .quiet()
    .ignore_stderr()
    .read()?;
    let svg = cmd!(
        sh,
        "chroot {rootfs} env -i {path} jeprof --svg --show_bytes {base} {java} {last}"
    )
    .quiet()
    .ignore_stderr()
    .read()?;
    step.done("");
    // Keep the analysed dumps beside the libraries saved above, for analysis elsewhere.
    for d in [&dumps[0], &dumps[dumps.len() - 1]] {
        std::fs::copy(dumps_dir.join(d), kept.join(d))?;
    }
    std::fs::write(out.join("jeprof-last.txt"), &text_last)?;
    std::fs::write(out.join("jeprof-diff.txt"), &text_diff)?;
    std::fs::write(out.join("jeprof-diff.svg"), &svg)?;
    let top_diff = top_lines(&text_diff, 30);
    let rocksdb_in_diff = top_diff
        .iter()
        .filter(|l| !l.starts_with('-'))
        .any(|l| l.contains("rocksdb::"));
    let report = Report {
        image: image.clone(),
        driver: "chroot".into(),
        restarts,
        rss_growth_kb_per_restart: growth_per_restart(&samples),
        samples,
        dumps: dumps.clone(),
        top_last: top_lines(&text_last, 15),
        top_diff,
        rocksdb_in_diff,
        seconds_to_verdict: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(out.join("summary.md"), summary(&report))?;
    progress::note(format!(
        "report: {} ({:.0} s to verdict)",
        out.display(),
        report.seconds_to_verdict
    ));
    if !report.rocksdb_in_diff {
        bail!(
            "the top sites of the difference between the first and last dump name no rocksdb:: \
             frames; see {}:\n{}",
            out.join("jeprof-diff.txt").display(),
            report.top_diff.join("\n")
        );
    }
    Ok(report)
}

fn summary(r: &Report) -> String {
    let mut s = format!(
        "# flink-jemalloc e2e ({})\n\nImage: `{}`\n\nRestarts observed: {}; heap dumps: {}; time to verdict: {:.0} s\n\n",
        r.driver, r.image, r.restarts, r.dumps.len(), r.seconds_to_verdict
    );
    s.push_str("| restart | seconds | TaskManager RSS (MB) |\n|---|---|---|\n");
    for x in &r.samples {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} |\n",
            x.restart,
            x.seconds,
            x.rss_kb as f64 / 1024.0
        ));
    }
    if let Some(g) = r.rss_growth_kb_per_restart {
        s.push_str(&format!(
            "\nRSS growth: {:.1} MB per restart (least squares; raw RSS includes the JVM heap)\n",
            g / 1024.0
        ));
    }
    s.push_str("\n## Top allocation sites, last dump minus first (`jeprof --base`)\n\n```\n");
    for l in &r.top_diff {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("```\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_sort_by_sequence_not_text() {
        let names: Vec<String> = [
            "jeprof.out.77.10.i10.heap",
            "jeprof.out.77.2.i2.heap",
            "x.sym",
            "jeprof.out.77.0.i0.heap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            sorted_dumps(&names),
            [
                "jeprof.out.77.0.i0.heap",
                "jeprof.out.77.2.i2.heap",
                "jeprof.out.77.10.i10.heap"
            ]
        );
    }

    #[test]
    fn growth_is_the_least_squares_slope() {
        let s = |restart, rss_kb| Sample {
            restart,
            seconds: 0.0,
            rss_kb,
        };
        assert_eq!(
            growth_per_restart(&[s(0, 100), s(1, 110), s(2, 120)]),
            Some(10.0)
        );
        assert_eq!(growth_per_restart(&[s(0, 100)]), None);
    }

    #[test]
    fn top_lines_follow_total() {
        let r = "Using local file x\nTotal: 100 B\n  50  50.0%  50.0%  50 50.0% rocksdb::Arena::AllocateNewBlock\n  -5  -5.0% 45.0% -5 -5.0% os::malloc\n";
        assert_eq!(top_lines(r, 10).len(), 2);
        assert!(top_lines(r, 10)[0].ends_with("rocksdb::Arena::AllocateNewBlock"));
    }
}
