//! The kind driver's manifests against the Kubernetes schemas, with no cluster:
//! `kubernetes-validate --strict` (PyPI, installed by ci/install-deps.sh; its schemas are
//! bundled, so it runs offline) on each generated object, and on a broken one it must
//! refuse. Also: `ci/kind.yaml` is the kind config it claims to be, `cargo xtask collect`
//! fails with a message that says what to check when no cluster answers, `e2e --driver
//! kind` names what is missing, and `KindSession` against a recording `kind` stand-in.
//! (`deploy`'s files against the schemas are in `deploy.rs`.)

use std::path::Path;
use std::process::{Command, Output};
use xtask::e2e::cluster::{Allocator, ClusterSpec};
use xtask::e2e::driver::kube::{manifests, KubeParams};

/// The Kubernetes version the manifests are checked against.
const K8S_VERSION: &str = "1.33.0";

/// `kubernetes-validate` from the PATH, else the module under `python3 -m`.
fn validator() -> Command {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("kubernetes-validate").is_file()))
        .unwrap_or(false);
    if on_path {
        return Command::new("kubernetes-validate");
    }
    let module = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        module,
        "kubernetes-validate is not installed: run ci/install-deps.sh \
         (python3 -m pip install kubernetes-validate)"
    );
    let mut c = Command::new("python3");
    c.args(["-m", "kubernetes_validate"]);
    c
}

pub(crate) fn validate(files: &[&Path]) -> Output {
    let out = validator()
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn spec() -> ClusterSpec {
    ClusterSpec {
        conf: vec![
            ("state.backend".into(), "rocksdb".into()),
            (
                "state.checkpoints.dir".into(),
                "file:///tmp/flink-checkpoints".into(),
            ),
            ("taskmanager.memory.process.size".into(), "1536m".into()),
        ],
        taskmanager_env: vec![
            (
                "LD_PRELOAD".into(),
                "/opt/jemalloc/lib/libjemalloc.so.2".into(),
            ),
            (
                "MALLOC_CONF".into(),
                "prof:true,lg_prof_interval:28,lg_prof_sample:17,prof_prefix:/jeprof/jeprof.out"
                    .into(),
            ),
        ],
        taskmanager_memory_limit: 2 << 30,
        rest_port: 18081,
    }
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let _shared = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut files = Vec::new();
    for allocator in [Allocator::Jemalloc, Allocator::Glibc] {
        let m = manifests(&KubeParams {
            namespace: "flink-jemalloc-e2e",
            image: "flink:1.10.3",
            cluster_spec: &spec,
            allocator,
            entrypoint: &["/docker-entrypoint.sh".to_string()],
        });
        for (i, obj) in m.objects().into_iter().enumerate() {
            let f = dir.path().join(format!("{}-{i}.json", allocator.name()));
            std::fs::write(&f, serde_json::to_vec_pretty(&obj).unwrap()).unwrap();
            files.push(f);
        }
    }
    let paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let out = validate(&paths);
    assert!(out.status.success(), "the generated manifests are refused");
    // A kind without a schema only warns and exits 0: every object must have passed.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for resource in [
        "namespace/flink-jemalloc-e2e",
        "service/jobmanager",
        "deployment/jobmanager",
        "deployment/taskmanager",
    ] {
        let passed = format!("passed for resource {resource} against version 1.33");
        assert_eq!(
            stdout.matches(&passed).count(),
            2,
            "{resource} validated for both allocators: {stdout}"
        );
    }
    assert!(!stdout.contains("WARN"), "{stdout}");
}

#[test]
fn a_broken_manifest_is_refused() {
    let _shared = crate::support::shared();
    let spec = spec();
    let m = manifests(&KubeParams {
        namespace: "e2e",
        image: "flink:1.10.3",
        cluster_spec: &spec,
        allocator: Allocator::Jemalloc,
        entrypoint: &["/docker-entrypoint.sh".to_string()],
    });
    let tm = m.objects().pop().unwrap();
    assert_eq!(tm["metadata"]["name"], "taskmanager");
    let dir = tempfile::tempdir().unwrap();

    // The memory limit as an object instead of a quantity.
    let mut limit_object = tm.clone();
    limit_object["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] =
        serde_json::json!({"bytes": 2147483648u64});
    let f1 = dir.path().join("limit-object.json");
    std::fs::write(&f1, limit_object.to_string()).unwrap();
    let out = validate(&[&f1]);
    assert!(!out.status.success(), "a memory limit object was accepted");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("memory"),
        "the refusal names the field"
    );

    // A field Kubernetes does not have (`--strict` refuses unknown properties).
    let mut unknown = tm;
    unknown["spec"]["template"]["spec"]["containers"][0]["memoryLimit"] = serde_json::json!("2Gi");
    let f2 = dir.path().join("unknown-field.json");
    std::fs::write(&f2, unknown.to_string()).unwrap();
    let out = validate(&[&f2]);
    assert!(!out.status.success(), "an unknown field was accepted");
}

#[test]
fn kind_config_is_a_one_node_kind_cluster() {
    let _shared = crate::support::shared();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/kind.yaml");
    // PyYAML comes with kubernetes-validate.
    let check = "import sys, yaml\n\
                 d = yaml.safe_load(open(sys.argv[1]))\n\
                 assert d['kind'] == 'Cluster', d\n\
                 assert d['apiVersion'] == 'kind.x-k8s.io/v1alpha4', d\n\
                 assert [n['role'] for n in d['nodes']] == ['control-plane'], d\n";
    let out = Command::new("python3")
        .args(["-c", check])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn collect(env: &[(&str, &std::ffi::OsStr)], out: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args([
        "collect",
        "--pod",
        "taskmanager-0",
        "--namespace",
        "e2e",
        "--out",
    ])
    .arg(out)
    .env("CI", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("running the xtask binary");
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn collect_without_a_cluster_says_what_to_check() {
    let _shared = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dumps");
    // A kubeconfig that names no cluster: kubectl falls back to localhost:8080, refused.
    let kubeconfig = dir.path().join("kubeconfig");
    let o = collect(&[("KUBECONFIG", kubeconfig.as_os_str())], &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("listing the heap dumps in /jeprof of pod e2e/taskmanager-0"),
        "{err}"
    );
    assert!(err.contains("kubectl cluster-info"), "{err}");
    assert!(err.contains("refused"), "kubectl's reason is kept: {err}");
    assert!(
        !err.contains("memcache.go"),
        "kubectl's log noise is dropped: {err}"
    );
    assert!(!out.exists(), "nothing written");

    // No kubectl at all.
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let o = collect(&[("PATH", empty.as_os_str())], &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`kubectl` was not found") && err.contains("kubernetes.io/docs/tasks/tools"),
        "{err}"
    );
}

#[test]
fn e2e_driver_kind_names_what_is_missing_before_any_work() {
    let _shared = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["e2e", "--driver", "kind", "--image"])
        .arg(dir.path().join("no-such-layout"))
        .arg("--report")
        .arg(&report)
        .env("CI", "1")
        // kubectl and docker are where the machine has them; kind is not installed here.
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`kind`"), "{err}");
    assert!(!report.exists(), "nothing written before the check: {err}");
}

/// One kind cluster per `e2e` run: [`KindSession`] against a `kind` stand-in that records its
/// calls. A cluster the run creates gets `--kubeconfig` (the user's own is left alone) and is
/// deleted at the end; one that existed is reused and kept; `keep` keeps a created one. The
/// kubeconfig every kubectl call names is written into the run's directory.
#[test]
fn kind_session_creates_reuses_and_deletes_only_its_own_cluster() {
    use std::os::unix::fs::PermissionsExt;
    use xtask::e2e::driver::kind::KindSession;
    // The engine and the process's PATH are shared with the other tests of this binary: one
    // heavy test at a time, and PATH as it was afterwards, pass or fail.
    let _serial = crate::support::serial();
    struct RestorePath(Option<std::ffi::OsString>);
    impl Drop for RestorePath {
        fn drop(&mut self) {
            if let Some(p) = self.0.take() {
                std::env::set_var("PATH", p);
            }
        }
    }
    let _restore = RestorePath(std::env::var_os("PATH"));
    let _engine = harness::fixtures::docker::engine().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("kind.log");
    let clusters = dir.path().join("clusters");
    std::fs::write(
        bin.join("kind"),
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\ncase \"$1 $2\" in\n\
             \"get clusters\") cat {clusters} 2>/dev/null || true ;;\n\
             \"get kubeconfig\") echo \"# kubeconfig of $4\" ;;\nesac\n",
            log = log.display(),
            clusters = clusters.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("kind"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Prepended: every other tool stays where it was for the tests running beside this one.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());
    // kubectl may be missing here; the session does not run it.
    if !xtask::kubectl::on_path("kubectl", &std::env::var_os("PATH").unwrap()) {
        std::fs::write(bin.join("kubectl"), "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(bin.join("kubectl"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let archive = dir.path().join("image.docker.tar");
    let calls = || -> Vec<String> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_file(&log).ok();
        text.lines().map(str::to_string).collect()
    };
    let image = "localhost/flink-jemalloc:t";

    let run = dir.path().join("created");
    std::fs::create_dir(&run).unwrap();
    let s = KindSession::start("fj", &archive, image, &run, false).unwrap();
    let kubeconfig = run.join("kubeconfig");
    assert_eq!(s.kubeconfig, kubeconfig);
    assert_eq!(
        std::fs::read_to_string(&kubeconfig).unwrap(),
        "# kubeconfig of fj\n"
    );
    // The cluster's admin credentials: this user's only.
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    drop(s);
    let config = xtask::project::root().join("ci/kind.yaml");
    assert_eq!(
        calls(),
        [
            "get clusters".to_string(),
            format!(
                "create cluster --name fj --config {} --kubeconfig {} --wait 180s",
                config.display(),
                kubeconfig.display()
            ),
            "get kubeconfig --name fj".into(),
            format!("load image-archive {} --name fj", archive.display()),
            "delete cluster --name fj".into(),
        ]
    );

    let kept = KindSession::start("fj", &archive, image, &run, true).unwrap();
    drop(kept);
    let c = calls();
    assert!(c.iter().any(|l| l.starts_with("create cluster")), "{c:?}");
    assert!(!c.iter().any(|l| l.starts_with("delete")), "--keep: {c:?}");

    std::fs::write(&clusters, "other\nfj\n").unwrap();
    let reused = KindSession::start("fj", &archive, image, &run, false).unwrap();
    drop(reused);
    assert_eq!(
        calls(),
        [
            "get clusters".to_string(),
            "get kubeconfig --name fj".into(),
            format!("load image-archive {} --name fj", archive.display()),
        ],
        "a cluster that existed is reused and kept"
    );
}
