//! The e2e scenario's no-Kubernetes driver on real Flink: the fixture image unpacked with
//! umoci, JobManager and TaskManager as runc containers through the image's entrypoint, the
//! RocksDB job (compiled against the image's flink-dist) submitted over REST, injected
//! failures restarting it inside the same TaskManager, the TaskManager killed and replaced,
//! and a TaskManager over its memory limit OOM-killed and counted.

use harness::fixtures::flink_base;
use std::path::Path;
use std::time::{Duration, Instant};
use xtask::bundle::Bundle;
use xtask::e2e::cluster::{Cluster, ClusterSpec};
use xtask::e2e::driver::runc::RuncCluster;

fn spec(rest_port: u16, limit_mb: u64) -> ClusterSpec {
    let conf = [
        ("state.backend", "rocksdb".to_string()),
        (
            "state.checkpoints.dir",
            "file:///tmp/flink-checkpoints".into(),
        ),
        ("rest.address", "127.0.0.1".into()),
        ("rest.port", rest_port.to_string()),
    ];
    ClusterSpec {
        conf: conf
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        taskmanager_env: vec![],
        taskmanager_memory_limit: limit_mb << 20,
        rest_port,
    }
}

fn job_args(fail_every_ms: u64, keys: u64) -> Vec<String> {
    [
        "--keys".to_string(),
        keys.to_string(),
        "--records-per-second".into(),
        "20000".into(),
        "--value-bytes".into(),
        "1024".into(),
        "--fail-every-ms".into(),
        fail_every_ms.to_string(),
    ]
    .to_vec()
}

fn uid_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string()
}

fn memory_limit_of(pid: u32) -> u64 {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let dir = xtask::e2e::driver::runc::memory_cgroup_dir(&cg).unwrap();
    let v = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(dir.join("memory.max")))
        .unwrap();
    v.trim().parse().unwrap()
}

#[test]
fn rocksdb_job_on_runc_containers_restarts_survives_a_kill_and_records_oom() {
    let _serial = crate::support::serial();
    let layout = flink_base::flink_base_oci().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle = Bundle::unpack(&layout, &work.path().join("bundle")).unwrap();
    let dist = bundle.flink_dist().unwrap();
    let flink = xtask::flink_version::flink_version(&dist).unwrap();
    let jar = xtask::e2e::flink_job::compile(&dist, flink, 8, work.path()).unwrap();
    let logs = work.path().join("logs");

    // 1. Injected failures restart the job inside one TaskManager.
    let started = Instant::now();
    let mut cluster = RuncCluster::start(
        &bundle.dir,
        &spec(18081, 2048),
        &work.path().join("a"),
        &logs.join("a"),
    )
    .unwrap();
    let overview = cluster.rest().overview().unwrap();
    assert_eq!(overview["flink-version"], "1.10.3");
    assert_eq!(overview["taskmanagers"], 1);
    let tm = cluster.taskmanager_pid().unwrap();
    assert!(uid_of(tm).contains("9999"), "the TaskManager runs as flink");
    assert_eq!(memory_limit_of(tm), 2048 << 20, "the bundle's memory limit");
    assert!(cluster.dump_volume().is_dir());

    let jar_id = cluster.rest().upload(&jar).unwrap();
    let job = cluster
        .rest()
        .run(
            &jar_id,
            xtask::e2e::flink_job::MAIN_CLASS,
            &job_args(4000, 2000),
            1,
        )
        .unwrap();
    cluster
        .rest()
        .wait_for_state(&job, &["RUNNING"], Duration::from_secs(60))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut restarts = 0;
    while restarts < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        restarts = cluster.rest().restarts(&job).unwrap();
    }
    assert!(
        restarts >= 2,
        "injected failures restart the job ({restarts})"
    );
    assert!(cluster
        .rest()
        .root_exception(&job)
        .unwrap()
        .contains("injected failure"));
    assert_eq!(cluster.taskmanager_pid(), Some(tm), "same TaskManager");
    let mem = cluster.taskmanager_memory().unwrap();
    assert!(mem.rss_kb.unwrap() > 100_000, "{mem:?}");
    assert!(mem.cgroup_bytes.unwrap() > 100 << 20, "{mem:?}");
    assert_eq!(mem.oom_kills, 0);
    // RocksDB ran in the TaskManager: its JNI library is in the shared rootfs's /tmp.
    let rootfs = bundle.rootfs();
    let rocksdb_lib = std::fs::read_dir(rootfs.join("tmp"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("rocksdb-lib-"));
    assert!(
        rocksdb_lib,
        "librocksdbjni was not unpacked: RocksDB did not run"
    );

    // 2. The TaskManager killed: a new one registers and the job runs again on it.
    let before = cluster.rest().restarts(&job).unwrap();
    cluster.kill_taskmanager().unwrap();
    let new_tm = cluster.taskmanager_pid().unwrap();
    assert_ne!(new_tm, tm);
    assert!(
        !Path::new(&format!("/proc/{tm}")).exists(),
        "the old JVM is gone"
    );
    cluster
        .rest()
        .wait_for_restart(&job, before, Duration::from_secs(150))
        .unwrap();
    cluster
        .rest()
        .wait_for_state(&job, &["RUNNING"], Duration::from_secs(120))
        .unwrap();
    cluster.rest().cancel(&job).unwrap();
    cluster
        .rest()
        .wait_for_state(&job, &["CANCELED"], Duration::from_secs(60))
        .unwrap();
    drop(cluster);
    eprintln!("restarts and a kill: {:.0?}", started.elapsed());

    // 3. Below what the job needs, the kernel OOM-kills the TaskManager and the cgroup says so.
    let cluster = RuncCluster::start(
        &bundle.dir,
        &spec(18083, 520),
        &work.path().join("b"),
        &logs.join("b"),
    )
    .unwrap();
    let jar_id = cluster.rest().upload(&jar).unwrap();
    let _job = cluster
        .rest()
        .run(
            &jar_id,
            xtask::e2e::flink_job::MAIN_CLASS,
            &job_args(0, 2_000_000),
            1,
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut mem = cluster.taskmanager_memory().unwrap();
    while mem.oom_kills == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        mem = cluster.taskmanager_memory().unwrap();
    }
    assert!(mem.oom_kills >= 1, "no OOM kill under 520 MB: {mem:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.taskmanager_memory().unwrap().rss_kb, None);
    eprintln!("up to the OOM kill: {:.0?}", started.elapsed());
}
