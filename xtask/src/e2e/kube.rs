//! The Kubernetes manifests of the e2e scenario's `kind` driver, generated from
//! `k8s-openapi`'s typed structures (pure; no cluster needed): a Namespace, the JobManager's
//! Deployment and Service, and the TaskManager's Deployment, handed to `kubectl apply -f -`
//! as one JSON `v1 List` ([`Manifests::to_list_json`]).
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
//! The heap dumps go to an `emptyDir` on the node's disk at [`cluster::DUMP_DIR`] (not
//! `medium: Memory`: a tmpfs would be charged to the container's memory limit). An emptyDir
//! lives as long as the pod: it survives container restarts (an OOM kill) but not a deleted
//! pod, so collect the dumps before deleting one.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Namespace,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::e2e::cluster::{Allocator, ClusterSpec, DUMP_DIR};

/// The `flink` user of the official images (and of the fixture image).
pub const FLINK_UID: i64 = 9999;
/// Name of the JobManager's Service: the address TaskManagers and the port-forward use.
pub const JOBMANAGER: &str = "jobmanager";
/// Name of the TaskManager's Deployment and container.
pub const TASKMANAGER: &str = "taskmanager";
/// Label selecting the TaskManager's pods: `component=taskmanager` (with `app=flink`).
pub const TASKMANAGER_SELECTOR: &str = "app=flink,component=taskmanager";
/// Label selecting the JobManager's pods.
pub const JOBMANAGER_SELECTOR: &str = "app=flink,component=jobmanager";
pub const RPC_PORT: i32 = 6123;
pub const BLOB_PORT: i32 = 6124;
/// The REST API and web UI inside the cluster (the port-forward's remote side).
pub const REST_PORT: i32 = 8081;
/// The TaskManager's RPC port.
pub const TASKMANAGER_RPC_PORT: i32 = 6122;

/// `flink-conf.yaml` keys the manifests own: the cluster's addresses and ports inside
/// Kubernetes. A [`ClusterSpec`] entry with one of these keys is dropped (`rest.port` there
/// is the port on this machine, the local side of the port-forward).
pub const OWNED_CONF_KEYS: &[&str] = &[
    "jobmanager.rpc.address",
    "jobmanager.rpc.port",
    "blob.server.port",
    "rest.address",
    "rest.bind-address",
    "rest.port",
    "taskmanager.rpc.port",
    "taskmanager.numberOfTaskSlots",
];

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

/// The TaskManager container's command: `sh -c SCRIPT sh ENTRYPOINT… taskmanager`. Every
/// start of the container gets its own dump directory, `<dumps>/start-<UTC time>`, and
/// jemalloc's `prof_prefix` pointing into it (appended to `MALLOC_CONF`; jemalloc takes the
/// last value of an option). An OOM-killed container is restarted in place with the same
/// emptyDir and its new JVM is PID 1 again: with one directory for all, its
/// `jeprof.out.1.<seq>` dumps would overwrite the dead JVM's.
pub fn start_script(dumps: &str) -> String {
    format!(
        "d=\"{dumps}/start-$(date -u +%Y%m%dT%H%M%S)\"; mkdir -p \"$d\" || exit 1; \
         if [ -n \"$MALLOC_CONF\" ]; then export MALLOC_CONF=\"$MALLOC_CONF,prof_prefix:$d/jeprof.out\"; fi; \
         exec \"$@\""
    )
}

/// Where [`start_script`] puts the dumps of the container starts, in the order they
/// started, from an `ls -1` of the dump volume.
pub fn start_dirs(ls: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = ls
        .iter()
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .filter(|l| l.starts_with("start-") && !l.contains('/'))
        .collect();
    dirs.sort();
    dirs
}

/// The generated objects, typed.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub namespace: Namespace,
    pub jobmanager_service: Service,
    pub jobmanager: Deployment,
    pub taskmanager: Deployment,
}

impl Manifests {
    /// Each object as JSON, in the order they are applied.
    pub fn objects(&self) -> Vec<Value> {
        let to = |v: Result<Value, serde_json::Error>| v.expect("k8s-openapi types serialize");
        vec![
            to(serde_json::to_value(&self.namespace)),
            to(serde_json::to_value(&self.jobmanager_service)),
            to(serde_json::to_value(&self.jobmanager)),
            to(serde_json::to_value(&self.taskmanager)),
        ]
    }

    /// One `v1 List` holding every object: what `kubectl apply -f -` reads.
    pub fn to_list_json(&self) -> String {
        serde_json::to_string_pretty(&json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": self.objects(),
        }))
        .expect("JSON values serialize")
    }
}

/// A byte count as a Kubernetes quantity: `2Gi`, `1536Mi`, or plain bytes.
pub fn quantity(bytes: u64) -> Quantity {
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    Quantity(if bytes > 0 && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    })
}

/// The `FLINK_PROPERTIES` text: the spec's entries minus [`OWNED_CONF_KEYS`], then the
/// cluster's own addresses and ports; one `key: value` per line.
pub fn flink_properties(spec: &ClusterSpec) -> String {
    let mut out = String::new();
    for (k, v) in &spec.conf {
        if !OWNED_CONF_KEYS.contains(&k.as_str()) {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    for (k, v) in [
        ("jobmanager.rpc.address", JOBMANAGER.to_string()),
        ("jobmanager.rpc.port", RPC_PORT.to_string()),
        ("blob.server.port", BLOB_PORT.to_string()),
        ("rest.port", REST_PORT.to_string()),
        ("taskmanager.rpc.port", TASKMANAGER_RPC_PORT.to_string()),
        ("taskmanager.numberOfTaskSlots", "1".to_string()),
    ] {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
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

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

fn port(name: &str, n: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: n,
        ..Default::default()
    }
}

fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// A one-replica Deployment of `container`, selected by `app=flink,component=<name>`.
fn deployment(
    name: &str,
    namespace: &str,
    pod_labels: BTreeMap<String, String>,
    container: Container,
    volumes: Option<Vec<Volume>>,
) -> Deployment {
    Deployment {
        metadata: meta(name, namespace, labels(name)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    ("app".to_string(), "flink".to_string()),
                    ("component".to_string(), name.to_string()),
                ])),
                ..Default::default()
            },
            // Never two of them at once, even while a change is rolled out.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_string()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes,
                    // No `JOBMANAGER_PORT=tcp://…` and friends in the environment.
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(FLINK_UID),
                        run_as_group: Some(FLINK_UID),
                        fs_group: Some(FLINK_UID),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The manifests for `p`.
pub fn manifests(p: &KubeParams) -> Manifests {
    let props = flink_properties(p.cluster_spec);
    let common_env = vec![
        env("JOB_MANAGER_RPC_ADDRESS", JOBMANAGER),
        env("FLINK_PROPERTIES", &props),
    ];
    Manifests {
        namespace: namespace(p.namespace),
        jobmanager_service: jobmanager_service(p.namespace),
        jobmanager: jobmanager(p, common_env.clone()),
        taskmanager: taskmanager(p, common_env),
    }
}

/// The run's namespace.
fn namespace(ns: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(ns.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "flink-jemalloc".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The JobManager's Service: RPC, blob server and REST.
fn jobmanager_service(ns: &str) -> Service {
    Service {
        metadata: meta(JOBMANAGER, ns, labels(JOBMANAGER)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                ("app".to_string(), "flink".to_string()),
                ("component".to_string(), JOBMANAGER.to_string()),
            ])),
            ports: Some(
                [("rpc", RPC_PORT), ("blob", BLOB_PORT), ("rest", REST_PORT)]
                    .into_iter()
                    .map(|(name, n)| ServicePort {
                        name: Some(name.to_string()),
                        port: n,
                        target_port: Some(IntOrString::Int(n)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The JobManager's Deployment, ready once its REST API answers.
fn jobmanager(p: &KubeParams, common_env: Vec<EnvVar>) -> Deployment {
    let ns = p.namespace;
    let jm_container = Container {
        name: JOBMANAGER.to_string(),
        image: Some(p.image.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec!["jobmanager".to_string()]),
        env: Some(common_env),
        ports: Some(vec![
            port("rpc", RPC_PORT),
            port("blob", BLOB_PORT),
            port("rest", REST_PORT),
        ]),
        // Ready once the REST API answers: `kubectl rollout status` waits for that.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/overview".to_string()),
                port: IntOrString::Int(REST_PORT),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        ..Default::default()
    };
    deployment(JOBMANAGER, ns, labels(JOBMANAGER), jm_container, None)
}

/// The TaskManager's Deployment: its limit, its allocator's environment, the per-start
/// dump directory on an emptyDir.
fn taskmanager(p: &KubeParams, common_env: Vec<EnvVar>) -> Deployment {
    let ns = p.namespace;
    let mut tm_env = common_env;
    tm_env.push(env("TASK_MANAGER_NUMBER_OF_TASK_SLOTS", "1"));
    tm_env.extend(
        p.cluster_spec
            .taskmanager_env
            .iter()
            .map(|(k, v)| env(k, v)),
    );
    let limit = quantity(p.cluster_spec.taskmanager_memory_limit);
    let tm_container = Container {
        name: TASKMANAGER.to_string(),
        image: Some(p.image.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            start_script(DUMP_DIR),
            "sh".to_string(),
        ]),
        args: Some(
            p.entrypoint
                .iter()
                .cloned()
                .chain(["taskmanager".to_string()])
                .collect(),
        ),
        env: Some(tm_env),
        ports: Some(vec![port("rpc", TASKMANAGER_RPC_PORT)]),
        // Requests equal to the limit: the node reserves what the TaskManager may use.
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_string(), limit.clone())])),
            requests: Some(BTreeMap::from([("memory".to_string(), limit)])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "jeprof".to_string(),
            mount_path: DUMP_DIR.to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut tm_labels = labels(TASKMANAGER);
    tm_labels.insert(
        "flink-jemalloc/allocator".to_string(),
        p.allocator.name().to_string(),
    );
    deployment(
        TASKMANAGER,
        ns,
        tm_labels,
        tm_container,
        Some(vec![Volume {
            name: "jeprof".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
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

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn env_of(c: &Container) -> BTreeMap<&str, &str> {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
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
        assert_eq!(quantity(2 << 30).0, "2Gi");
        assert_eq!(quantity(1536 << 20).0, "1536Mi");
        assert_eq!(quantity(1000).0, "1000");
    }

    #[test]
    fn taskmanager_limit_env_and_dump_volume() {
        let m = generated();
        let p = pod(&m.taskmanager);
        let c = &p.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(
                &[
                    "/docker-entrypoint.sh".to_string(),
                    "taskmanager".to_string()
                ][..]
            )
        );
        assert_eq!(c.command.as_ref().unwrap()[2], start_script(DUMP_DIR));
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "2Gi");
        assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "2Gi");
        let env = env_of(c);
        assert_eq!(env["JOB_MANAGER_RPC_ADDRESS"], "jobmanager");
        assert_eq!(env["TASK_MANAGER_NUMBER_OF_TASK_SLOTS"], "1");
        assert_eq!(env["LD_PRELOAD"], "/opt/jemalloc/lib/libjemalloc.so.2");
        assert!(env["MALLOC_CONF"].contains("prof_prefix:/jeprof/"));
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, DUMP_DIR);
        let vol = &p.volumes.as_ref().unwrap()[0];
        assert_eq!(vol.name, mount.name);
        let dir = vol.empty_dir.as_ref().expect("an emptyDir");
        assert_eq!(dir.medium, None, "on disk, not charged to the memory limit");
        let sc = p.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(FLINK_UID));
        assert_eq!(p.enable_service_links, Some(false));
    }

    #[test]
    fn flink_properties_keep_the_spec_and_own_the_addresses() {
        let m = generated();
        let props = env_of(&pod(&m.taskmanager).containers[0])["FLINK_PROPERTIES"].to_string();
        let jm_props = env_of(&pod(&m.jobmanager).containers[0])["FLINK_PROPERTIES"].to_string();
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
            let spec = d.spec.as_ref().unwrap();
            let sel = spec.selector.match_labels.as_ref().unwrap();
            let pod_labels = spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap();
            for (k, v) in sel {
                assert_eq!(pod_labels.get(k), Some(v), "{component}: {k}");
            }
            assert_eq!(sel["component"], component);
            assert_eq!(d.metadata.namespace.as_deref(), Some("e2e"));
        }
        let tm_labels = m
            .taskmanager
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref();
        assert_eq!(
            tm_labels.unwrap().labels.as_ref().unwrap()["flink-jemalloc/allocator"],
            "jemalloc"
        );
        let svc = m.jobmanager_service.spec.as_ref().unwrap();
        let jm_sel = m
            .jobmanager
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone();
        assert_eq!(svc.selector, jm_sel);
        let ports: Vec<i32> = svc.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [6123, 6124, 8081]);
        assert_eq!(
            m.jobmanager_service.metadata.name.as_deref(),
            Some(JOBMANAGER)
        );
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
