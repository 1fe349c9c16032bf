//! The engines users run, for real: a Docker engine (the running one, or `dockerd` started
//! here and stopped afterwards) with the profiled fixture image.
//!
//! - `image --load`: the image in the engine under the name `e2e` gives it, its config as
//!   built, `java` with its jemalloc preloaded writing a heap profile that the image's own
//!   jeprof reads in a second container; the docker-archive imported by containerd's `ctr`
//!   the way kind imports it into a node, listed and run.
//! - `e2e --driver docker`: both allocators with the runc e2e's assertions, `--mode tm-kill`,
//!   an OOM kill under a low limit, and a run that fails and one interrupted with Ctrl-C
//!   leaving no container, network, image or work directory behind.
//! - `bench --profiling-cost`, short: the report carries every column.
//!
//! The tests share the host network's ports and the machine's two cores: they run one at
//! a time.

use crate::support::{assert_both_allocators, sh, stderr, stdout, xtask};
use harness::fixtures::docker::engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xtask::docker::{docker_text, image_name};
use xtask::e2e::driver::docker::RUN_LABEL;

fn loaded_name(layout: &Path) -> String {
    image_name(&xtask::oci::layout_ref(layout).unwrap().ref_name)
}

/// Containers and networks any e2e run of this process left, by label.
fn leftovers() -> Vec<String> {
    let filter = format!("label={RUN_LABEL}");
    let mut left: Vec<String> = Vec::new();
    for what in [
        vec!["ps", "--all", "--format", "{{.Names}}", "--filter", &filter],
        vec![
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &filter,
        ],
    ] {
        let out = docker_text(&what).unwrap();
        left.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    left
}

fn e2e_args<'a>(layout: &'a str, report: &'a str, port: &'a str) -> Vec<&'a str> {
    vec![
        "e2e",
        "--driver",
        "docker",
        "--image",
        layout,
        "--report",
        report,
        "--rest-port",
        port,
    ]
}

#[test]
fn image_load_runs_java_with_jemalloc_and_kinds_importer_takes_it() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let layout = crate::support::profiled_image();
    let name = loaded_name(&layout);
    let _ = docker_text(&["image", "rm", "--force", &name]);

    let out = crate::support::rebuild_profiled_image(&["--load"]);
    assert!(out.status.success(), "image --load: {}", stderr(&out));
    assert!(
        stderr(&out).contains("from the cache (no network)"),
        "{}",
        stderr(&out)
    );
    let inspect: Value =
        serde_json::from_str(&docker_text(&["image", "inspect", &name]).unwrap()).unwrap();
    let cfg = &inspect[0]["Config"];
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"JEMALLOC_PATH=/opt/jemalloc/lib/libjemalloc.so.2"),
        "{env:?}"
    );
    let path = env.iter().find(|e| e.starts_with("PATH=")).unwrap();
    assert!(path.ends_with(":/opt/jemalloc/bin"), "{path}");
    assert_eq!(
        cfg["Labels"]["io.github.flink-jemalloc.jemalloc.version"],
        "5.2.1"
    );
    assert_eq!(cfg["Entrypoint"][0], "/docker-entrypoint.sh", "the base's");
    assert_eq!(
        inspect[0]["Id"].as_str().unwrap(),
        xtask::oci::layout_config_digest(&layout).unwrap(),
        "the engine's image is the layout's"
    );

    // java with the image's jemalloc preloaded writes its final profile into the last
    // prof_prefix of MALLOC_CONF (jemalloc takes an option's last value: the kind driver's
    // per-start dump directories rely on it).
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let vol = format!("{}:/out", dir.path().display());
    let run = docker_text(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--volume",
        &vol,
        "--env",
        "LD_PRELOAD=/opt/jemalloc/lib/libjemalloc.so.2",
        "--env",
        "MALLOC_CONF=prof:true,prof_final:true,lg_prof_sample:12,prof_prefix:/out/a/jeprof,prof_prefix:/out/b/jeprof",
        &name,
        "java",
        "-version",
    ]);
    assert!(run.is_ok(), "{run:?}");
    let heaps = |d: &str| -> Vec<String> {
        std::fs::read_dir(dir.path().join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".heap"))
            .collect()
    };
    assert!(heaps("a").is_empty(), "the first prof_prefix is overridden");
    let heap = heaps("b").pop().expect("a heap profile from java");
    let text = docker_text(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--volume",
        &vol,
        &name,
        "sh",
        "-c",
        &format!("jeprof --text \"$JAVA_HOME/bin/java\" /out/b/{heap} 2>&1"),
    ])
    .unwrap();
    assert!(text.contains("Total:"), "{text}");
    assert!(!text.contains("MSWin32"), "{text}");

    // kind's importer: what `kind load image-archive` runs inside its node.
    let archive = dir.path().join("image.docker.tar");
    xtask::oci::layout_to_docker_archive(&layout, &archive, &name, 0).unwrap();
    let sock = [
        "/run/containerd/containerd.sock",
        "/var/run/docker/containerd/containerd.sock",
    ]
    .into_iter()
    .find(|s| Path::new(s).exists())
    .expect("containerd's socket");
    let ctr = format!("ctr --address {sock} --namespace k8s.io");
    let _ = sh(&format!("{ctr} images rm --sync {name}"));
    let names = || -> Vec<String> {
        let (_, listed, _) = sh(&format!("{ctr} images ls --quiet"));
        listed.lines().map(str::to_string).collect()
    };
    let before = names();
    let (ok, o, e) = sh(&format!(
        "{ctr} images import --all-platforms --digests --snapshotter native {}",
        archive.display()
    ));
    assert!(ok, "ctr import: {o}{e}");
    // `--digests` names the image `import-<date>@sha256:…` as well; both names go after,
    // or the content and its unpacked snapshot stay in containerd.
    let added: Vec<String> = names()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(added.contains(&name), "{added:?}");
    let (ok, o, e) = sh(&format!(
        "{ctr} run --rm --snapshotter native --net-host {name} flink-jemalloc-ctr-test \
         /bin/sh -c 'test -f /opt/jemalloc/lib/libjemalloc.so.2 && \"$JAVA_HOME/bin/java\" -version'"
    ));
    let _ = sh(&format!("{ctr} images rm --sync {}", added.join(" ")));
    assert!(
        names().iter().all(|n| !added.contains(n)),
        "the imported images are removed"
    );
    assert!(ok, "the imported image unpacks and runs: {o}{e}");
    assert!(e.contains("version") || o.contains("version"), "{o}{e}");

    docker_text(&["image", "rm", &name]).unwrap();
}

#[test]
fn e2e_docker_attributes_native_memory_to_rocksdb_for_both_allocators() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let layout = crate::support::profiled_image();
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report");
    let (l, r) = (layout.to_str().unwrap(), report.to_str().unwrap());
    let mut args = e2e_args(l, r, "18091");
    args.extend([
        "--allocator",
        "both",
        "--restarts",
        "3",
        "--fail-every-ms",
        "8000",
        "--lg-prof-interval",
        "26",
        "--timeout-secs",
        "400",
    ]);
    let out = xtask(&args);
    assert!(out.status.success(), "e2e failed:\n{}", stderr(&out));
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_both_allocators(&r, &report);
    assert_eq!(r["driver"], "docker");
    for run in r["runs"].as_array().unwrap() {
        assert_eq!(run["oom_kills"], 0, "{run}");
    }
    let svg = std::fs::read_to_string(report.join("memory.svg")).unwrap();
    assert!(
        svg.contains("--driver docker"),
        "the CLI's words in the title"
    );
    for log in ["jobmanager.log", "taskmanager-1.log"] {
        let text = std::fs::read_to_string(report.join("logs/jemalloc").join(log)).unwrap();
        assert!(text.contains("Starting"), "{log}: {text}");
    }
    assert_eq!(leftovers(), Vec::<String>::new());
    assert!(
        xtask::docker::image_id(&loaded_name(&layout)).is_none(),
        "the image e2e loaded is removed"
    );
}

#[test]
fn e2e_docker_kills_the_taskmanager_and_sees_an_oom_kill() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let layout = crate::support::profiled_image();
    let work = tempfile::tempdir().unwrap();
    let (l, report) = (layout.to_str().unwrap(), work.path().join("kill"));
    let r = report.to_str().unwrap();
    let mut args = e2e_args(l, r, "18092");
    args.extend([
        "--allocator",
        "jemalloc",
        "--mode",
        "tm-kill",
        "--restarts",
        "2",
        "--fail-every-ms",
        "5000",
        "--keys",
        "20000",
        "--lg-prof-interval",
        "26",
        "--timeout-secs",
        "400",
    ]);
    let out = xtask(&args);
    let rep: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        out.status.success() && rep["passed"] == true,
        "the tm-kill run failed its verdict: {}",
        rep["verdict"]
    );
    let run = &rep["runs"][0];
    assert_eq!(run["restarts"], 2, "{run}");
    assert_eq!(run["oom_kills"], 0, "a kill is not an OOM kill: {run}");
    for n in 1..=3 {
        let log = report.join(format!("logs/jemalloc/taskmanager-{n}.log"));
        assert!(log.is_file(), "taskmanager-{n}.log");
        // Each TaskManager's dumps were copied before it was killed.
        if n < 3 {
            let dumps = report.join(format!("dumps/jemalloc/tm-{n}"));
            assert!(
                !xtask::heap_profile::dumps_in(&dumps).unwrap().is_empty(),
                "dumps of TaskManager {n}"
            );
        }
    }
    assert_eq!(leftovers(), Vec::<String>::new());

    // Over a limit below what the job needs, the kernel OOM-kills the TaskManager: docker
    // inspect says so, and it is replaced as a pod would be.
    let report = work.path().join("oom");
    let r = report.to_str().unwrap();
    let mut args = e2e_args(l, r, "18093");
    args.extend([
        "--allocator",
        "glibc",
        // The TaskManager starts with about 750 MB resident (its heap is pre-touched);
        // RocksDB's memory for three million keys takes it over the limit.
        "--memory-limit-mb",
        "820",
        "--keys",
        "3000000",
        "--restarts",
        "1",
        "--fail-every-ms",
        "600000",
        "--timeout-secs",
        "240",
    ]);
    let out = xtask(&args);
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let run = &rep["runs"][0];
    assert!(
        run["oom_kills"].as_u64().unwrap() >= 1,
        "{run}\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("the TaskManager died"),
        "{}",
        stderr(&out)
    );
    assert!(
        report.join("logs/glibc/taskmanager-2.log").is_file(),
        "replaced"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// A run that fails and one interrupted with Ctrl-C leave no container, network, image or
/// work directory; then a run on the same report directory works.
#[test]
fn e2e_docker_leaves_nothing_when_it_fails_or_is_interrupted() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let layout = crate::support::profiled_image();
    let name = loaded_name(&layout);
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("r");
    let (l, r) = (layout.to_str().unwrap(), report.to_str().unwrap());
    let work_dirs = |report: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(report)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(".e2e-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };

    // Fails: a TaskManager limit far below what the JVM needs to start, on a user-defined
    // network (created, then removed).
    let mut args = e2e_args(l, r, "18094");
    args.extend([
        "--allocator",
        "glibc",
        "--memory-limit-mb",
        "200",
        "--docker-network",
        "flink-jemalloc-test",
    ]);
    let out = xtask(&args);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("TaskManager container") && err.contains("exited"),
        "{err}"
    );
    assert!(
        report.join("logs/glibc/taskmanager-1.log").is_file(),
        "the dead TaskManager's log is kept"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
    assert!(docker_text(&["network", "inspect", "flink-jemalloc-test"]).is_err());
    assert!(xtask::docker::image_id(&name).is_none(), "{err}");
    assert_eq!(work_dirs(&report), Vec::<PathBuf>::new());

    // Interrupted: SIGINT once the TaskManager container runs.
    let mut args = e2e_args(l, r, "18095");
    args.extend(["--allocator", "jemalloc", "--restarts", "50"]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&args)
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("interrupted.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !leftovers().iter().any(|c| c.contains("-taskmanager-1")) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no TaskManager started"
        );
        assert!(child.try_wait().unwrap().is_none(), "e2e ended early");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    sh(&format!("kill -INT {}", child.id()));
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(work.path().join("interrupted.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted: tearing down"), "{log}");
    assert_eq!(leftovers(), Vec::<String>::new(), "{log}");
    assert!(xtask::docker::image_id(&name).is_none(), "{log}");
    assert_eq!(work_dirs(&report), Vec::<PathBuf>::new(), "{log}");

    // A run afterwards, on the same report directory and port, works.
    let mut args = e2e_args(l, r, "18095");
    args.extend([
        "--allocator",
        "glibc",
        "--restarts",
        "1",
        "--fail-every-ms",
        "5000",
        "--keys",
        "20000",
    ]);
    let out = xtask(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// `bench --profiling-cost`, short: two configurations, one round, two windows each on the
/// Flink 2.2.1 fixture. The report carries every column for each, the profiled one wrote
/// dumps and the other none, and nothing of the runs is left.
#[test]
fn profiling_cost_reports_every_column() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let layout = crate::support::profiled_image_flink2();
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("cost");
    let out = xtask(&[
        "bench",
        "--profiling-cost",
        "--image",
        layout.to_str().unwrap(),
        "--configs",
        "jemalloc-nonprof,jemalloc-sample17",
        "--repeats",
        "1",
        "--warm-up",
        "15",
        "--window",
        "9",
        "--windows",
        "2",
        "--keys",
        "50000",
        "--rest-port",
        "18093",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    fn cells(l: &str) -> Vec<&str> {
        l.split('|').map(str::trim).collect()
    }
    let header = cells(lines[0]);
    for row in &lines[2..] {
        let c = cells(row);
        assert_eq!(c.len(), header.len(), "{row}");
        // Every column has a figure, but the ratios to glibc, which did not run.
        for (h, v) in header.iter().zip(&c).skip(1).take(header.len() - 2) {
            assert!(*v != "–" || *h == "÷ glibc", "{h}: {row}");
        }
    }
    let c: Value =
        serde_json::from_slice(&std::fs::read(report.join("cost.json")).unwrap()).unwrap();
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(r["throughput"]["mean"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cpu_per_million"]["mean"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["rss_mib"]["mean"].as_f64().unwrap() > 100.0, "{r}");
    }
    assert_eq!(rows[0]["config"], "jemalloc-nonprof");
    assert_eq!(rows[0]["dumps_per_hour"]["mean"], 0.0);
    assert!(rows[1]["dumps_per_hour"]["mean"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["throughput_vs_nonprof"]["stderr"]
        .as_f64()
        .is_some());
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("jemalloc-sample17") && md.contains("throughput.svg"));
    assert!(std::fs::read_to_string(report.join("throughput.svg"))
        .unwrap()
        .contains("jemalloc-nonprof"));
    assert_eq!(leftovers(), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the report: {left:?}");
}
