//! The proof that the tool finds a real leak: FLINK-39923 on the Flink 2.2.1 fixture (the
//! PyPI distribution on bookworm with OpenJDK 17, profiled), run by `e2e --driver docker`.
//!
//! - `--scenario flink-39923` (a RocksDB ticker metric on): the report names
//!   `rocksdb::port::cacheline_aligned_alloc` growing linearly per restart (R² ≥ 0.9, within
//!   a factor of 2 of 475 KiB), with its call chain through `StatisticsImpl` to the JNI
//!   `newStatistics`, and an inferno flame graph of what grew;
//! - `--scenario flink-39923-control`: the same job and restarts without the option; the
//!   site does not grow;
//! - the allocator matrix on a short run: jemalloc, jemalloc-nonprof, glibc, glibc-arenas2,
//!   each with its growth and standard error in the report, the table and the plot.
//!
//! The runs share the host network's ports and the two cores: one at a time.

use crate::support::{stderr, stdout, xtask};
use harness::fixtures::docker::engine;
use serde_json::Value;
use std::path::Path;

const SITE: &str = "rocksdb::port::cacheline_aligned_alloc";

/// `e2e --driver docker` of the Flink 2.2.1 profiled fixture with `extra`; the report.
fn e2e(report: &Path, extra: &[&str]) -> Value {
    let layout = crate::support::profiled_image_flink2();
    let mut args = vec![
        "e2e",
        "--driver",
        "docker",
        "--image",
        layout.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--rest-port",
        "18097",
        "--timeout-secs",
        "500",
    ];
    args.extend(extra);
    let out = xtask(&args);
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    // The output is above (crate::support::xtask prints it); the verdict stays next to the panic,
    // which a CI log's tail keeps.
    assert!(
        out.status.success(),
        "e2e {extra:?} failed: {}; its last words: {}",
        r["verdict"],
        stderr(&out).lines().last().unwrap_or("")
    );
    r
}

fn site<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    run["analysis"]["sites"]
        .as_array()?
        .iter()
        .find(|s| s["site"] == name)
}

#[test]
fn flink_39923_is_found_and_its_control_is_clean() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let work = tempfile::tempdir().unwrap();

    let leak_dir = work.path().join("leak");
    let r = e2e(
        &leak_dir,
        &["--scenario", "flink-39923", "--allocator", "jemalloc"],
    );
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["plan"]["flink"], "2.2.1");
    let run = &r["runs"][0];
    assert!(run["restarts"].as_u64().unwrap() >= 16, "{run}");
    let leak = site(run, SITE).unwrap_or_else(|| panic!("no {SITE} in {run}"));
    let g = &leak["growth"];
    let slope = g["slope"].as_f64().unwrap();
    let expected = run["expected_bytes_per_restart"].as_f64().unwrap();
    assert!(
        (expected / 2.0..=expected * 2.0).contains(&slope),
        "{SITE} grows {slope} bytes per restart, {expected} expected: {leak}"
    );
    assert!(g["r2"].as_f64().unwrap() >= 0.9, "{leak}");
    assert!(g["stderr"].as_f64().unwrap() < slope / 4.0, "{leak}");
    // It grows: the whole 95% interval is above zero.
    assert!(g["ci95"][0].as_f64().unwrap() > 0.0, "{leak}");
    // The expectation is sized for the CPUs the TaskManager saw (8 core slots up to 8).
    let cpus = run["taskmanager_cpus"].as_u64().unwrap();
    let slots = cpus.next_power_of_two().max(8) as f64;
    assert_eq!(
        run["expected_bytes_per_restart"].as_f64(),
        Some(486400.0 * slots / 8.0)
    );
    assert!(
        leak["last_bytes"].as_i64().unwrap() > leak["first_bytes"].as_i64().unwrap() + 4 * 486400,
        "{leak}"
    );
    // The chain from the allocation up to the JNI call that made the Statistics object.
    let chain: Vec<&str> = leak["chain"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(chain[0], SITE, "{chain:?}");
    assert!(
        chain.contains(&"rocksdb::StatisticsImpl::StatisticsImpl"),
        "{chain:?}"
    );
    assert!(
        chain
            .iter()
            .any(|f| f.starts_with("Java_org_rocksdb_Statistics_newStatistics")),
        "{chain:?}"
    );
    let summary = std::fs::read_to_string(leak_dir.join("summary.md")).unwrap();
    assert!(summary.contains("flink-39923 — passed"), "{summary}");
    assert!(summary.contains(&format!("| `{SITE}` |")), "{summary}");
    assert!(
        summary.contains("← rocksdb::StatisticsImpl::StatisticsImpl"),
        "{summary}"
    );
    let flame = std::fs::read_to_string(leak_dir.join("analysis/jemalloc/flame.svg")).unwrap();
    assert!(
        flame.contains("<svg") && flame.contains("<script"),
        "an interactive SVG"
    );
    assert!(
        flame.contains("cacheline_aligned_alloc"),
        "the leak in the flame graph"
    );
    let sites: Value = serde_json::from_str(
        &std::fs::read_to_string(leak_dir.join("analysis/jemalloc/sites.json")).unwrap(),
    )
    .unwrap();
    let restarts: Vec<u64> = sites["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["restart"].as_u64().unwrap())
        .collect();
    assert!(restarts.len() >= 8, "one dump per restart: {restarts:?}");
    assert!(restarts.windows(2).all(|w| w[0] < w[1]), "{restarts:?}");
    // A user's analyze of the same dumps, with their times and no restart times: per hour,
    // the leak first and called one.
    let a = analyze_kept(&leak_dir, work.path());
    assert_eq!(a["growth_per"], "hour", "{a}");
    assert_eq!(a["sites"][0]["site"], SITE, "{a}");
    let verdict = a["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with(&format!("leak: {SITE} grows")),
        "{verdict}"
    );
    // ... and named: the catalogue's FLINK-39923, on the image's Flink 2.2.1.
    assert!(verdict.contains("; known leak FLINK-39923 ("), "{verdict}");
    assert_eq!(a["leaks"]["known"][0]["id"], "FLINK-39923", "{a}");
    assert_eq!(a["leaks"]["known"][0]["site"], SITE, "{a}");

    let control_dir = work.path().join("control");
    let c = e2e(
        &control_dir,
        &[
            "--scenario",
            "flink-39923-control",
            "--allocator",
            "jemalloc",
        ],
    );
    assert_eq!(c["passed"], true, "{c}");
    let run = &c["runs"][0];
    assert!(run["restarts"].as_u64().unwrap() >= 16, "{run}");
    assert!(
        !run["analysis"]["sites"].as_array().unwrap().is_empty(),
        "{run}"
    );
    if let Some(s) = site(run, SITE) {
        let slope = s["growth"]["slope"].as_f64().unwrap_or(0.0);
        assert!(slope < 486400.0 / 4.0, "{SITE} grows in the control: {s}");
    }
    let a = analyze_kept(&control_dir, work.path());
    let verdict = a["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("no leak: "), "the control: {verdict}");
    assert_eq!(
        a["leaks"]["known"],
        serde_json::json!([]),
        "the control: {a}"
    );
}

/// `analyze` of the dumps an e2e report kept (`dumps/jemalloc/tm-1`, with their times),
/// as a user runs it; its analysis.json.
fn analyze_kept(report: &Path, work: &Path) -> Value {
    let dumps = report.join("dumps/jemalloc/tm-1");
    let out = work.join(format!(
        "analyze-{}",
        report.file_name().unwrap().to_string_lossy()
    ));
    let layout = crate::support::profiled_image_flink2();
    let o = xtask(&[
        "analyze",
        dumps.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "analyze: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn the_allocator_matrix_reports_each_allocators_growth_with_its_interval() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("matrix");
    let r = e2e(
        &dir,
        &[
            "--allocator",
            "all",
            "--restarts",
            "3",
            "--fail-every-ms",
            "3000",
            "--lg-prof-interval",
            "26",
        ],
    );
    assert_eq!(r["plan"]["scenario"], "restart-growth");
    let runs = r["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|x| x["allocator"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["jemalloc", "jemalloc-nonprof", "glibc", "glibc-arenas2"]
    );
    for run in runs {
        assert!(run["restarts"].as_u64().unwrap() >= 3, "{run}");
        assert!(run["samples"].as_array().unwrap().len() >= 3, "{run}");
        let native = &run["growth"]["native_kb_per_restart"];
        let slope = native["slope"].as_f64().unwrap();
        let se = native["stderr"].as_f64().expect("a standard error");
        let (lo, hi) = (
            native["ci95"][0].as_f64().unwrap(),
            native["ci95"][1].as_f64().unwrap(),
        );
        // The interval is the slope ± t(0.975, ν) standard errors.
        let t = xtask::fit::t975(native["df"].as_u64().expect("degrees of freedom") as usize);
        assert!(
            (slope - t * se - lo).abs() < 1e-6 && (slope + t * se - hi).abs() < 1e-6,
            "{run}"
        );
        assert!(
            run["taskmanager_cpus"].as_u64().is_some_and(|c| c >= 1),
            "{run}"
        );
    }
    // What made the report: this checkout's commit and the machine.
    assert_eq!(
        r["made_by"]["commit"].as_str().map(str::len),
        Some(40),
        "{}",
        r["made_by"]
    );
    assert!(r["made_by"]["machine"]["engine"]
        .as_str()
        .unwrap()
        .starts_with("docker "));
    assert!(
        runs[0]["analysis"].is_object(),
        "the profiling run is analysed"
    );
    for run in &runs[1..] {
        assert!(
            run["analysis"].is_null(),
            "only the profiling run dumps: {run}"
        );
    }
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    let svg = std::fs::read_to_string(dir.join("memory.svg")).unwrap();
    for name in names {
        assert!(summary.contains(&format!("| {name} | ")), "{summary}");
        assert!(
            svg.contains(&format!("{name} native")),
            "{name} in the plot"
        );
    }
    assert!(summary.contains(" ± "), "growth with its error: {summary}");
    assert!(
        summary.contains("native MiB/restart") && summary.contains("Made by commit "),
        "{summary}"
    );
    for words in ["grows", "shrinks", "no trend shown"] {
        if summary.contains(&format!("] {words} |")) {
            return;
        }
    }
    panic!("no allocator's trend in the table: {summary}");
}
