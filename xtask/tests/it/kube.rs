//! The kind driver's manifests against the Kubernetes schemas, with no cluster:
//! `kubernetes-validate --strict` (PyPI, installed by ci/install-deps.sh; its schemas are
//! bundled, so it runs offline) on each generated object, and on a broken one it must
//! refuse. Also: `ci/kind.yaml` is the kind config it claims to be, and `cargo xtask
//! collect` fails with a message that says what to check when no cluster answers.

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

fn validate(files: &[&Path]) -> Output {
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

/// `cargo xtask deploy` with `args` into a fresh directory; the files it wrote, by name.
fn deploy(
    args: &[&str],
) -> (
    tempfile::TempDir,
    std::collections::BTreeMap<String, String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![
        "deploy",
        "--image",
        IMAGE,
        "--out",
        dir.path().to_str().unwrap(),
    ];
    all.extend(args);
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&all)
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    (dir, files)
}

const IMAGE: &str = "registry.example.com/flink@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn yaml(text: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// Checks `v` against an OpenAPI v3 schema of a CRD as the API server's pruning and
/// validation would see it, strictly: every field must be one the schema has (a structural
/// schema prunes unknown fields silently, so a misspelt one would be lost without a word),
/// with its type. Returns the problems, each with its path.
fn check_schema(v: &serde_json::Value, schema: &serde_json::Value, path: &str) -> Vec<String> {
    use serde_json::Value;
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none()
    {
        return vec![];
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return match v {
            Value::String(_) | Value::Number(_) => vec![],
            _ => vec![format!("{path}: not an int or string")],
        };
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match (ty, v) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        ("", _) => true,
        _ => false,
    };
    if !ok {
        return vec![format!("{path}: a {ty} is expected, not {v}")];
    }
    let mut problems = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let sub = match (
                    schema["properties"].get(k),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => s,
                    (None, Some(s)) if s.is_object() => s,
                    _ => {
                        problems.push(format!("{path}.{k}: not a field of the schema"));
                        continue;
                    }
                };
                problems.extend(check_schema(x, sub, &format!("{path}.{k}")));
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                problems.extend(check_schema(x, &schema["items"], &format!("{path}[{i}]")));
            }
        }
        _ => {}
    }
    problems
}

/// RFC 7386 JSON merge patch (what `kubectl patch --type merge` applies).
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The FlinkDeployment merge patch against the operator's CRD (vendored from
/// apache/flink-kubernetes-operator, see its `source`), applied to the operator's own
/// basic example: the profiled image, the main container's environment and dump volume.
#[test]
fn deploy_operator_patch_fits_the_operators_crd() {
    let (_d, files) = deploy(&["--operator", "--name", "basic-example"]);
    let text = &files["flinkdeployment-patch.yaml"];
    assert!(
        text.contains("kubectl patch flinkdeployment basic-example --type merge"),
        "{text}"
    );
    let patch = yaml(text);
    let crd: serde_json::Value =
        serde_json::from_str(include_str!("../data/flinkdeployment-v1beta1.schema.json")).unwrap();
    let schema = &crd["openAPIV3Schema"];
    assert_eq!(check_schema(&patch, schema, ""), Vec::<String>::new());
    // The checker refuses what the API server would prune.
    let mut typo = patch.clone();
    typo["spec"]["taskManager"]["podTemplate"]["spec"]["containers"][0]["volumeMount"] =
        serde_json::json!([]);
    let problems = check_schema(&typo, schema, "");
    assert!(
        problems.len() == 1 && problems[0].contains("containers[0].volumeMount"),
        "{problems:?}"
    );
    // The operator's examples/basic.yaml, patched.
    let mut basic = serde_json::json!({
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": "basic-example"},
        "spec": {
            "image": "flink:1.20",
            "flinkVersion": "v1_20",
            "flinkConfiguration": {"taskmanager.numberOfTaskSlots": "2"},
            "serviceAccount": "flink",
            "jobManager": {"resource": {"memory": "2048m", "cpu": 1}},
            "taskManager": {"resource": {"memory": "2048m", "cpu": 1}},
            "job": {"jarURI": "local:///opt/flink/examples/streaming/StateMachineExample.jar",
                    "parallelism": 2, "upgradeMode": "stateless"}
        }
    });
    merge_patch(&mut basic, &patch);
    assert_eq!(crd["apiVersion"], basic["apiVersion"]);
    assert_eq!(
        check_schema(&basic["spec"], &schema["properties"]["spec"], "spec"),
        Vec::<String>::new()
    );
    assert_eq!(basic["spec"]["image"], IMAGE);
    assert_eq!(
        basic["spec"]["taskManager"]["resource"]["memory"], "2048m",
        "kept"
    );
    let c = &basic["spec"]["taskManager"]["podTemplate"]["spec"]["containers"][0];
    assert_eq!(c["name"], "flink-main-container");
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert!(env.contains(&("LD_PRELOAD", "/opt/jemalloc/lib/libjemalloc.so.2")));
    assert!(env.contains(&("DISABLE_JEMALLOC", "true")));
    assert!(env.contains(&(
        "MALLOC_CONF",
        "prof:true,lg_prof_sample:19,lg_prof_interval:32,junk:false,prof_prefix:/jeprof/jeprof.out"
    )));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/jeprof");
    let vol = &basic["spec"]["taskManager"]["podTemplate"]["spec"]["volumes"][0];
    assert_eq!(vol["name"], c["volumeMounts"][0]["name"]);
    assert!(vol["emptyDir"].is_object());
}

/// Native Kubernetes' pod template as a Pod, and the standalone patch merged (by name, as
/// a strategic merge patch merges containers and volumes) into the TaskManager Deployment
/// of Flink's standalone Kubernetes docs, against the Kubernetes schemas.
#[test]
fn deploy_native_template_and_standalone_patch_fit_kubernetes() {
    let (dir, files) = deploy(&["--native", "--sampling", "dense"]);
    let template = dir.path().join("taskmanager-pod-template.yaml");
    let pod = yaml(&files["taskmanager-pod-template.yaml"]);
    assert_eq!(pod["spec"]["containers"][0]["name"], "flink-main-container");
    assert!(pod["spec"]["containers"][0]["env"]
        .to_string()
        .contains("lg_prof_sample:17"));
    let conf = &files["flink-conf-profiling.yaml"];
    assert!(
        conf.contains(&format!("kubernetes.container.image.ref: {IMAGE}\n")),
        "{conf}"
    );
    assert!(
        conf.contains("kubernetes.pod-template-file.taskmanager: "),
        "{conf}"
    );

    let (_d2, files) = deploy(&["--standalone"]);
    let text = &files["taskmanager-patch.yaml"];
    assert!(
        text.contains("kubectl patch deployment flink-taskmanager --patch-file"),
        "{text}"
    );
    let patch = yaml(text);
    // The session cluster the publish workflow's own-cluster job profiles, after Flink's
    // docs (docs/content/docs/deployment/resource-providers/standalone/kubernetes.md).
    let session = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/flink-session.yaml"),
    )
    .unwrap()
    .replace(
        "@IMAGE@",
        "localhost/flink-jemalloc:2.2.1-scala_2.12-java17",
    );
    let objects: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&session)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Service", "Deployment", "Deployment"]);
    let session_file = dir.path().join("flink-session.yaml");
    std::fs::write(&session_file, &session).unwrap();
    let mut tm = objects[2].clone();
    assert_eq!(tm["metadata"]["name"], "flink-taskmanager");
    // What collect --selector app=flink,component=taskmanager finds.
    assert_eq!(
        tm["spec"]["template"]["metadata"]["labels"],
        serde_json::json!({"app": "flink", "component": "taskmanager"})
    );
    strategic_merge(&mut tm, &patch);
    let c = &tm["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], IMAGE);
    assert_eq!(
        c["args"],
        serde_json::json!(["/docker-entrypoint.sh", "taskmanager"])
    );
    assert!(
        c["env"].to_string().contains("FLINK_PROPERTIES")
            && c["env"].to_string().contains("MALLOC_CONF"),
        "the cluster's environment kept, profiling's added: {c}"
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/jeprof", "{c}");
    assert_eq!(
        tm["spec"]["template"]["spec"]["volumes"][0]["emptyDir"],
        serde_json::json!({})
    );
    let merged = dir.path().join("taskmanager-deployment.json");
    std::fs::write(&merged, tm.to_string()).unwrap();
    let out = validate(&[&template, &session_file, &merged]);
    assert!(out.status.success(), "refused");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("passed for resource pod/taskmanager-pod-template"),
        "{stdout}"
    );
    for resource in [
        "deployment/flink-taskmanager",
        "deployment/flink-jobmanager",
        "service/flink-jobmanager",
    ] {
        assert!(
            stdout.contains(&format!("passed for resource {resource}")),
            "{resource}: {stdout}"
        );
    }
}

/// A strategic merge patch's effect on Deployments: maps merged, lists of objects with a
/// `name` merged by name, other lists replaced.
fn strategic_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(x) => strategic_merge(x, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p)) if p.iter().all(|x| x.get("name").is_some()) => {
            for item in p {
                match t.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(x) => strategic_merge(x, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[test]
fn deploy_refuses_what_it_cannot_use_and_overwrites_nothing() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("deploy")
            .args(args)
            .env("CI", "1")
            .output()
            .unwrap()
    };
    let o = run(&["--image", IMAGE]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--operator"),
        "names the choices"
    );
    let o = run(&["--native", "--image", " "]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("is not an image reference"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let o = run(&["--operator", "--image", IMAGE, "--name", "My_Job"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a Kubernetes object name"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("docker-compose.profiled.yml");
    std::fs::write(&f, "mine\n").unwrap();
    let out = dir.path().to_str().unwrap();
    let o = run(&["--compose", "--image", IMAGE, "--out", out]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("pass --force"), "{e}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "mine\n", "left alone");
    let o = run(&["--compose", "--image", IMAGE, "--out", out, "--force"]);
    assert!(o.status.success());
    assert!(std::fs::read_to_string(&f).unwrap().contains(IMAGE));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left");
}
