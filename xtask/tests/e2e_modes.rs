//! The e2e's other restart modes, on the fixture base with glibc's malloc (no profiled image
//! needed): cancel + resubmit over REST, and the TaskManager killed and replaced. A glibc-only
//! run passes on restarts alone; it writes no dumps.

mod support;

use serde_json::Value;
use support::{stderr, stdout, xtask};
use xtask::fixtures::flink_base;

fn e2e(mode: &str, port: &str, report: &std::path::Path) -> Value {
    let layout = flink_base::flink_base_oci().unwrap();
    let out = xtask(&[
        "e2e",
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
    let work = tempfile::tempdir().unwrap();
    let r = e2e("cancel-resubmit", "18084", &work.path().join("cancel"));
    assert_eq!(r["mode"], "cancel-resubmit");
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
