//! One cache, many processes, and interruptions: two cold `cargo xtask image` runs at once on
//! one cache both succeed with the same digest; a run interrupted with Ctrl-C while it
//! builds jemalloc stops with its children, one SIGKILLed later leaves what it left, and the
//! next run on that cache succeeds with the same digest; a lock whose pinned digests were
//! edited is refused with the package named, and nothing is written.

use crate::support::{stderr, stdout, xtask, ImageInputs};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn args(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

fn digest(out: &std::process::Output) -> String {
    assert!(out.status.success(), "image failed: {}", stderr(out));
    stdout(out).trim().lines().last().unwrap().to_string()
}

/// Starts `xtask ARGS` and returns it once its stderr printed a line containing `marker`
/// (the rest of its stderr goes to `log`).
fn start_until(a: &[String], marker: &str, log: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(a)
        .env("CI", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let mut seen = String::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("xtask ended before `{marker}`:\n{seen}");
        };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no `{marker}`:\n{seen}"
        );
    }
    let log = log.to_path_buf();
    std::thread::spawn(move || {
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        std::fs::write(log, seen + &rest.join("\n")).unwrap();
    });
    child
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn concurrent_and_interrupted_runs_on_one_cache_give_the_same_digest() {
    let _serial = crate::support::serial();
    let inputs = ImageInputs::start();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // Two cold runs at once, one cache (each its own lock file and output).
    let shared = w.join("shared");
    let run_args = |name: &str| -> Vec<String> {
        let mut a = inputs.args_in(&w.join(name));
        let at = a.iter().position(|x| x == "--cache-dir").unwrap();
        a[at + 1] = shared.display().to_string();
        a
    };
    let (a1, a2) = (run_args("one"), run_args("two"));
    let t1 = std::thread::spawn(move || xtask(&args(&a1)));
    let t2 = std::thread::spawn(move || xtask(&args(&a2)));
    let (o1, o2) = (t1.join().unwrap(), t2.join().unwrap());
    let d = digest(&o1);
    assert_eq!(digest(&o2), d, "both runs give the same image");
    let waited = format!("{}{}", stderr(&o1), stderr(&o2));
    assert!(
        waited.contains("another run is working on"),
        "one run waited for the other's work: {waited}"
    );

    // Ctrl-C while jemalloc builds: exit 130, no `make` left running.
    let cache = w.join("interrupted");
    let a = inputs.args_in(&cache);
    let child = start_until(&a, "==> make -j", &w.join("int.log"));
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(500));
    let cache_s = cache.display().to_string();
    assert_eq!(
        processes_naming(&cache_s),
        Vec::<String>::new(),
        "the run's children were stopped with it"
    );

    // SIGKILL in a later run, while it configures jemalloc: nothing is cleaned up (its
    // `configure` may even go on as an orphan), and the next run copes.
    let child = start_until(&a, "==> configure", &w.join("kill.log"));
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed by a signal");
    let out = xtask(&args(&a));
    assert_eq!(digest(&out), d, "the same digest after the interruptions");

    // A lock whose pinned digest was edited: refused, the package named, nothing written.
    let lock = std::fs::read_to_string(cache.join("flink.lock")).unwrap();
    let start = lock.find("[[tools]]").unwrap();
    let sha_at = start + lock[start..].find("sha256 = \"").unwrap() + "sha256 = \"".len();
    let mut edited = lock.clone();
    edited.replace_range(sha_at..sha_at + 64, &"ab".repeat(32));
    let name_at = start + lock[start..].find("name = \"").unwrap() + "name = \"".len();
    let package = &lock[name_at..name_at + lock[name_at..].find('"').unwrap()];
    std::fs::write(w.join("edited.lock"), &edited).unwrap();
    let mut a = inputs.args_in(&cache);
    let at = a.iter().position(|x| x == "--lock-file").unwrap();
    a[at + 1] = w.join("edited.lock").display().to_string();
    let at = a.iter().position(|x| x == "--output").unwrap();
    a[at + 1] = w.join("edited-out").display().to_string();
    a.push("--locked".into());
    let out = xtask(&args(&a));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(package)
            && err.contains("pinned in the lock")
            && err.contains("sha256 mismatch"),
        "{err}"
    );
    assert!(!w.join("edited-out").exists(), "nothing written");
}
