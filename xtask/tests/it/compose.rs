//! A user's Docker Compose path, end to end, on the Flink 2.2.1 profiled fixture: Flink's
//! own session-mode compose file (JobManager and TaskManager services, `FLINK_PROPERTIES`)
//! with a RocksDB ticker metric on (FLINK-39923's trigger), `cargo xtask deploy --compose`'s
//! override applied with `docker-compose`, a job submitted over REST that fails every 3 s,
//! `collect --follow --docker <project>` running throughout, one OOM kill of the
//! TaskManager by the kernel (its container restarted in place), Ctrl-C for `collect`, a
//! second `collect` into the same directory, then `analyze`: the dumps from before the OOM
//! kill are there, and the verdict names `rocksdb::StatisticsImpl`'s site growing per
//! restart.

use crate::support::{stderr, stdout, xtask};
use harness::fixtures::docker::engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};
use xtask::docker::{docker_text, LoadedImage};
use xtask::e2e::flink_rest::FlinkRest;

/// The JobManager's REST port on this machine.
const REST_PORT: u16 = 18096;

/// Flink's session-mode compose file (docs/content/docs/deployment/resource-providers/
/// standalone/docker.md), with what a RocksDB job needs and the TaskManager's memory limit.
fn compose_file(image: &str) -> String {
    let props = "jobmanager.rpc.address: jobmanager\n\
                 state.backend.type: rocksdb\n\
                 state.backend.rocksdb.metrics.block-cache-hit: true\n\
                 restart-strategy.type: fixed-delay\n\
                 restart-strategy.fixed-delay.attempts: 2147483647\n\
                 restart-strategy.fixed-delay.delay: 500 ms\n\
                 web.exception-history-size: 10000\n\
                 heartbeat.interval: 2000\n\
                 heartbeat.timeout: 10000\n\
                 taskmanager.numberOfTaskSlots: 1\n";
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    format!(
        "version: \"2.2\"\n\
         services:\n\
         \x20 jobmanager:\n\
         \x20   image: {image}\n\
         \x20   ports:\n\
         \x20     - \"127.0.0.1:{REST_PORT}:8081\"\n\
         \x20   command: jobmanager\n\
         \x20   environment:\n\
         \x20     - |\n\
         \x20       FLINK_PROPERTIES=\n{props_jm}\
         \x20 taskmanager:\n\
         \x20   image: {image}\n\
         \x20   depends_on:\n\
         \x20     - jobmanager\n\
         \x20   command: taskmanager\n\
         \x20   scale: 1\n\
         \x20   mem_limit: 2048m\n\
         \x20   memswap_limit: 2048m\n\
         \x20   environment:\n\
         \x20     - |\n\
         \x20       FLINK_PROPERTIES=\n{props_tm}",
        props_jm = indent(props),
        props_tm = indent(props),
    )
}

/// `docker-compose -p PROJECT -f base -f override ARGS`.
fn compose(project: &str, files: &[&Path], args: &[&str]) -> Output {
    let mut c = Command::new("docker-compose");
    c.args(["--ansi", "never", "-p", project]);
    for f in files {
        c.arg("-f").arg(f);
    }
    let o = c
        .args(args)
        .output()
        .expect("docker-compose (ci/install-deps.sh installs it)");
    eprintln!(
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Takes the project down (containers, network) however the test ends.
struct Down<'a> {
    project: String,
    files: Vec<&'a Path>,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        compose(
            &self.project,
            &self.files,
            &["down", "--volumes", "--timeout", "5"],
        );
    }
}

/// The e2e job, compiled against the image's flink-dist by `cargo xtask job`, as a user
/// trying the path on a cluster of their own makes it.
fn job_jar(layout: &Path, work: &Path) -> PathBuf {
    let out = work.join("job");
    let o = xtask(&[
        "job",
        "--image",
        layout.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let jar = PathBuf::from(stdout(&o).trim());
    assert_eq!(jar, out.join("rocksdb-restart-job.jar"));
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(left.len(), 1, "only the jar is left: {left:?}");
    jar
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `collect --follow` in the background, killed if the test ends before it stopped it.
struct Collecting(Child);

impl Drop for Collecting {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_collect(project: &str, out: &Path) -> Collecting {
    Collecting(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "collect",
                "--follow",
                "--docker",
                project,
                "--interval",
                "2",
                "--out",
            ])
            .arg(out)
            .env("CI", "1")
            .spawn()
            .unwrap(),
    )
}

#[test]
fn compose_deploy_follow_and_a_verdict_across_an_oom_kill() {
    let _serial = crate::support::serial();
    let _engine = engine().unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = crate::support::profiled_image_flink2();
    let image = LoadedImage::from_layout(&layout, work.path()).unwrap();
    let jar = job_jar(&layout, work.path());

    // deploy --compose: the override, merged with Flink's compose file by docker-compose.
    let base = work.path().join("docker-compose.yml");
    std::fs::write(&base, compose_file(&image.name)).unwrap();
    let deployed = work.path().join("profiled");
    let o = xtask(&[
        "deploy",
        "--compose",
        "--image",
        &image.name,
        "--sampling",
        "dense",
        "--lg-prof-interval",
        "25",
        "--out",
        deployed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let overlay = deployed.join("docker-compose.profiled.yml");
    let project = format!("fjcompose{}", std::process::id());
    let files = [base.as_path(), overlay.as_path()];
    let config = compose(&project, &files, &["config"]);
    assert!(config.status.success());
    let merged: Value = serde_yaml_ng::from_slice(&config.stdout).unwrap();
    let tm = &merged["services"]["taskmanager"];
    assert_eq!(tm["restart"], "on-failure");
    assert_eq!(tm["entrypoint"][4], "/docker-entrypoint.sh");
    assert_eq!(
        tm["entrypoint"][2].as_str().unwrap(),
        xtask::heap_profile::start_script("/tmp/jeprof").replace('$', "$$"),
        "the start script, each $ escaped from interpolation (`config` writes $$ back)"
    );
    assert_eq!(tm["command"], "taskmanager", "Flink's command kept");
    let env = tm["environment"].to_string();
    assert!(
        env.contains("FLINK_PROPERTIES") && env.contains("lg_prof_interval:25"),
        "{env}"
    );

    let _down = Down {
        project: project.clone(),
        files: files.to_vec(),
    };
    assert!(compose(&project, &files, &["up", "-d"]).status.success());
    let tm_name = format!("{project}_taskmanager_1");

    // collect --follow from the start, the REST address found from the project.
    let out = work.path().join("collected");
    let mut collect = spawn_collect(&project, &out);

    let rest = FlinkRest::new(&format!("http://127.0.0.1:{REST_PORT}"));
    rest.wait_for_taskmanagers(1, Duration::from_secs(180))
        .unwrap();
    let jar_id = rest.upload(&jar).unwrap();
    let args: Vec<String> = ["--fail-every-ms", "3000", "--keys", "100000"]
        .map(String::from)
        .to_vec();
    let job = rest
        .run(&jar_id, xtask::e2e::flink_job::MAIN_CLASS, &args, 1)
        .unwrap();
    let restarts = || rest.restarts(&job).unwrap_or(0);
    wait_for("12 restarts", Duration::from_secs(300), || restarts() >= 12);

    // The kernel's OOM killer takes the TaskManager's JVM (PID 1, made its first choice):
    // a process in the container fills the rest of the memory limit.
    let before_oom = restarts();
    docker_text(&[
        "exec",
        "-u",
        "0",
        &tm_name,
        "sh",
        "-c",
        "echo 1000 > /proc/1/oom_score_adj",
    ])
    .unwrap();
    let filler = docker_text(&[
        "exec",
        "-e",
        "LD_PRELOAD=",
        "-e",
        "MALLOC_CONF=",
        &tm_name,
        "sh",
        "-c",
        "head -c 8G /dev/zero | tail -c 6G > /dev/null",
    ]);
    // It ends with the container: its init, the JVM, was killed.
    assert!(
        filler.is_err(),
        "the memory filler ended without an OOM kill: {filler:?}"
    );
    wait_for(
        "the TaskManager restarted in place",
        Duration::from_secs(120),
        || {
            docker_text(&[
                "inspect",
                "--format",
                "{{.RestartCount}} {{.State.Running}}",
                &tm_name,
            ])
            .map(|s| s.trim() == "1 true")
            .unwrap_or(false)
        },
    );
    wait_for(
        "4 restarts on the new TaskManager",
        Duration::from_secs(300),
        || restarts() >= before_oom + 5,
    );
    std::thread::sleep(Duration::from_secs(5));

    // Ctrl-C: collect stops with everything it copied whole.
    unsafe { libc::kill(collect.0.id() as i32, libc::SIGINT) };
    let status = collect.0.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted");
    the_collection_holds_both_container_starts(&out, before_oom);
    a_second_collect_copies_nothing_twice(&project, &out);
    drop(_down);
    analyze_names_the_leak_per_restart(&out, &layout);
}

/// What the interrupted collection holds: no partial file, the OOM kill (137) in the
/// timeline with dumps before and after it, a dump directory per container start, the
/// job's failures, and RocksDB's JNI library copied while its JVM ran.
fn the_collection_holds_both_container_starts(out: &Path, before_oom: u64) {
    let partials: Vec<PathBuf> = crate::support::files_below(out)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".partial-")
        })
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
    let events = xtask::timeline::read(out).unwrap();
    let death = events
        .iter()
        .find_map(|e| match e {
            xtask::timeline::Event::Death {
                t,
                oom_killed: true,
                exit_code,
                ..
            } => Some((*t, *exit_code)),
            _ => None,
        })
        .expect("the OOM kill recorded");
    assert_eq!(death.1, Some(137));
    let dumps = xtask::timeline::dump_times(&events);
    let before: Vec<&(String, f64)> = dumps.iter().filter(|(_, t)| *t < death.0).collect();
    let after = dumps.len() - before.len();
    assert!(
        before.len() >= 10 && after >= 2,
        "{} before the OOM kill, {after} after",
        before.len()
    );
    for (p, _) in &dumps {
        assert!(out.join(p).is_file(), "{p}");
    }
    let starts: std::collections::BTreeSet<&str> = dumps
        .iter()
        .map(|(p, _)| p.rsplit_once('/').unwrap().0)
        .collect();
    assert_eq!(
        starts.len(),
        2,
        "a directory per container start: {starts:?}"
    );
    assert!(xtask::timeline::failure_times(&events).len() as u64 >= before_oom);
    let libs: Vec<PathBuf> = crate::support::files_below(out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/root/tmp/"))
        .collect();
    assert!(
        !libs.is_empty(),
        "RocksDB's JNI library copied while its JVM ran"
    );
}

/// A second collect continues the directory: nothing copied twice.
fn a_second_collect_copies_nothing_twice(project: &str, out: &Path) {
    let o = xtask(&[
        "collect",
        "--docker",
        project,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let events = xtask::timeline::read(out).unwrap();
    let paths = xtask::timeline::dump_times(&events);
    let unique: std::collections::BTreeSet<&String> = paths.iter().map(|(p, _)| p).collect();
    assert_eq!(unique.len(), paths.len(), "a dump recorded twice");
}

/// analyze: per restart (the failure times), the leak named, and what the RSS grew with,
/// from the memory samples collect recorded.
fn analyze_names_the_leak_per_restart(out: &Path, layout: &Path) {
    let o = xtask(&[
        "analyze",
        out.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(a["growth_per"], "restart");
    let verdict = a["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("leak: ")
            && (verdict.contains("rocksdb::port::cacheline_aligned_alloc")
                || verdict.contains("rocksdb::StatisticsImpl")),
        "{verdict}"
    );
    let chain = a["sites"][0]["chain"].to_string();
    assert!(chain.contains("StatisticsImpl"), "{chain}");
    assert!(verdict.contains("known leak FLINK-39923"), "{verdict}");
    assert!(stderr(&o).contains("leak: "), "the verdict is said");
    // What the RSS grew with, from the memory samples collect recorded.
    let says = a["memory"]["says"].as_str().unwrap_or_default();
    assert!(says.starts_with("RSS "), "{a}");
    assert!(
        a["memory"]["native"]["slope"].as_f64().unwrap() > 0.0,
        "{a}"
    );
    eprintln!("verdict: {verdict}\nmemory: {says}");
}
