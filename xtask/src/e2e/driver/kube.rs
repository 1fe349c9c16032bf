//! The Kubernetes manifests of the e2e scenario's `kind` driver, as JSON (pure; no cluster
//! needed): a Namespace, the JobManager's Deployment and Service, and the TaskManager's
//! Deployment, handed to `kubectl apply -f -` as one `v1 List` ([`Manifests::to_list_json`]).
//! They are plain `serde_json` values rather than `k8s-openapi` types (whose compile time a
//! user of `image` would pay for nothing); tests/kube.rs checks every object against the
//! Kubernetes API schemas with `kubernetes-validate --strict`, which catches what typing
//! would (and more: it refuses unknown fields).
//!
//! Flink's configuration travels in the `FLINK_PROPERTIES` environment variable, not in a
//! ConfigMap. The official Flink 1.10 entrypoint (and the fixture's copy of it,
//! `fixtures::flink_base::ENTRYPOINT`) edits `$FLINK_HOME/conf/flink-conf.yaml` in place
//! (`sed -i` for `jobmanager.rpc.address`, `blob.server.port`, `taskmanager.numberOfTaskSlots`,
//! then `envsubst` into `flink-conf.yaml.tmp` and `mv` over it): a ConfigMap mounted at
//! `/opt/flink/conf` is read-only and every one of those writes fails. The entrypoint appends
//! `FLINK_PROPERTIES` to the image's own `flink-conf.yaml` before that `envsubst`, and Flink
//! lets a later line win over an earlier one, so the image's stock configuration stays and
//! ours overrides it. (`envsubst` runs over the result: a `$NAME` in a value is expanded from
//! the container's environment.)
//!
//! Both containers run as the image's `flink` user (uid/gid 9999, [`FLINK_UID`]): the
//! entrypoint only drops privileges with `gosu` when it starts as root, and as `flink` it can
//! still rewrite the configuration it owns (`chown -R flink:flink $FLINK_HOME` in the image).
//! PID 1 of the TaskManager container is then the JVM itself (the entrypoint, `taskmanager.sh
//! start-foreground` and `flink-console.sh` all `exec`), which is what the memory probe reads.
//!
//! The heap dumps go to an `emptyDir` on the node's disk at [`heap_profile::DUMP_DIR`] (not
//! `medium: Memory`: a tmpfs would be charged to the container's memory limit). An emptyDir
//! lives as long as the pod: it survives container restarts (an OOM kill) but not a deleted
//! pod, so collect the dumps before deleting one.

use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(crate) use super::flink_process::{
    flink_properties, BLOB_PORT, JOBMANAGER, REST_PORT, RPC_PORT, TASKMANAGER_RPC_PORT,
};
use crate::e2e::cluster::{Allocator, ClusterSpec};
use crate::heap_profile::DUMP_DIR;
pub(crate) use crate::heap_profile::{start_dirs, start_script};

/// The `flink` user of the official images (and of the fixture image).
pub(crate) const FLINK_UID: i64 = 9999;
/// Name of the TaskManager's Deployment and container.
pub(crate) const TASKMANAGER: &str = "taskmanager";
/// Label selecting the TaskManager's pods: `component=taskmanager` (with `app=flink`).
pub(crate) const TASKMANAGER_SELECTOR: &str = "app=flink,component=taskmanager";
/// What the manifests are generated from.
#[derive(Debug, Clone)]
pub struct KubeParams<'a> {
    /// Namespace holding everything (created by the manifests, deleted afterwards).
    pub namespace: &'a str,
    /// The image reference as loaded into kind (e.g. `flink:1.10.3`, the archive's tag).
    pub image: &'a str,
    pub cluster_spec: &'a ClusterSpec,
    /// Recorded as the `flink-jemalloc/allocator` label of the TaskManager; the environment
    /// itself comes from `cluster_spec.taskmanager_env`.
    pub allocator: Allocator,
    /// The image's entrypoint (its config's `Entrypoint`), which the TaskManager's
    /// [`start_script`] runs after making its dump directory.
    pub entrypoint: &'a [String],
}

/// The generated objects.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub namespace: Value,
    pub jobmanager_service: Value,
    pub jobmanager: Value,
    pub taskmanager: Value,
}

impl Manifests {
    /// Returns each object, in the order they are applied.
    pub fn objects(&self) -> Vec<Value> {
        vec![
            self.namespace.clone(),
            self.jobmanager_service.clone(),
            self.jobmanager.clone(),
            self.taskmanager.clone(),
        ]
    }

    /// Returns one `v1 List` holding every object: what `kubectl apply -f -` reads.
    pub(crate) fn to_list_json(&self) -> String {
        serde_json::to_string_pretty(&json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": self.objects(),
        }))
        .expect("JSON values serialize")
    }
}

/// Formats a byte count as a Kubernetes quantity: `2Gi`, `1536Mi`, or plain bytes.
pub(crate) fn quantity(bytes: u64) -> String {
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    if bytes > 0 && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

fn labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), "flink".to_string()),
        ("component".to_string(), component.to_string()),
        (
            "app.kubernetes.io/part-of".to_string(),
            "flink-jemalloc".to_string(),
        ),
    ])
}

fn env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

fn port(name: &str, n: i32) -> Value {
    json!({"name": name, "containerPort": n})
}

/// Returns `app=flink,component=<name>`: what a Deployment and its Service select.
fn selector(name: &str) -> Value {
    json!({"app": "flink", "component": name})
}

/// Returns a one-replica Deployment of `container`, selected by `app=flink,component=<name>`.
fn deployment(
    name: &str,
    namespace: &str,
    pod_labels: BTreeMap<String, String>,
    container: Value,
    volumes: Option<Value>,
) -> Value {
    let mut pod = json!({
        "containers": [container],
        // No `JOBMANAGER_PORT=tcp://…` and friends in the environment.
        "enableServiceLinks": false,
        "securityContext": {
            "runAsUser": FLINK_UID,
            "runAsGroup": FLINK_UID,
            "fsGroup": FLINK_UID,
            "runAsNonRoot": true,
        },
    });
    if let Some(v) = volumes {
        pod["volumes"] = v;
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector(name)},
            // Never two of them at once, even while a change is rolled out.
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        },
    })
}

/// Returns the manifests for `p`.
pub fn manifests(p: &KubeParams) -> Manifests {
    let props = flink_properties(p.cluster_spec);
    let common_env = vec![
        env("JOB_MANAGER_RPC_ADDRESS", JOBMANAGER),
        env("FLINK_PROPERTIES", &props),
    ];
    Manifests {
        namespace: json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": p.namespace,
                "labels": {"app.kubernetes.io/part-of": "flink-jemalloc"},
            },
        }),
        jobmanager_service: jobmanager_service(p.namespace),
        jobmanager: jobmanager(p, common_env.clone()),
        taskmanager: taskmanager(p, common_env),
    }
}

/// Returns the JobManager's Service: RPC, blob server and REST.
fn jobmanager_service(ns: &str) -> Value {
    let ports: Vec<Value> = [("rpc", RPC_PORT), ("blob", BLOB_PORT), ("rest", REST_PORT)]
        .into_iter()
        .map(|(name, n)| json!({"name": name, "port": n, "targetPort": n}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": JOBMANAGER, "namespace": ns, "labels": labels(JOBMANAGER)},
        "spec": {"selector": selector(JOBMANAGER), "ports": ports},
    })
}

/// Returns the JobManager's Deployment, ready once its REST API answers
/// (`kubectl rollout status` waits for that).
fn jobmanager(p: &KubeParams, common_env: Vec<Value>) -> Value {
    let container = json!({
        "name": JOBMANAGER,
        "image": p.image,
        "imagePullPolicy": "Never",
        "args": ["jobmanager"],
        "env": common_env,
        "ports": [port("rpc", RPC_PORT), port("blob", BLOB_PORT), port("rest", REST_PORT)],
        "readinessProbe": {
            "httpGet": {"path": "/overview", "port": REST_PORT},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
    });
    deployment(JOBMANAGER, p.namespace, labels(JOBMANAGER), container, None)
}

/// Returns the TaskManager's Deployment: its limit (requests equal to it: the node reserves
/// what the TaskManager may use), its allocator's environment, the per-start dump directory
/// on an emptyDir.
fn taskmanager(p: &KubeParams, common_env: Vec<Value>) -> Value {
    let mut env = common_env;
    env.push(self::env("TASK_MANAGER_NUMBER_OF_TASK_SLOTS", "1"));
    env.extend(
        p.cluster_spec
            .taskmanager_env
            .iter()
            .map(|(k, v)| self::env(k, v)),
    );
    let limit = quantity(p.cluster_spec.taskmanager_memory_limit);
    let args: Vec<String> = p
        .entrypoint
        .iter()
        .cloned()
        .chain(["taskmanager".to_string()])
        .collect();
    let container = json!({
        "name": TASKMANAGER,
        "image": p.image,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", start_script(DUMP_DIR), "sh"],
        "args": args,
        "env": env,
        "ports": [port("rpc", TASKMANAGER_RPC_PORT)],
        "resources": {"limits": {"memory": limit}, "requests": {"memory": limit}},
        "volumeMounts": [{"name": "jeprof", "mountPath": DUMP_DIR}],
    });
    let mut pod_labels = labels(TASKMANAGER);
    pod_labels.insert(
        "flink-jemalloc/allocator".to_string(),
        p.allocator.name().to_string(),
    );
    deployment(
        TASKMANAGER,
        p.namespace,
        pod_labels,
        container,
        Some(json!([{"name": "jeprof", "emptyDir": {}}])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            conf: vec![
                ("state.backend".into(), "rocksdb".into()),
                ("rest.address".into(), "127.0.0.1".into()),
                ("rest.port".into(), "18081".into()),
                ("taskmanager.memory.process.size".into(), "1536m".into()),
            ],
            taskmanager_env: vec![
                (
                    "LD_PRELOAD".into(),
                    "/opt/jemalloc/lib/libjemalloc.so.2".into(),
                ),
                (
                    "MALLOC_CONF".into(),
                    "prof:true,lg_prof_interval:30,prof_prefix:/jeprof/jeprof.out".into(),
                ),
            ],
            taskmanager_memory_limit: 2 << 30,
            rest_port: 18081,
        }
    }

    fn generated() -> Manifests {
        manifests(&KubeParams {
            namespace: "e2e",
            image: "flink:1.10.3",
            cluster_spec: &spec(),
            allocator: Allocator::Jemalloc,
            entrypoint: &["/docker-entrypoint.sh".to_string()],
        })
    }

    fn container(d: &Value) -> &Value {
        &d["spec"]["template"]["spec"]["containers"][0]
    }

    fn env_of(c: &Value) -> BTreeMap<&str, &str> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect()
    }

    /// The TaskManager's start script, run by a real shell: its own dump directory per
    /// start, `prof_prefix` into it, then the entrypoint with its arguments.
    #[test]
    fn every_start_gets_its_own_dump_directory() {
        let d = tempfile::tempdir().unwrap();
        let dumps = d.path().to_str().unwrap();
        let run = |malloc_conf: Option<&str>| {
            let mut c = std::process::Command::new("/bin/sh");
            c.args(["-c", &start_script(dumps), "sh", "/usr/bin/env"]);
            c.env_remove("MALLOC_CONF");
            if let Some(m) = malloc_conf {
                c.env("MALLOC_CONF", m);
            }
            let out = c.output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let env = run(Some("prof:true,prof_prefix:/jeprof/jeprof.out"));
        let conf = env
            .lines()
            .find_map(|l| l.strip_prefix("MALLOC_CONF="))
            .unwrap();
        let (_, prefix) = conf.rsplit_once(",prof_prefix:").unwrap();
        assert!(
            conf.starts_with("prof:true,prof_prefix:/jeprof/jeprof.out,"),
            "{conf}"
        );
        let dir = std::path::Path::new(prefix).parent().unwrap();
        assert!(dir.is_dir() && dir.starts_with(d.path()), "{conf}");
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(start_dirs(&names).len(), 1, "{names:?}");
        assert!(
            !run(None).contains("MALLOC_CONF"),
            "glibc runs get no MALLOC_CONF"
        );
        assert_eq!(
            start_dirs(&[
                "start-20261127T101010".into(),
                "jeprof.out.1.0.i0.heap".into(),
                "start-20261127T090000/".into()
            ]),
            ["start-20261127T090000", "start-20261127T101010"]
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity(2 << 30), "2Gi");
        assert_eq!(quantity(1536 << 20), "1536Mi");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn taskmanager_limit_env_and_dump_volume() {
        let m = generated();
        let p = &m.taskmanager["spec"]["template"]["spec"];
        let c = container(&m.taskmanager);
        assert_eq!(c["args"], json!(["/docker-entrypoint.sh", "taskmanager"]));
        assert_eq!(c["command"][2], start_script(DUMP_DIR));
        assert_eq!(c["resources"]["limits"]["memory"], "2Gi");
        assert_eq!(c["resources"]["requests"]["memory"], "2Gi");
        let env = env_of(c);
        assert_eq!(env["JOB_MANAGER_RPC_ADDRESS"], "jobmanager");
        assert_eq!(env["TASK_MANAGER_NUMBER_OF_TASK_SLOTS"], "1");
        assert_eq!(env["LD_PRELOAD"], "/opt/jemalloc/lib/libjemalloc.so.2");
        assert!(env["MALLOC_CONF"].contains("prof_prefix:/jeprof/"));
        let mount = &c["volumeMounts"][0];
        assert_eq!(mount["mountPath"], DUMP_DIR);
        let vol = &p["volumes"][0];
        assert_eq!(vol["name"], mount["name"]);
        assert!(vol["emptyDir"].is_object(), "an emptyDir");
        assert!(
            vol["emptyDir"].get("medium").is_none(),
            "on disk, not charged to the memory limit"
        );
        assert_eq!(p["securityContext"]["runAsUser"], FLINK_UID);
        assert_eq!(p["enableServiceLinks"], false);
        // The image was loaded into the node: a failed load is ErrImageNeverPull at once,
        // not a pull that times out the rollout.
        for d in [&m.taskmanager, &m.jobmanager] {
            assert_eq!(container(d)["imagePullPolicy"], "Never");
        }
    }

    #[test]
    fn flink_properties_keep_the_spec_and_own_the_addresses() {
        let m = generated();
        let props = env_of(container(&m.taskmanager))["FLINK_PROPERTIES"].to_string();
        let jm_props = env_of(container(&m.jobmanager))["FLINK_PROPERTIES"].to_string();
        assert_eq!(props, jm_props, "one configuration for both");
        let lines: Vec<&str> = props.lines().collect();
        assert!(lines.contains(&"state.backend: rocksdb"));
        assert!(lines.contains(&"taskmanager.memory.process.size: 1536m"));
        assert!(lines.contains(&"rest.port: 8081"));
        assert!(lines.contains(&"jobmanager.rpc.address: jobmanager"));
        assert!(!props.contains("127.0.0.1") && !props.contains("18081"));
    }

    #[test]
    fn labels_select_the_pods() {
        let m = generated();
        for (d, component) in [
            (&m.jobmanager, "jobmanager"),
            (&m.taskmanager, "taskmanager"),
        ] {
            let sel = d["spec"]["selector"]["matchLabels"].as_object().unwrap();
            let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
            for (k, v) in sel {
                assert_eq!(&pod_labels[k], v, "{component}: {k}");
            }
            assert_eq!(sel["component"], component);
            assert_eq!(d["metadata"]["namespace"], "e2e");
        }
        assert_eq!(
            m.taskmanager["spec"]["template"]["metadata"]["labels"]["flink-jemalloc/allocator"],
            "jemalloc"
        );
        let svc = &m.jobmanager_service["spec"];
        assert_eq!(
            svc["selector"],
            m.jobmanager["spec"]["selector"]["matchLabels"]
        );
        let ports: Vec<i64> = svc["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [6123, 6124, 8081]);
        assert_eq!(m.jobmanager_service["metadata"]["name"], JOBMANAGER);
    }

    #[test]
    fn list_json_has_kinds_in_apply_order() {
        let list: Value = serde_json::from_str(&generated().to_list_json()).unwrap();
        assert_eq!(list["kind"], "List");
        let kinds: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Namespace", "Service", "Deployment", "Deployment"]);
        assert_eq!(list["items"][3]["apiVersion"], "apps/v1");
        assert_eq!(
            list["items"][3]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                ["memory"],
            "2Gi"
        );
    }
}
