//! `cargo xtask e2e --driver chroot` on a profiled image built from the fixtures: the
//! RocksDB job restarts inside one TaskManager with the image's jemalloc preloaded, the
//! heap dumps are read by the image's jeprof, and the report names rocksdb frames.

mod support;

use serde_json::Value;
use support::{stderr, stdout, xtask};

#[test]
fn e2e_chroot_reports_rocksdb_growth() {
    let work = tempfile::tempdir().unwrap();
    let layout = support::profiled_image(work.path());
    // Kept after the test (cargo's per-target scratch directory) for a look at the report.
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-report");
    let out = xtask(&[
        "e2e",
        "--driver",
        "chroot",
        "--image",
        layout.to_str().unwrap(),
        "--restarts",
        "4",
        "--fail-every-ms",
        "8000",
        "--lg-prof-interval",
        "26",
        "--rest-port",
        "18082",
        "--report",
        report.to_str().unwrap(),
        "--timeout-secs",
        "400",
    ]);
    assert!(out.status.success(), "e2e failed:\n{}", stderr(&out));
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(r["restarts"].as_u64().unwrap() >= 4, "{r}");
    assert!(r["dumps"].as_array().unwrap().len() >= 2, "{r}");
    assert_eq!(r["rocksdb_in_diff"], true);
    assert!(
        r["samples"].as_array().unwrap().len() >= 5,
        "a sample at start and at each restart: {r}"
    );
    assert!(r["samples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["rss_kb"].as_u64().unwrap() > 100_000));
    for f in [
        "report.json",
        "summary.md",
        "jeprof-last.txt",
        "jeprof-diff.txt",
        "jeprof-diff.svg",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let diff = std::fs::read_to_string(report.join("jeprof-diff.txt")).unwrap();
    assert!(diff.contains("rocksdb::"), "{diff}");
    assert!(std::fs::read_to_string(report.join("jeprof-diff.svg"))
        .unwrap()
        .contains("<svg"));
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        summary.contains("| restart | seconds | TaskManager RSS (MB) |"),
        "{summary}"
    );
}
