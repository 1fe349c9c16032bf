//! `deploy`'s files against what they are applied to, with no cluster: the operator patch
//! against the operator's CRD schema (vendored in `tests/data/`, strict: no field the API
//! server would prune) and merged into the operator's basic example; the native pod
//! template and the standalone patch merged into the TaskManager Deployment of
//! `ci/flink-session.yaml` and validated by `kubernetes-validate --strict`; bad input
//! refused with nothing overwritten.

use std::path::Path;
use std::process::Command;

use crate::kube::validate;

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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
