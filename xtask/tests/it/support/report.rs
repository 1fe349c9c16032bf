//! What every `e2e` report of the RocksDB restart scenario with jemalloc and glibc must
//! show, whichever driver ran it: the checks the driver tests share.

use serde_json::Value;
use std::path::Path;

/// Asserts the report `r` (its JSON) and its directory `report`: passed; a jemalloc then a
/// glibc run, each with at least three restarts and a sample at start and at each of the
/// first three (RSS, cgroup and a native part below RSS) and a native growth fitted; the
/// jemalloc run's dumps analysed with `rocksdb::` frames in the difference and nothing
/// missing, glibc without dumps; `report.json`, `summary.md` and `memory.svg` with a line of
/// native memory and one of RSS per allocator; RocksDB's JNI library kept beside the dumps.
pub fn assert_both_allocators(r: &Value, report: &Path) {
    assert_eq!(r["passed"], true, "{r}");
    let runs = r["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|x| x["allocator"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jemalloc", "glibc"]);
    for run in runs {
        assert!(run["restarts"].as_u64().unwrap() >= 3, "{run}");
        let samples = run["samples"].as_array().unwrap();
        assert_eq!(
            samples.len(),
            4,
            "a sample at start and at each restart: {run}"
        );
        for s in samples {
            assert!(s["rss_kb"].as_u64().unwrap() > 100_000, "{s}");
            assert!(s["cgroup_kb"].as_u64().unwrap() > 100_000, "{s}");
            // Native = RSS − committed heap/non-heap: positive and well below RSS.
            let native = s["native_kb"].as_i64().unwrap();
            assert!(native > 0 && native < s["rss_kb"].as_i64().unwrap(), "{s}");
        }
        assert!(
            run["growth"]["native_kb_per_restart"]["slope"].is_number(),
            "{run}"
        );
    }
    let a = &runs[0]["analysis"];
    assert!(a["dumps"].as_array().unwrap().len() >= 2, "{a}");
    assert_eq!(a["rocksdb_in_diff"], true, "{a}");
    assert_eq!(a["missing_files"].as_array().unwrap().len(), 0, "{a}");
    assert!(runs[1]["analysis"].is_null(), "glibc writes no dumps");
    for f in ["report.json", "summary.md", "memory.svg"] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(report.join("memory.svg")).unwrap();
    assert_eq!(
        svg.matches("<polyline").count(),
        4,
        "native and RSS per allocator"
    );
    let diff = std::fs::read_to_string(report.join("analysis/jemalloc/diff.txt")).unwrap();
    assert!(diff.contains("rocksdb::"), "{diff}");
    // The dump directory, as collect leaves it: dumps plus RocksDB's JNI library under root/.
    let lib = std::fs::read_dir(report.join("dumps/jemalloc/tm-1/root/tmp"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("rocksdb-lib-"))
        .expect("RocksDB's JNI library kept beside the dumps")
        .path()
        .join("librocksdbjni-linux64.so");
    assert!(lib.is_file());
}
