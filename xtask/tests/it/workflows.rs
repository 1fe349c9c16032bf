//! The CI workflow files: `actionlint` accepts both (and refuses broken copies, so the check
//! is not vacuous); every `cargo xtask <sub> …` their `run:` steps call exists, its `--help`
//! works and names each flag the workflow passes; the files they name exist; the plan step's
//! command gives what the matrix reads; the plan step, run with bash as the runner runs it,
//! fails where the plan fails and names the locks a first run resolves and hands to the
//! build jobs.

use crate::support::{run_scripts, xtask_commands};
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKFLOWS: [&str; 2] = ["publish.yml", "lock-refresh.yml"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn workflow(name: &str) -> PathBuf {
    root().join(".github/workflows").join(name)
}

fn actionlint(files: &[PathBuf], cwd: &Path) -> (bool, String) {
    let out = Command::new("actionlint")
        .args(["-no-color", "-oneline"])
        .args(files)
        .current_dir(cwd)
        .output()
        .expect("running actionlint (ci/install-deps.sh installs it from PyPI)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn actionlint_accepts_the_workflows_and_refuses_broken_ones() {
    let _shared = crate::support::shared();
    let files: Vec<PathBuf> = WORKFLOWS.iter().map(|w| workflow(w)).collect();
    let (ok, out) = actionlint(&files, &root());
    assert!(ok, "actionlint:\n{out}");

    // Broken copies: an output the plan job does not have, an input checkout does not take,
    // an unquoted variable in a run script (shellcheck's finding, through actionlint).
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).unwrap();
    let publish = std::fs::read_to_string(&files[0]).unwrap();
    let broken = publish.replace(
        "fromJSON(needs.plan.outputs.plan).specs",
        "fromJSON(needs.plan.outputs.plans).specs",
    );
    assert_ne!(broken, publish);
    let broken2 = broken.replace("test \"$starts\" -ge 3", "test $starts -ge 3");
    assert_ne!(broken2, broken);
    std::fs::write(wf.join("publish.yml"), broken2).unwrap();
    let lock = std::fs::read_to_string(&files[1]).unwrap();
    let broken = lock.replace(
        "      - uses: actions/checkout@v5\n",
        "      - uses: actions/checkout@v5\n        with:\n          fetch-deph: 0\n",
    );
    assert_ne!(broken, lock);
    std::fs::write(wf.join("lock-refresh.yml"), broken).unwrap();
    let (ok, out) = actionlint(
        &[wf.join("publish.yml"), wf.join("lock-refresh.yml")],
        dir.path(),
    );
    assert!(!ok, "actionlint accepted broken workflows:\n{out}");
    assert!(out.contains("plans") && out.contains("fetch-deph"), "{out}");
    assert!(
        out.contains("SC2086"),
        "shellcheck did not run (ci/install-deps.sh installs it): {out}"
    );
}

#[test]
fn every_xtask_command_of_the_workflows_exists_with_its_flags() {
    let _shared = crate::support::shared();
    let mut seen = std::collections::BTreeSet::new();
    for w in WORKFLOWS {
        let text = std::fs::read_to_string(workflow(w)).unwrap();
        for script in run_scripts(&text) {
            for cmd in xtask_commands(&script) {
                let sub = cmd
                    .first()
                    .unwrap_or_else(|| panic!("{w}: bare `cargo xtask`"));
                let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
                    .args([sub.as_str(), "--help"])
                    .output()
                    .unwrap();
                let help = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "{w}: `cargo xtask {sub} --help` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                for flag in cmd.iter().filter(|t| t.starts_with("--")) {
                    let flag = flag.split('=').next().unwrap();
                    assert!(
                        help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                        "{w}: `cargo xtask {}` passes {flag}, which `{sub} --help` does not list:\n{help}",
                        cmd.join(" ")
                    );
                }
                seen.insert(sub.clone());
            }
        }
        // Files the workflows name exist.
        for path in [
            "ci/publish.toml",
            "ci/install-deps.sh",
            "ci/kind.yaml",
            "ci/flink-session.yaml",
        ] {
            if text.contains(path) {
                assert!(root().join(path).is_file(), "{w} names {path}");
            }
        }
    }
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(
        seen,
        ["analyze", "collect", "deploy", "e2e", "image", "job", "lock", "publish"],
        "the pipeline's commands"
    );
}

#[test]
fn the_plan_step_gives_the_matrix_and_the_headline() {
    let _shared = crate::support::shared();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["publish", "--config", "ci/publish.toml", "--plan"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one line for $GITHUB_OUTPUT: {stdout}"
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let specs = plan["specs"].as_array().unwrap();
    // Every Flink line from 1.10 on.
    for line in ["1.10", "1.17", "2.2"] {
        assert!(
            specs
                .iter()
                .any(|s| s.as_str().unwrap().starts_with(&format!("{line}."))),
            "{line} in {specs:?}"
        );
    }
    assert!(specs.contains(&plan["headline"]), "{plan}");
    assert!(plan["registry"].as_str().unwrap().contains('.'), "{plan}");
}

#[test]
fn run_script_extraction() {
    let _shared = crate::support::shared();
    let yaml = "steps:\n  - id: plan\n    run: echo \"plan=$(cargo xtask publish --config c --plan)\" >> \"$GITHUB_OUTPUT\"\n  - run: >-\n      cargo xtask publish --locked\n      --flink \"$SPEC\"\n  - run: |\n      for n in a b; do\n        cargo xtask lock --flink \"$n\" \\\n          --locked\n      done\n";
    let cmds: Vec<Vec<String>> = run_scripts(yaml)
        .iter()
        .flat_map(|s| xtask_commands(s))
        .collect();
    assert_eq!(
        cmds,
        [
            vec!["publish", "--config", "c", "--plan"],
            vec!["publish", "--locked", "--flink", "\"$SPEC"],
            vec!["lock", "--flink", "\"$n", "--locked"],
        ]
    );
}

/// The text of one job of a workflow: its `  <name>:` line and the lines below it, up to
/// the next line indented by exactly two spaces (the next job).
fn job(text: &str, name: &str) -> String {
    let head = format!("  {name}:");
    let mut lines = text.lines().skip_while(|l| *l != head);
    let first = lines.next().unwrap_or_else(|| panic!("no job {name}"));
    let body = lines
        .take_while(|l| !(l.starts_with("  ") && !l.starts_with("   ") && !l.trim().is_empty()));
    std::iter::once(first)
        .chain(body)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plan step run as the runner runs it (bash -e, `cargo xtask` being this binary): its
/// outputs are the plan and the specs whose lock is not committed; a plan that fails fails
/// the step, rather than handing `fromJSON` an empty output.
#[test]
fn the_plan_step_fails_where_it_fails_and_names_the_missing_locks() {
    let _shared = crate::support::shared();
    let text = std::fs::read_to_string(workflow("publish.yml")).unwrap();
    let script = run_scripts(&job(&text, "plan"))
        .into_iter()
        .find(|s| s.contains("--plan"))
        .expect("the plan step");
    assert!(!script.contains("echo \"plan=$("), "{script}");
    let run = |script: &str| {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("github_output");
        let out = Command::new("bash")
            .args(["-e", "-c"])
            .arg(format!("cargo() {{ shift; \"$XTASK\" \"$@\"; }}\n{script}"))
            .env("XTASK", env!("CARGO_BIN_EXE_xtask"))
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_REPOSITORY_OWNER", "Acme")
            .current_dir(root())
            .output()
            .unwrap();
        (out, std::fs::read_to_string(&output).unwrap_or_default())
    };
    let (out, outputs) = run(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        outputs
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {outputs}"))
            .to_string()
    };
    let plan: serde_json::Value = serde_json::from_str(&line("plan")).unwrap();
    assert_eq!(plan["registry"], "ghcr.io/acme");
    // Which locks are committed decides the list: exactly the specs without one.
    let missing: Vec<String> = plan["specs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&plan["headline"]))
        .filter_map(|s| s.as_str())
        .filter(|s| {
            // A lock per platform of the spec's the plan publishes.
            let arm64 = plan["platforms"][s]
                .as_str()
                .unwrap_or_else(|| panic!("no platforms of {s} in the plan"))
                .contains("linux/arm64");
            !root().join(format!("images/flink-{s}.lock")).is_file()
                || (arm64
                    && !root()
                        .join(format!("images/flink-{s}-arm64.lock"))
                        .is_file())
        })
        .map(String::from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(line("unlocked"), missing.join(" "));

    let (out, outputs) = run(&script.replace("ci/publish.toml", "ci/no-such.toml"));
    assert!(!out.status.success(), "a failing plan fails the step");
    assert!(!outputs.contains("plan="), "{outputs}");

    // The missing locks are resolved in the plan job and reach both build jobs before they
    // build with --locked.
    let plan_job = job(&text, "plan");
    assert!(plan_job.contains("cargo xtask lock --flink \"$name\" --archive-keyring"));
    assert!(plan_job.contains("upload-artifact") && plan_job.contains("name: locks"));
    assert!(plan_job.contains("$GITHUB_STEP_SUMMARY"));
    for (name, build) in [
        ("e2e", "cargo xtask image"),
        ("publish", "cargo xtask publish"),
    ] {
        let j = job(&text, name);
        let download = j
            .find("name: locks")
            .unwrap_or_else(|| panic!("{name}: no locks"));
        assert!(j.contains("download-artifact"), "{name}");
        assert!(
            download < j.find(build).unwrap(),
            "{name}: the locks before the build"
        );
    }
}
