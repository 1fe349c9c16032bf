//! The e2e scenario on a kind cluster (`--driver kind`). One [`KindSession`] per run creates
//! the cluster from `ci/kind.yaml` or reuses one of that name, writes its kubeconfig (which
//! every kubectl call names) and loads the image's docker-archive into it once; per
//! allocator a [`KindCluster`] applies the manifests of `kube.rs` in a fresh namespace,
//! waits for the rollout, port-forwards the JobManager's REST API to this machine (again
//! whenever it drops), and reads the TaskManager's memory with `kubectl exec`. What a real
//! cluster does that a naive driver does not expect, and how it is met, is in the README's
//! kind section. Everything made (the namespace; the cluster when this run created it) is
//! deleted at the end, unless `keep`.
//!
//! Needs `kind`, `kubectl` and a running Docker engine ([`require_tools`]).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use super::kube::{self, KubeParams, JOBMANAGER, TASKMANAGER, TASKMANAGER_SELECTOR};
use crate::e2e::cluster::{
    dump_times_probe, parse_dump_times, parse_memory_probe, probe_while_running, Allocator,
    Cluster, ClusterSpec, ContainerMemory, MEMORY_PROBE,
};
use crate::e2e::flink_rest::FlinkRest;
use crate::heap_profile::ContainerFiles;
use crate::heap_profile::{self, DUMP_DIR};
use crate::kubectl::{error_text, on_path, Kubectl, KUBECTL_INSTALL};
use crate::progress::{self, Step};
use crate::project;
use crate::teardown;

/// The kind cluster's default name.
pub const DEFAULT_CLUSTER: &str = "flink-jemalloc";
/// The kind cluster configuration, relative to the project root.
pub const KIND_CONFIG: &str = "ci/kind.yaml";

/// Each tool the driver runs, with how to get it.
const TOOLS: &[(&str, &str)] = &[
    (
        "kind",
        "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation \
         (a release binary, or `go install sigs.k8s.io/kind@latest`)",
    ),
    ("kubectl", KUBECTL_INSTALL),
    (
        "docker",
        "install Docker (kind runs its nodes as containers): `apt-get install docker.io` \
         or https://docs.docker.com/engine/install/",
    ),
];

/// The tools of [`TOOLS`] missing from `path` (a `$PATH` value).
pub fn missing_tools(path: &OsStr) -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|(t, _)| !on_path(t, path))
        .map(|(t, _)| *t)
        .collect()
}

/// The error for the tools missing from `path`, naming each and how to install it.
pub fn check_tools(path: &OsStr) -> Result<()> {
    let missing = missing_tools(path);
    if missing.is_empty() {
        return Ok(());
    }
    let how: Vec<String> = TOOLS
        .iter()
        .filter(|(t, _)| missing.contains(t))
        .map(|(t, h)| format!("  {t}: {h}"))
        .collect();
    bail!(
        "--driver kind needs {} on the PATH, not found:\n{}",
        missing
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", "),
        how.join("\n")
    )
}

/// `kind`, `kubectl` and `docker` on the PATH, and the Docker engine answering.
pub fn require_tools() -> Result<()> {
    check_tools(&std::env::var_os("PATH").unwrap_or_default())?;
    crate::docker::require("--driver kind")
}

/// A pod as `kubectl get pods -o json` shows it; only what the driver reads is looked at.
#[derive(Debug, Clone)]
pub struct Pod(pub Value);

impl Pod {
    pub fn name(&self) -> &str {
        self.0["metadata"]["name"].as_str().unwrap_or("?")
    }

    fn deleting(&self) -> bool {
        !self.0["metadata"]["deletionTimestamp"].is_null()
    }

    fn phase(&self) -> &str {
        self.0["status"]["phase"].as_str().unwrap_or("")
    }

    fn statuses(&self) -> &[Value] {
        self.0["status"]["containerStatuses"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    /// The status of its container `name`.
    fn status_of(&self, name: &str) -> Option<&Value> {
        self.statuses().iter().find(|c| c["name"] == name)
    }
}

/// Text of a JSON string field, "" when absent.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Ids of the container's ended runs that the OOM killer ended, as far as the pod's status
/// shows them (its current state and the last one: Kubernetes keeps no older history).
pub fn oom_killed_runs(pod: &Pod, container: &str) -> Vec<String> {
    let uid = text(&pod.0["metadata"]["uid"]);
    let Some(cs) = pod.status_of(container) else {
        return Vec::new();
    };
    [&cs["state"], &cs["lastState"]]
        .into_iter()
        .map(|s| &s["terminated"])
        .filter(|t| t["reason"] == "OOMKilled")
        .map(|t| match t["containerID"].as_str() {
            Some(id) => id.to_string(),
            None => format!("{uid}/{}", text(&t["finishedAt"])),
        })
        .collect()
}

/// The pod that is the TaskManager now: not being deleted, running if one is.
pub fn current_pod(pods: &[Pod]) -> Option<&Pod> {
    let live: Vec<&Pod> = pods.iter().filter(|p| !p.deleting()).collect();
    live.iter()
        .find(|p| p.phase() == "Running")
        .or(live.first())
        .copied()
}

/// Why pods are not running, one line each (`taskmanager-…: ErrImageNeverPull: …`).
pub fn pod_problems(pods: &[Pod]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pods {
        let name = p.name();
        for c in p.statuses() {
            let cname = text(&c["name"]);
            let w = &c["state"]["waiting"];
            if w.is_object() {
                out.push(format!(
                    "{name}/{cname}: {} {}",
                    w["reason"].as_str().unwrap_or("waiting"),
                    text(&w["message"])
                ));
            }
            let t = &c["lastState"]["terminated"];
            if t.is_object() {
                out.push(format!(
                    "{name}/{cname}: last run ended {} (exit {}), {} restart(s)",
                    t["reason"].as_str().unwrap_or("?"),
                    t["exitCode"].as_i64().unwrap_or(0),
                    c["restartCount"].as_i64().unwrap_or(0)
                ));
            }
        }
        if p.0["status"]["containerStatuses"].is_null() {
            for cond in p.0["status"]["conditions"].as_array().into_iter().flatten() {
                if cond["status"] != "True" {
                    out.push(format!(
                        "{name}: {} {} {}",
                        text(&cond["type"]),
                        text(&cond["reason"]),
                        text(&cond["message"])
                    ));
                }
            }
        }
    }
    out
}

/// Where a container of a pod runs: (node, container id), from the pod's spec and status
/// (`containerd://<id>` → `<id>`). A kind node is a Docker container of the node's name.
pub fn container_on_node(pod: &Pod, container: &str) -> Option<(String, String)> {
    let node = pod.0["spec"]["nodeName"].as_str()?;
    let id = pod.status_of(container)?["containerID"].as_str()?;
    let id = id.split_once("://").map_or(id, |(_, i)| i);
    Some((node.to_string(), id.to_string()))
}

/// Which run of a container a pod status shows: `<pod>/<container id>`, new for every start
/// (a restart in place keeps the pod and changes the id; a new pod changes both).
pub fn container_run(pod: &Pod, container: &str) -> Option<String> {
    let id = pod.status_of(container)?["containerID"].as_str()?;
    Some(format!("{}/{id}", pod.name()))
}

/// Whether the container's run changed since `seen` without this driver asking: a death
/// between two polls (the kubelet restarts at once the first time, faster than a poll).
pub fn restarted_unseen(seen: Option<&str>, now: Option<&str>) -> bool {
    matches!((seen, now), (Some(a), Some(b)) if a != b)
}

/// The commands that SIGKILL the TaskManager's JVM and have its Deployment start a new pod:
/// `crictl stop --timeout 0` in the node's container (deleting the pod alone lets the
/// kubelet send SIGTERM, and Flink shuts down cleanly), then the pod deleted at once, so no
/// restart in place meets the kubelet's crash back-off (0, 10, 20, 40 … 300 s, reset only
/// after 10 minutes of running): a new pod starts without one.
pub fn kill_commands(pod: &Pod, container: &str) -> Option<(Vec<String>, Vec<String>)> {
    let (node, id) = container_on_node(pod, container)?;
    let crictl = ["exec", &node, "crictl", "stop", "--timeout", "0", &id];
    Some((
        crictl.iter().map(|s| s.to_string()).collect(),
        delete_pod(pod.name()),
    ))
}

/// `kubectl` arguments that delete pod `name` at once, without waiting for it to go.
fn delete_pod(name: &str) -> Vec<String> {
    [
        "delete",
        "pod",
        name,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Whether the pod's `container` is running now, as its status says.
pub fn container_running(pod: &Pod, container: &str) -> bool {
    pod.status_of(container)
        .is_some_and(|c| c["state"]["running"].is_object())
}

/// The kind cluster of one `e2e` run, shared by its allocators: created from
/// [`KIND_CONFIG`] unless a cluster of that name exists, its kubeconfig written into the
/// run's private work directory (every kubectl call names it; mode 0600, and never into the
/// report, which a workflow uploads), the image loaded into its node once.
/// Dropping it deletes the cluster only if this run created it (and not `keep`).
pub struct KindSession {
    pub cluster: String,
    pub kubeconfig: PathBuf,
    /// The image's name on the node.
    pub image: String,
    created: bool,
    keep: bool,
    _teardown: Option<teardown::Guard>,
}

impl KindSession {
    pub fn start(
        cluster: &str,
        archive: &Path,
        image: &str,
        dir: &Path,
        keep: bool,
    ) -> Result<KindSession> {
        require_tools()?;
        let sh = Shell::new()?;
        let name = cluster;
        let kubeconfig = std::path::absolute(dir.join("kubeconfig"))?;
        let clusters = cmd!(sh, "kind get clusters")
            .quiet()
            .read()
            .context("kind get clusters")?;
        let created = !clusters.lines().any(|l| l.trim() == name);
        let teardown = (created && !keep).then(|| {
            let name = name.to_string();
            teardown::on_interrupt(format!("kind cluster {name}"), move || {
                if let Ok(sh) = Shell::new() {
                    let _ = cmd!(sh, "kind delete cluster --name {name}").quiet().run();
                }
            })
        });
        if created {
            let config = project::root().join(KIND_CONFIG);
            let step = Step::start(format!("creating kind cluster {name} from {KIND_CONFIG}"));
            // --kubeconfig: the user's own kubeconfig is left alone.
            cmd!(
                sh,
                "kind create cluster --name {name} --config {config} --kubeconfig {kubeconfig} --wait 180s"
            )
            .run()
            .with_context(|| format!("kind create cluster --name {name}"))?;
            step.done("");
        } else {
            progress::note(format!("reusing kind cluster {name}"));
        }
        let session = KindSession {
            cluster: name.to_string(),
            kubeconfig: kubeconfig.clone(),
            image: image.to_string(),
            created,
            keep,
            _teardown: teardown,
        };
        let text = cmd!(sh, "kind get kubeconfig --name {name}")
            .quiet()
            .read()
            .with_context(|| format!("kind get kubeconfig --name {name}"))?;
        // The cluster's admin credentials: readable by this user only.
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&kubeconfig)
                .and_then(|mut f| f.write_all((text + "\n").as_bytes()))
                .with_context(|| format!("writing {}", kubeconfig.display()))?;
        }
        let step = Step::start(format!("loading {image} into kind cluster {name}"));
        cmd!(sh, "kind load image-archive {archive} --name {name}")
            .quiet()
            .run()
            .with_context(|| format!("kind load image-archive {}", archive.display()))?;
        step.done("");
        Ok(session)
    }
}

impl Drop for KindSession {
    fn drop(&mut self) {
        let name = &self.cluster;
        if self.created && !self.keep {
            if let Ok(sh) = Shell::new() {
                let _ = cmd!(sh, "kind delete cluster --name {name}").quiet().run();
            }
        } else if self.created {
            progress::note(format!(
                "kept: kind cluster {name} (`kind delete cluster --name {name}` removes it)"
            ));
        }
    }
}

/// How to run one cluster (one allocator) on a [`KindSession`]'s cluster.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// The kind cluster's name.
    pub cluster: String,
    /// The kubeconfig of the kind cluster ([`KindSession::kubeconfig`]).
    pub kubeconfig: PathBuf,
    /// The image's name on the nodes.
    pub image: String,
    /// The image's entrypoint (the TaskManager's start script runs it).
    pub entrypoint: Vec<String>,
    /// The namespace of this run: deleted first if it exists, created by the manifests.
    pub namespace: String,
    pub allocator: Allocator,
    /// Leave the namespace in place.
    pub keep: bool,
    /// Where the Flink and port-forward logs are written.
    pub logs: PathBuf,
}

/// `kubectl port-forward svc/jobmanager <local>:8081`, restarted when it is gone or no
/// longer forwards (kubectl ≥ 1.23 exits when a forwarded connection is reset).
struct PortForward {
    args: Vec<String>,
    log: PathBuf,
    local_port: u16,
    /// Readiness: the REST API answering through the forward (a client without reconnect).
    probe: FlinkRest,
    child: Arc<Mutex<Option<Child>>>,
    _teardown: teardown::Guard,
}

impl PortForward {
    fn new(kubectl: &Kubectl, local_port: u16, log: PathBuf) -> PortForward {
        let mut args = kubectl.global_args();
        args.extend([
            "port-forward".into(),
            format!("svc/{JOBMANAGER}"),
            format!("{local_port}:{}", kube::REST_PORT),
        ]);
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let held = child.clone();
        let guard = teardown::on_interrupt("kubectl port-forward", move || {
            if let Some(mut c) = held.lock().ok().and_then(|mut c| c.take()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        });
        PortForward {
            args,
            log,
            local_port,
            probe: FlinkRest::new(&format!("http://127.0.0.1:{local_port}")),
            child,
            _teardown: guard,
        }
    }

    /// Makes sure the REST API answers through a running forward: (re)starts it when it
    /// exited or when the API does not answer through it.
    fn ensure(&self) -> Result<()> {
        let mut pf = self.child.lock().expect("port-forward lock");
        if let Some(child) = pf.as_mut() {
            if child.try_wait()?.is_none() && self.probe.overview().is_ok() {
                return Ok(());
            }
            progress::note("kubectl port-forward is gone or not forwarding; restarting it");
            let _ = child.kill();
            let _ = child.wait();
            *pf = None;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // A daemon for the cluster's lifetime: std::process, since xshell runs to completion.
        let mut child = Command::new("kubectl")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kubectl port-forward")?;
        let start = Instant::now();
        // Ready once /overview answers, not when the port is open.
        while self.probe.overview().is_err() {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!(
                    "kubectl port-forward to svc/{JOBMANAGER} exited ({status}): {}",
                    error_text(&text)
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the REST API did not answer on 127.0.0.1:{} within 60 s; see {}",
                    self.local_port,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        *pf = Some(child);
        Ok(())
    }

    fn stop(&self) {
        if let Some(mut c) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct KindCluster {
    opts: KindOptions,
    kubectl: Kubectl,
    rest: FlinkRest,
    port_forward: Arc<PortForward>,
    /// The REST id of the current TaskManager.
    taskmanager_id: Option<String>,
    /// Runs of the TaskManager container seen OOM-killed (see [`oom_killed_runs`]).
    oom_runs: Mutex<BTreeSet<String>>,
    /// The TaskManager container run the last poll saw ([`container_run`]).
    seen_run: Mutex<Option<String>>,
    /// Dump directories of container starts already copied out (see [`kube::start_script`]).
    collected: Mutex<BTreeSet<String>>,
    _teardown: Option<teardown::Guard>,
}

impl KindCluster {
    /// Applies the manifests in a fresh namespace of the session's cluster, waits for the
    /// rollout, port-forwards the REST API to `spec.rest_port`, and returns once the
    /// TaskManager registered. On an error the namespace is deleted (unless `keep`).
    pub fn start(opts: &KindOptions, spec: &ClusterSpec) -> Result<KindCluster> {
        std::fs::create_dir_all(&opts.logs)?;
        let kubectl = Kubectl::with_kubeconfig(&opts.namespace, &opts.kubeconfig);
        let port_forward = Arc::new(PortForward::new(
            &kubectl,
            spec.rest_port,
            opts.logs.join("port-forward.log"),
        ));
        let pf = port_forward.clone();
        let rest = FlinkRest::new(&format!("http://127.0.0.1:{}", spec.rest_port))
            .with_reconnect(Arc::new(move || pf.ensure()));
        let teardown = (!opts.keep).then(|| {
            let (k, ns) = (kubectl.clone(), opts.namespace.clone());
            teardown::on_interrupt(format!("namespace {ns}"), move || {
                let _ = k.run(&["delete", "namespace", &ns, "--wait=false"]);
            })
        });
        let mut cluster = KindCluster {
            opts: opts.clone(),
            kubectl,
            rest,
            port_forward,
            taskmanager_id: None,
            oom_runs: Mutex::new(BTreeSet::new()),
            seen_run: Mutex::new(None),
            collected: Mutex::new(BTreeSet::new()),
            _teardown: teardown,
        };
        cluster.deploy(spec)?;
        Ok(cluster)
    }

    fn deploy(&mut self, spec: &ClusterSpec) -> Result<()> {
        let ns = self.opts.namespace.clone();
        self.kubectl
            .run(&[
                "delete",
                "namespace",
                &ns,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=180s",
            ])
            .with_context(|| format!("removing namespace {ns} of an earlier run"))?;
        let image = self.opts.image.clone();
        let manifests = kube::manifests(&KubeParams {
            namespace: &ns,
            image: &image,
            cluster_spec: spec,
            allocator: self.opts.allocator,
            entrypoint: &self.opts.entrypoint,
        });
        let list = manifests.to_list_json();
        std::fs::write(self.opts.logs.join("manifests.json"), &list)?;
        self.kubectl
            .run_with_input(&["apply", "-f", "-"], list.as_bytes())
            .context("applying the manifests")?;

        let step = Step::start(format!(
            "waiting for the JobManager and TaskManager in {ns}"
        ));
        for d in [JOBMANAGER, TASKMANAGER] {
            let target = format!("deployment/{d}");
            if let Err(e) = self
                .kubectl
                .run(&["rollout", "status", &target, "--timeout=300s"])
            {
                let problems = self
                    .pods("app=flink")
                    .map(|p| pod_problems(&p).join("\n  "))
                    .unwrap_or_default();
                return Err(e.context(format!(
                    "{d} did not become ready (image {image}){}",
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!(":\n  {problems}")
                    }
                )));
            }
        }
        step.done("");

        self.port_forward.ensure()?;
        self.rest
            .wait_for_taskmanagers(1, Duration::from_secs(180))
            .context("the TaskManager did not register with the JobManager")?;
        self.taskmanager_id = self.rest.taskmanager_ids()?.first().cloned();
        Ok(())
    }

    fn pods(&self, selector: &str) -> Result<Vec<Pod>> {
        let json = self
            .kubectl
            .run(&["get", "pods", "-l", selector, "-o", "json"])?;
        let list: Value = serde_json::from_str(&json).context("kubectl get pods")?;
        Ok(list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(Pod)
            .collect())
    }

    /// The TaskManager's pod now (after remembering its OOM-killed runs).
    fn taskmanager_pod(&self) -> Result<Pod> {
        let pods = self.pods(TASKMANAGER_SELECTOR)?;
        let pod = current_pod(&pods)
            .cloned()
            .with_context(|| format!("no TaskManager pod in {}", self.opts.namespace))?;
        self.oom_runs
            .lock()
            .expect("oom lock")
            .extend(oom_killed_runs(&pod, TASKMANAGER));
        Ok(pod)
    }

    /// The TaskManager pod's name.
    pub fn taskmanager_pod_name(&self) -> Result<String> {
        Ok(self.taskmanager_pod()?.name().to_string())
    }

    /// The kubectl this cluster uses (its kubeconfig and namespace).
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    /// Waits until a TaskManager that is not in `before` registered, and makes it the
    /// current one.
    fn wait_for_new_taskmanager(&mut self, before: &[String], what: &str) -> Result<()> {
        let start = Instant::now();
        let timeout = Duration::from_secs(240);
        loop {
            let ids = self.rest.taskmanager_ids().unwrap_or_default();
            if let Some(id) = ids.iter().find(|id| !before.contains(id)) {
                self.taskmanager_id = Some(id.clone());
                // The new TaskManager's container run is the one to watch from now on.
                let run = self
                    .taskmanager_pod()
                    .ok()
                    .and_then(|p| container_run(&p, TASKMANAGER));
                *self.seen_run.lock().expect("seen lock") = run;
                return Ok(());
            }
            if start.elapsed() > timeout {
                let problems = self
                    .pods(TASKMANAGER_SELECTOR)
                    .map(|p| pod_problems(&p).join("\n  "))
                    .unwrap_or_default();
                bail!(
                    "no new TaskManager registered within {} s after {what}\n  {problems}",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Writes `kubectl logs` of the JobManager and of the TaskManager pods (with the previous
    /// run of a restarted container) to the logs directory; best effort.
    pub fn save_logs(&self) {
        let save = |pod: &str, previous: bool| {
            let mut args = vec!["logs", pod];
            if previous {
                args.push("--previous");
            }
            if let Ok(text) = self.kubectl.run(&args) {
                let file = format!("{pod}{}.log", if previous { "-previous" } else { "" });
                let _ = std::fs::write(self.opts.logs.join(file), text);
            }
        };
        for p in self.pods("app=flink").unwrap_or_default() {
            let name = p.name();
            save(name, false);
            let restarted = p
                .statuses()
                .iter()
                .any(|c| c["restartCount"].as_i64().unwrap_or(0) > 0);
            if restarted {
                save(name, true);
            }
        }
    }
}

impl Cluster for KindCluster {
    fn rest(&self) -> &FlinkRest {
        &self.rest
    }

    fn taskmanager_id(&self) -> Option<&str> {
        self.taskmanager_id.as_deref()
    }

    /// Liveness and OOM kills from the pod's `containerStatuses` (a not-running container
    /// has no RSS; `lastState.terminated.reason: OOMKilled` runs are counted once each; a
    /// container whose run changed since the last poll died between the two, and counts as
    /// not running once, so the death is handled); RSS and cgroup usage by `kubectl exec`
    /// of [`MEMORY_PROBE`], retried while the status says the container runs.
    fn taskmanager_memory(&self) -> Result<ContainerMemory> {
        let name = std::cell::RefCell::new(String::new());
        let text = probe_while_running(
            || {
                let pod = self.taskmanager_pod()?;
                *name.borrow_mut() = pod.name().to_string();
                let run = container_run(&pod, TASKMANAGER);
                let mut seen = self.seen_run.lock().expect("seen lock");
                let unseen = restarted_unseen(seen.as_deref(), run.as_deref());
                if run.is_some() {
                    *seen = run;
                }
                if unseen {
                    progress::note(format!(
                        "the TaskManager container of pod {} was restarted between two polls",
                        pod.name()
                    ));
                    return Ok(false);
                }
                Ok(container_running(&pod, TASKMANAGER))
            },
            || {
                self.kubectl.exec_in(
                    &name.borrow(),
                    Some(TASKMANAGER),
                    &["sh", "-c", MEMORY_PROBE],
                )
            },
        )?;
        let oom_kills = self.oom_runs.lock().expect("oom lock").len() as u64;
        let probed = text.as_deref().map(parse_memory_probe).unwrap_or_default();
        Ok(ContainerMemory {
            oom_kills,
            ..probed
        })
    }

    /// SIGKILLs the TaskManager's JVM from its node and deletes its pod ([`kill_commands`]:
    /// the Deployment starts a new pod, with no crash back-off), and returns once a
    /// TaskManager with a new id registered. The dumps were copied before.
    fn kill_taskmanager(&mut self) -> Result<()> {
        let before = self.rest.taskmanager_ids()?;
        let pod = self.taskmanager_pod()?;
        let name = pod.name().to_string();
        let (crictl, delete) = kill_commands(&pod, TASKMANAGER)
            .with_context(|| format!("pod {name}: no node or container id in its status"))?;
        let step = Step::start(format!(
            "killing the TaskManager of pod {name} (crictl stop --timeout 0 on node {}), then the pod",
            crictl[1]
        ));
        let crictl: Vec<&str> = crictl.iter().map(String::as_str).collect();
        crate::docker::docker(&crictl)
            .with_context(|| format!("stopping the TaskManager container of pod {name}"))?;
        let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
        self.kubectl.run(&delete)?;
        self.wait_for_new_taskmanager(&before, &format!("killing the TaskManager of pod {name}"))?;
        step.done("");
        Ok(())
    }

    /// After a death (OOM kill), whose dumps were copied: a container the kubelet holds in
    /// its crash back-off (not running) has its pod deleted, so that the Deployment starts a
    /// new one at once; one already restarted in place is left to start (deleting its pod
    /// then could kill a JVM that has just registered). Then wait for the new TaskManager.
    fn replace_taskmanager(&mut self) -> Result<()> {
        let known = self.taskmanager_id.iter().cloned().collect::<Vec<_>>();
        if let Ok(pod) = self.taskmanager_pod() {
            if !container_running(&pod, TASKMANAGER) {
                let delete = delete_pod(pod.name());
                self.kubectl
                    .run(&delete.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
        }
        self.wait_for_new_taskmanager(&known, "the TaskManager died")
    }

    /// Copies the dumps of the current container start to `out`, and those of earlier
    /// starts not copied yet (an OOM-killed container restarted in place) to
    /// `<out>-<start dir>`; the libraries are read from the running container.
    fn collect(&self, out: &Path) -> Result<()> {
        let pod = self.taskmanager_pod_name()?;
        let c = crate::kubectl::PodContainer {
            kubectl: &self.kubectl,
            pod: &pod,
            container: Some(TASKMANAGER),
        };
        let starts = kube::start_dirs(&c.list(DUMP_DIR)?);
        let Some((current, earlier)) = starts.split_last() else {
            return Ok(());
        };
        let mut collected = self.collected.lock().expect("collected lock");
        for start in earlier {
            if collected.contains(start) {
                continue;
            }
            let dest = PathBuf::from(format!("{}-{start}", out.display()));
            heap_profile::collect(&c, &format!("{DUMP_DIR}/{start}"), &dest)?;
            collected.insert(start.clone());
        }
        let got = heap_profile::collect(&c, &format!("{DUMP_DIR}/{current}"), out)?;
        collected.insert(current.clone());
        if !got.missing.is_empty() {
            progress::note(format!(
                "mapped but gone from {pod}: {}",
                got.missing.join(", ")
            ));
        }
        Ok(())
    }

    fn dump_times(&self) -> Result<Vec<(String, f64)>> {
        let pod = self.taskmanager_pod_name()?;
        let c = crate::kubectl::PodContainer {
            kubectl: &self.kubectl,
            pod: &pod,
            container: Some(TASKMANAGER),
        };
        let starts = kube::start_dirs(&c.list(DUMP_DIR)?);
        let Some(current) = starts.last() else {
            return Ok(Vec::new());
        };
        let argv = dump_times_probe(&format!("{DUMP_DIR}/{current}"));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(parse_dump_times(&self.kubectl.exec_in(
            &pod,
            Some(TASKMANAGER),
            &argv,
        )?))
    }
}

impl Drop for KindCluster {
    /// Stops the port-forward, saves the logs, and deletes the namespace, unless `keep`.
    fn drop(&mut self) {
        self.port_forward.stop();
        self.save_logs();
        let ns = &self.opts.namespace;
        if self.opts.keep {
            // The run's kubeconfig goes with its work directory.
            progress::note(format!(
                "kept: namespace {ns} (`kind export kubeconfig --name {}`, then `kubectl -n {ns} get pods`)",
                self.opts.cluster
            ));
            return;
        }
        let _ = self
            .kubectl
            .run(&["delete", "namespace", ns, "--wait=false"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_how_to_install() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        for t in ["kubectl", "docker"] {
            std::fs::write(d.path().join(t), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(d.path().join(t), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        assert_eq!(missing_tools(d.path().as_os_str()), ["kind"]);
        let e = format!("{:#}", check_tools(d.path().as_os_str()).unwrap_err());
        assert!(
            e.contains("`kind`") && e.contains("kind.sigs.k8s.io"),
            "{e}"
        );
        assert!(!e.contains("kubectl:"), "{e}");
        let none = tempfile::tempdir().unwrap();
        let e = format!("{:#}", check_tools(none.path().as_os_str()).unwrap_err());
        for t in ["`kind`", "`kubectl`", "`docker`", "docs.docker.com"] {
            assert!(e.contains(t), "{t} in {e}");
        }
    }

    fn pod(json: serde_json::Value) -> Pod {
        Pod(json)
    }

    #[test]
    fn oom_kills_from_pod_status() {
        let p = pod(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "taskmanager-abc", "uid": "u1"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "taskmanager", "image": "flink:1.10.3", "imageID": "", "ready": true,
                "restartCount": 2,
                "state": {"running": {"startedAt": "2024-01-01T00:00:10Z"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "containerID": "containerd://c2"}}
            }]}
        }));
        assert_eq!(oom_killed_runs(&p, "taskmanager"), ["containerd://c2"]);
        assert!(oom_killed_runs(&p, "jobmanager").is_empty());
        assert_eq!(
            pod_problems(std::slice::from_ref(&p)),
            ["taskmanager-abc/taskmanager: last run ended OOMKilled (exit 137), 2 restart(s)"]
        );
        let gone = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-old", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running"}
        }));
        let pending = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-new"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "taskmanager", "image": "flink:1.10.3", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}
            }]}
        }));
        let pods = [gone, pending, p];
        assert_eq!(current_pod(&pods).map(Pod::name), Some("taskmanager-abc"));
        assert_eq!(
            current_pod(&pods[..2]).map(Pod::name),
            Some("taskmanager-new")
        );
        assert!(pod_problems(&pods[1..2])[0].contains("ErrImageNeverPull not present"));
    }

    #[test]
    fn where_to_kill_and_whether_it_runs() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-abc"},
            "spec": {"nodeName": "flink-jemalloc-control-plane", "containers": []},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "taskmanager", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": "containerd://0123abcd",
                "state": {"running": {"startedAt": "2024-01-01T00:00:10Z"}}
            }]}
        }));
        assert_eq!(
            container_on_node(&p, "taskmanager"),
            Some(("flink-jemalloc-control-plane".into(), "0123abcd".into()))
        );
        assert_eq!(container_on_node(&p, "jobmanager"), None);
        assert!(container_running(&p, "taskmanager"));
        let restarting = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-abc"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "taskmanager", "image": "i", "imageID": "", "ready": false,
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "containerID": "containerd://0123abcd"}}
            }]}
        }));
        assert!(!container_running(&restarting, "taskmanager"));
        assert_eq!(
            container_on_node(&restarting, "taskmanager"),
            None,
            "no node"
        );
        // The kill: crictl in the node's container, then the pod deleted (no back-off).
        let (crictl, delete) = kill_commands(&p, "taskmanager").unwrap();
        assert_eq!(
            crictl,
            [
                "exec",
                "flink-jemalloc-control-plane",
                "crictl",
                "stop",
                "--timeout",
                "0",
                "0123abcd"
            ]
        );
        assert_eq!(
            delete,
            [
                "delete",
                "pod",
                "taskmanager-abc",
                "--grace-period=0",
                "--force",
                "--wait=false"
            ]
        );
        assert_eq!(kill_commands(&restarting, "taskmanager"), None);
    }

    /// Two polls of one pod a second apart, as `kubectl get pods -o json` showed them: the
    /// container was OOM-killed and restarted in place between them (the first restart is
    /// immediate), so both polls see it running; only its id and restartCount changed.
    #[test]
    fn a_restart_between_two_polls_is_seen() {
        let poll = |restarts: u32, id: &str, last: serde_json::Value| {
            pod(serde_json::json!({
                "metadata": {"name": "taskmanager-7d9f-x2x", "uid": "u1"},
                "spec": {"nodeName": "flink-jemalloc-control-plane"},
                "status": {"phase": "Running", "containerStatuses": [{
                    "name": "taskmanager", "ready": true, "restartCount": restarts,
                    "containerID": id,
                    "state": {"running": {"startedAt": "2026-12-05T20:00:00Z"}},
                    "lastState": last
                }]}
            }))
        };
        let before = poll(0, "containerd://aaa", serde_json::json!({}));
        let after = poll(
            1,
            "containerd://bbb",
            serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                "containerID": "containerd://aaa", "finishedAt": "2026-12-05T20:01:00Z"}}),
        );
        assert!(
            container_running(&before, "taskmanager") && container_running(&after, "taskmanager")
        );
        let (a, b) = (
            container_run(&before, "taskmanager"),
            container_run(&after, "taskmanager"),
        );
        assert_eq!(a.as_deref(), Some("taskmanager-7d9f-x2x/containerd://aaa"));
        assert!(restarted_unseen(a.as_deref(), b.as_deref()));
        assert!(!restarted_unseen(a.as_deref(), a.as_deref()));
        assert!(!restarted_unseen(None, b.as_deref()), "the first poll");
        assert!(!restarted_unseen(a.as_deref(), None), "no status yet");
        // The OOM kill is counted from lastState, once, by its container id.
        assert_eq!(oom_killed_runs(&after, "taskmanager"), ["containerd://aaa"]);
    }
}
