//! The e2e's other restart modes on runc, on the fixture base with glibc's malloc (no
//! profiled image needed): cancel + resubmit over REST, and the TaskManager killed and
//! replaced; a glibc-only run passes on restarts alone (it writes no dumps). And a runc run
//! interrupted with Ctrl-C leaves nothing behind.

use crate::support::{stderr, stdout, xtask};
use harness::fixtures::flink_base;
use serde_json::Value;

/// The runc clusters use the host network (the JobManager's RPC port is Flink's 6123): one
/// at a time.
fn e2e(mode: &str, port: &str, report: &std::path::Path) -> Value {
    let layout = flink_base::flink_base_oci().unwrap();
    let out = xtask(&[
        "e2e",
        "--driver",
        "runc",
        "--allocator",
        "glibc",
        "--mode",
        mode,
        "--image",
        layout.to_str().unwrap(),
        "--restarts",
        "2",
        "--fail-every-ms",
        "5000",
        "--keys",
        "20000",
        "--rest-port",
        port,
        "--report",
        report.to_str().unwrap(),
        "--timeout-secs",
        "300",
    ]);
    assert!(out.status.success(), "e2e --mode {mode}:\n{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn cancel_resubmit_and_taskmanager_kill() {
    let _serial = crate::support::serial();
    let work = tempfile::tempdir().unwrap();
    let r = e2e("cancel-resubmit", "18084", &work.path().join("cancel"));
    assert_eq!(r["plan"]["mode"], "cancel-resubmit");
    let run = &r["runs"][0];
    assert_eq!(run["allocator"], "glibc");
    assert_eq!(run["restarts"], 2, "{run}");
    assert_eq!(run["samples"].as_array().unwrap().len(), 3, "{run}");

    let report = work.path().join("kill");
    let r = e2e("tm-kill", "18085", &report);
    let run = &r["runs"][0];
    assert_eq!(run["restarts"], 2, "{run}");
    assert_eq!(run["oom_kills"], 0, "a kill is not an OOM kill: {run}");
    // Each TaskManager had its own log (and dump volume).
    for n in 1..=3 {
        assert!(
            report
                .join(format!("logs/glibc/taskmanager-{n}.log"))
                .is_file(),
            "taskmanager-{n}.log"
        );
    }
}

/// What the kind driver loads: the layout rewritten as a docker-archive that skopeo reads
/// back with the same layers.
#[test]
fn layout_becomes_a_docker_archive() {
    let _serial = crate::support::serial();
    let layout = flink_base::flink_base_oci().unwrap();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("image.tar");
    xtask::oci::layout_to_docker_archive(&layout, &archive, "localhost/flink-jemalloc:t", 0)
        .unwrap();
    let inspect = |image: String| -> Value {
        let o = std::process::Command::new("skopeo")
            .args(["inspect", &image])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let from_archive = inspect(format!("docker-archive:{}", archive.display()));
    let from_layout = inspect(format!("oci:{}:{}", layout.display(), flink_base::TAG));
    assert_eq!(
        from_archive["Layers"].as_array().unwrap().len(),
        from_layout["Layers"].as_array().unwrap().len()
    );
    assert_eq!(from_archive["Env"], from_layout["Env"]);
}

/// Ctrl-C in the middle of a runc run: every container (and its cgroup) is deleted, no
/// mount or work directory is left, the command exits with 130; a run afterwards works.
#[test]
fn an_interrupted_runc_run_leaves_nothing_and_a_rerun_works() {
    let _serial = crate::support::serial();
    let layout = flink_base::flink_base_oci().unwrap();
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("r");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "e2e",
            "--driver",
            "runc",
            "--allocator",
            "glibc",
            "--restarts",
            "50",
        ])
        .arg("--image")
        .arg(&layout)
        .arg("--report")
        .arg(&report)
        .args(["--rest-port", "18086"])
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let prefix = format!("flink-jemalloc-{}-", child.id());
    let containers = || -> Vec<String> {
        let o = std::process::Command::new("runc")
            .args(["list", "--quiet"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    };
    let started = std::time::Instant::now();
    while !containers().iter().any(|c| c.contains("taskmanager-1")) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "no TaskManager: {}",
            std::fs::read_to_string(work.path().join("log")).unwrap()
        );
        assert!(child.try_wait().unwrap().is_none(), "e2e ended early");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(work.path().join("log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("removing runc containers"), "{log}");
    assert_eq!(containers(), Vec::<String>::new(), "{log}");
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/memory/flink-jemalloc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(report.to_str().unwrap()),
        "a mount under the report is left"
    );
    let left: Vec<_> = std::fs::read_dir(&report)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".e2e-"))
        .collect();
    assert!(left.is_empty(), "the work directory is removed: {log}");

    let r = e2e("cancel-resubmit", "18086", &report);
    assert_eq!(r["runs"][0]["restarts"], 2, "a run afterwards works");
}
