//! `cargo xtask e2e --driver runc` on a profiled image built from the fixtures, with both
//! allocators: the RocksDB job restarts inside one TaskManager, memory is sampled at each
//! restart, the jemalloc run's heap dumps (and RocksDB's JNI library) are kept and read by
//! the image's jeprof, and the report attributes native memory to rocksdb frames (that the
//! profiler sees RocksDB, not that it grows: the growth per restart is reported as measured). Then `cargo xtask analyze` reads
//! the same dump directory the way a user would read dumps copied from a cluster.

use crate::support::{assert_both_allocators, stderr, stdout, xtask};
use serde_json::Value;
use std::path::Path;

#[test]
fn e2e_runc_attributes_native_memory_to_rocksdb_for_both_allocators() {
    let _serial = crate::support::serial();
    let work = tempfile::tempdir().unwrap();
    let layout = crate::support::profiled_image();
    // Kept after the test (cargo's per-target scratch directory) for a look at the report.
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-report");
    let out = xtask(&[
        "e2e",
        "--driver",
        "runc",
        "--allocator",
        "both",
        "--image",
        layout.to_str().unwrap(),
        "--restarts",
        "3",
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
    assert!(
        stderr(&out).contains("s from start to verdict"),
        "{}",
        stderr(&out)
    );
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_both_allocators(&r, &report);
    let svg = std::fs::read_to_string(report.join("memory.svg")).unwrap();
    assert!(svg.contains("glibc native") && svg.contains("jemalloc RSS"));
    assert!(
        std::fs::read_to_string(report.join("analysis/jemalloc/diff.svg"))
            .unwrap()
            .contains("<svg")
    );
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        summary.contains("| allocator | restarts | OOM kills | native MiB/restart"),
        "{summary}"
    );
    let dumps = report.join("dumps/jemalloc/tm-1");

    analyze_by_hand_grows_per_dump(&dumps, &layout, work.path());
    analyze_with_the_runs_times_grows_per_hour(&dumps, &layout);
    analyze_without_the_jni_library_says_why(&dumps, &layout, work.path());
}

/// analyze, as a user runs it on dumps copied by hand from a cluster: no times, so every
/// site's growth per dump, the growing sites first.
fn analyze_by_hand_grows_per_dump(dumps: &Path, layout: &Path, work: &Path) {
    // analyze, as a user runs it on dumps copied by hand from a cluster: no times.
    let by_hand = work.join("by-hand");
    copy_tree(dumps, &by_hand);
    std::fs::remove_file(by_hand.join("dump-times.json")).unwrap();
    let out_dir = work.join("analysis");
    let out = xtask(&[
        "analyze",
        by_hand.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "analyze failed:\n{}", stderr(&out));
    let a: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(a["rocksdb_in_diff"], true, "{a}");
    assert!(std::fs::read_to_string(out_dir.join("diff.txt"))
        .unwrap()
        .contains("rocksdb::"));
    // Without restart times, every site's growth per dump, by jemalloc's sequence numbers.
    assert_eq!(a["growth_per"], "dump", "{a}");
    let sites: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("sites.json")).unwrap())
            .unwrap();
    assert_eq!(sites["per"], "dump");
    let seqs: Vec<u64> = sites["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.len() >= 3 && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    let table = sites["sites"].as_array().unwrap();
    assert!(
        table
            .iter()
            .any(|s| s["site"].as_str().unwrap().contains("rocksdb::")),
        "no rocksdb site among {} sites",
        table.len()
    );
    // The sites that grow (95% interval above zero) first, by their interval's lower end;
    // then the others by slope.
    let lower = |s: &Value| s["growth"]["ci95"][0].as_f64();
    let grows = |s: &Value| lower(s).is_some_and(|lo| lo > 0.0);
    let growing = table.iter().take_while(|s| grows(s)).count();
    assert!(
        table[growing..].iter().all(|s| !grows(s)),
        "growing sites first"
    );
    let lows: Vec<f64> = table[..growing].iter().filter_map(lower).collect();
    assert!(lows.windows(2).all(|w| w[0] >= w[1]), "{lows:?}");
    let slopes: Vec<f64> = table[growing..]
        .iter()
        .map(|s| s["growth"]["slope"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(slopes.windows(2).all(|w| w[0] >= w[1]), "{slopes:?}");
    assert_eq!(
        a["sites"][0], table[0],
        "analysis.json leads with the same site"
    );

    assert!(
        a["verdict"]
            .as_str()
            .unwrap()
            .starts_with("growing steadily: ")
            || a["verdict"]
                .as_str()
                .unwrap()
                .starts_with("no leak: no allocation site"),
        "per dump there is no size to judge a leak by: {a}"
    );
}

/// With the times the run recorded beside the dumps: growth per hour after the warm-up,
/// and a verdict.
fn analyze_with_the_runs_times_grows_per_hour(dumps: &Path, layout: &Path) {
    // With the times the run recorded beside the dumps: growth per hour after the warm-up,
    // and a verdict.
    let out = xtask(&[
        "analyze",
        dumps.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "analyze failed:\n{}", stderr(&out));
    let a: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(a["growth_per"], "hour", "{a}");
    let verdict = a["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("leak: ") || verdict.starts_with("no leak: "),
        "{verdict}"
    );
    assert!(stderr(&out).contains(verdict), "the verdict is said");
    let sites: Value =
        serde_json::from_str(&std::fs::read_to_string(dumps.join("analysis/sites.json")).unwrap())
            .unwrap();
    let ms: Vec<u64> = sites["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ms"].as_u64().unwrap())
        .collect();
    assert_eq!(ms[0], 0, "from the first dump after the warm-up: {ms:?}");
    assert_eq!(
        a["base"], sites["dumps"][0]["dump"],
        "the difference starts there too"
    );
}

/// Without the JNI library the rocksdb frames cannot be named, and analyze says why.
fn analyze_without_the_jni_library_says_why(dumps: &Path, layout: &Path, work: &Path) {
    // Without the JNI library the rocksdb frames cannot be named, and analyze says why.
    let bare = work.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for e in std::fs::read_dir(dumps).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".heap") {
            std::fs::copy(e.path(), bare.join(e.file_name())).unwrap();
        }
    }
    let out = xtask(&[
        "analyze",
        bare.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("librocksdbjni-linux64.so is mapped by the dumps but not in the image"),
        "{}",
        stderr(&out)
    );
    let a: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(a["rocksdb_in_diff"], false, "{a}");
    assert!(bare.join("analysis/diff.txt").is_file());
}

/// Copies the directory tree `from` to `to` (files and directories).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}
