//! Bad input, one test per case: each is refused with a one-line error that names the thing
//! and what to do, before any work, and nothing is lost or half-written (an earlier report
//! stays as it was). (A `--base` whose pinned digest the registry does not serve is in
//! tests/registry.rs and tests/image.rs.)

use crate::support::{stderr, xtask};
use std::path::{Path, PathBuf};

/// The one `error:` line, the last line of stderr.
fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "{}", stderr(out));
    let err = stderr(out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "{err}");
    errors[0].to_string()
}

/// A report directory holding an earlier run's dumps.
fn earlier_report(dir: &Path) -> PathBuf {
    let report = dir.join("report");
    std::fs::create_dir_all(report.join("dumps/jemalloc/tm-1")).unwrap();
    std::fs::write(
        report.join("dumps/jemalloc/tm-1/jeprof.out.1.0.i0.heap"),
        "earlier",
    )
    .unwrap();
    report
}

fn assert_report_kept(report: &Path) {
    assert_eq!(
        std::fs::read_to_string(report.join("dumps/jemalloc/tm-1/jeprof.out.1.0.i0.heap")).unwrap(),
        "earlier",
        "the earlier report is kept"
    );
    let work: Vec<_> = std::fs::read_dir(report)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".e2e-"))
        .collect();
    assert!(work.is_empty(), "no work directory is left");
}

fn e2e(image: &Path, report: &Path) -> std::process::Output {
    xtask(&[
        "e2e",
        "--driver",
        "runc",
        "--allocator",
        "glibc",
        "--image",
        image.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ])
}

/// A minimal jemalloc heap profile (what `check_dumps` looks at).
fn heap(maps: bool) -> String {
    let mut s = "heap_v2/524288\n  t*: 1: 64 [0: 0]\n".to_string();
    if maps {
        s.push_str("\nMAPPED_LIBRARIES:\n7f00-7f01 r-xp 00000000 00:01 1 /usr/lib/x.so\n");
    }
    s
}

#[test]
fn an_image_that_is_neither_a_layout_nor_a_docker_archive() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let report = earlier_report(t.path());
    let dir = t.path().join("not-a-layout");
    std::fs::create_dir(&dir).unwrap();
    let err = one_line_error(&e2e(&dir, &report));
    assert!(
        err.contains("is neither an OCI image layout")
            && err.contains("cargo xtask image --output"),
        "{err}"
    );
    assert_report_kept(&report);
    let file = t.path().join("image.tar");
    std::fs::write(&file, b"not a tar at all").unwrap();
    let dumps = t.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    for i in 0..2 {
        std::fs::write(
            dumps.join(format!("jeprof.out.1.{i}.i{i}.heap")),
            heap(true),
        )
        .unwrap();
    }
    let out = xtask(&[
        "analyze",
        dumps.to_str().unwrap(),
        "--image",
        file.to_str().unwrap(),
    ]);
    let err = one_line_error(&out);
    assert!(
        err.contains("image.tar is neither an OCI image layout"),
        "{err}"
    );
    assert!(!dumps.join("analysis").exists(), "nothing written");
}

#[test]
fn a_layout_with_a_corrupted_blob() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let report = earlier_report(t.path());
    let layout = t.path().join("layout");
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(crate::support::profiled_image())
        .arg(&layout)
        .status()
        .unwrap();
    assert!(ok.success());
    let digest = xtask::oci::layout_ref(&layout).unwrap().manifest_digest;
    let (_, _, blobs) = xtask::oci::layout_manifest(&layout, &digest).unwrap();
    let victim = layout
        .join("blobs/sha256")
        .join(blobs[2].trim_start_matches("sha256:"));
    // A hard link into the shared image would damage it too: write a changed copy.
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, bytes).unwrap();
    let err = one_line_error(&e2e(&layout, &report));
    assert!(
        err.contains(&blobs[2]) && err.contains("does not match its digest"),
        "{err}"
    );
    assert!(err.contains("cargo xtask image --output"), "{err}");
    assert_report_kept(&report);
}

#[test]
fn an_image_without_flink() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let report = earlier_report(t.path());
    let layout = t.path().join("empty");
    let image = format!("{}:plain", layout.display());
    for args in [
        vec![
            "init".to_string(),
            "--layout".into(),
            layout.display().to_string(),
        ],
        vec!["new".into(), "--image".into(), image],
    ] {
        let ok = std::process::Command::new("umoci")
            .args(&args)
            .status()
            .unwrap();
        assert!(ok.success(), "umoci {args:?}");
    }
    let err = one_line_error(&e2e(&layout, &report));
    assert!(
        err.contains("is not a Flink image") && err.contains("cargo xtask image --flink"),
        "{err}"
    );
    assert_report_kept(&report);
    // `job` refuses it too, and makes nothing.
    let out = t.path().join("job");
    let err = one_line_error(&xtask(&[
        "job",
        "--image",
        layout.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("is not a Flink image"), "{err}");
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(!out.exists() && left.len() == 2, "{left:?}");
}

#[test]
fn analyze_on_a_directory_without_dumps() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let image = crate::support::profiled_image();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = one_line_error(&xtask(&[
        "analyze",
        empty.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]));
    assert!(err.contains("holds 0 heap dump(s)"), "{err}");
    let missing = t.path().join("missing");
    let err = one_line_error(&xtask(&[
        "analyze",
        missing.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]));
    assert!(err.contains("is not a directory of heap dumps"), "{err}");
    assert!(!empty.join("analysis").exists() && !missing.exists());
}

#[test]
fn analyze_with_a_truncated_dump() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let dumps = t.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    std::fs::write(dumps.join("jeprof.out.1.0.i0.heap"), heap(true)).unwrap();
    std::fs::write(dumps.join("jeprof.out.1.1.i1.heap"), heap(false)).unwrap();
    let image = crate::support::profiled_image();
    let err = one_line_error(&xtask(&[
        "analyze",
        dumps.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]));
    assert!(
        err.contains("jeprof.out.1.1.i1.heap is truncated") && err.contains("copy it again"),
        "{err}"
    );
    assert!(!dumps.join("analysis").exists(), "nothing written");
}

#[test]
fn a_lock_that_does_not_parse() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let lock = t.path().join("flink.lock");
    std::fs::write(&lock, "version = 1\n[base\nreference = \"x\"\n").unwrap();
    let out_dir = t.path().join("out");
    let out = crate::support::rebuild_profiled_image(&[
        "--lock-file",
        lock.to_str().unwrap(),
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    let err = one_line_error(&out);
    assert!(
        err.contains("flink.lock:2: not a lock this tool reads")
            && err.contains("cargo xtask lock"),
        "{err}"
    );
    assert!(!out_dir.exists(), "nothing written");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        "version = 1\n[base\nreference = \"x\"\n",
        "the user's file is left as it is"
    );
}

#[test]
fn profiling_cost_refuses_before_any_work() {
    let _shared = crate::support::shared();
    let t = tempfile::tempdir().unwrap();
    let report = t.path().join("cost");
    let run = |image: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--profiling-cost",
            "--image",
            image,
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend(extra);
        xtask(&args)
    };
    let err = one_line_error(&run("/nonexistent/layout", &[]));
    assert!(
        err.contains("/nonexistent/layout does not exist") && err.contains("cargo xtask image"),
        "{err}"
    );
    let err = one_line_error(&run("/nonexistent/layout", &["--window", "5"]));
    assert!(err.contains("fewer than three samples"), "{err}");
    // clap's own message for a value it does not know, with the choices.
    let out = run("/nonexistent/layout", &["--configs", "jemalloc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("possible values: glibc, glibc-arenas2, jemalloc-nonprof"),
        "{}",
        stderr(&out)
    );
    // Without --profiling-cost or --recut: what it measures, and where the speed figures are.
    let err = one_line_error(&xtask(&["bench"]));
    assert!(
        err.contains("--profiling-cost") && err.contains("cargo harness bench"),
        "{err}"
    );
    assert!(!report.exists(), "nothing written");
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
