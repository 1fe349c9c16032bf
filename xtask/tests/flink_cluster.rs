//! The e2e scenario's moving parts on real Flink, without Kubernetes: the fixture image
//! unpacked with umoci, JobManager and TaskManager started chrooted through the image's
//! entrypoint, the RocksDB job (compiled against the image's flink-dist) submitted over
//! REST, injected failures restarting it inside the same TaskManager, then cancelled.

use std::process::Command;
use std::time::{Duration, Instant};
use xtask::fixtures::flink_base;
use xtask::flink_cluster::{ChrootCluster, ClusterSpec};

#[test]
fn rocksdb_job_restarts_on_a_chrooted_cluster() {
    let layout = flink_base::flink_base_oci().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let image = format!("{}:{}", layout.display(), flink_base::TAG);
    let unpack = Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let rootfs = bundle.join("rootfs");
    let jar = xtask::flink_job::compile(
        &rootfs.join("opt/flink").join(flink_base::FLINK_DIST_JAR),
        work.path(),
    )
    .unwrap();

    let started = Instant::now();
    let cluster = ChrootCluster::start(
        &bundle,
        &ClusterSpec::rocksdb(18081),
        &work.path().join("logs"),
    )
    .unwrap();
    let overview = cluster.rest.overview().unwrap();
    assert_eq!(overview["flink-version"], "1.10.3");
    assert_eq!(overview["taskmanagers"], 1);
    let tm = cluster.taskmanager_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{tm}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("9999")),
        "the TaskManager runs as flink: {status}"
    );

    let jar_id = cluster.rest.upload(&jar).unwrap();
    let args: Vec<String> = [
        "--keys",
        "2000",
        "--records-per-second",
        "2000",
        "--fail-every-ms",
        "4000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let job = cluster
        .rest
        .run(&jar_id, xtask::flink_job::MAIN_CLASS, &args, 1)
        .unwrap();
    cluster
        .rest
        .wait_for_state(&job, &["RUNNING"], Duration::from_secs(60))
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(150);
    let mut restarts = 0;
    while restarts < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        restarts = cluster.rest.restarts(&job).unwrap();
    }
    assert!(
        restarts >= 2,
        "the injected failures restart the job (restarts: {restarts})"
    );
    let root = cluster.rest.root_exception(&job).unwrap();
    assert!(root.contains("injected failure"), "{root}");
    // RocksDB ran inside the TaskManager: its JNI library was unpacked into the image's /tmp.
    let rocksdb_lib = std::fs::read_dir(rootfs.join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rocksdb-lib-"))
        .any(|e| e.path().join("librocksdbjni-linux64.so").is_file());
    assert!(
        rocksdb_lib,
        "librocksdbjni was not unpacked: RocksDB did not run"
    );
    let cmdline = std::fs::read(format!("/proc/{tm}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("TaskManagerRunner"),
        "the same TaskManager JVM survived the restarts"
    );

    cluster.rest.cancel(&job).unwrap();
    cluster
        .rest
        .wait_for_state(&job, &["CANCELED"], Duration::from_secs(60))
        .unwrap();
    eprintln!(
        "cluster up to {restarts} restarts and cancel: {:.0?}",
        started.elapsed()
    );
}
