//! The e2e scenario on a kind cluster (`--driver kind`): creates the cluster from
//! `ci/kind.yaml` or reuses one of that name, loads the image's docker-archive into it,
//! applies the manifests of `kube.rs` in a fresh namespace, waits for the rollout,
//! port-forwards the JobManager's REST API to this machine, and reads the TaskManager's
//! memory with `kubectl exec`. Everything it made (the namespace; the cluster too when it
//! created it) is deleted when it is dropped, unless `keep`.
//!
//! Needs `kind`, `kubectl` and a running Docker engine ([`require_tools`]).

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use crate::cluster::{
    oom_kill_count, vm_rss_kb, Allocator, Cluster, ClusterSpec, ContainerMemory, DUMP_DIR,
};
use crate::flink_rest::FlinkRest;
use crate::kube::{self, KubeParams, JOBMANAGER, TASKMANAGER, TASKMANAGER_SELECTOR};
use crate::kubectl::{error_text, on_path, Kubectl, KUBECTL_INSTALL};
use crate::progress::{self, Step};
use crate::project;

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
    let sh = Shell::new()?;
    let info = cmd!(sh, "docker info").quiet().ignore_status().output()?;
    if !info.status.success() {
        bail!(
            "`docker` is installed but its engine does not answer (`docker info`: {}); \
             start it (`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at one",
            error_text(&String::from_utf8_lossy(&info.stderr))
        );
    }
    Ok(())
}

/// The image name a docker-archive carries (`RepoTags[0]` of its `manifest.json`): the
/// name `kind load image-archive` gives it on the nodes.
pub fn docker_archive_tag(archive: &Path) -> Result<String> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(file);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "manifest.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            let m: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: manifest.json", archive.display()))?;
            return m[0]["RepoTags"][0]
                .as_str()
                .map(str::to_string)
                .with_context(|| {
                    format!(
                        "{}: manifest.json names no RepoTags; pass the image name",
                        archive.display()
                    )
                });
        }
    }
    bail!(
        "{} is not a docker-archive (no manifest.json); write one with \
         `cargo xtask image --format docker-archive --output X.tar`",
        archive.display()
    )
}

/// The memory probe run in the TaskManager container: PID 1's status (the JVM), then the
/// container cgroup's usage and OOM-kill counter, v2 or v1.
pub const MEMORY_PROBE: &str = "cat /proc/1/status; echo @@cgroup; \
if [ -r /sys/fs/cgroup/memory.current ]; then cat /sys/fs/cgroup/memory.current /sys/fs/cgroup/memory.events; \
elif [ -r /sys/fs/cgroup/memory/memory.usage_in_bytes ]; then cat /sys/fs/cgroup/memory/memory.usage_in_bytes /sys/fs/cgroup/memory/memory.oom_control; fi";

/// Parses [`MEMORY_PROBE`]'s output: (VmRSS kB, cgroup bytes, cgroup `oom_kill` count).
pub fn parse_memory_probe(text: &str) -> (Option<u64>, Option<u64>, u64) {
    let (status, cgroup) = text.split_once("@@cgroup").unwrap_or((text, ""));
    let mut lines = cgroup.lines().map(str::trim).filter(|l| !l.is_empty());
    let bytes = lines.next().and_then(|l| l.parse().ok());
    let counters: Vec<&str> = lines.collect();
    (
        vm_rss_kb(status),
        bytes,
        oom_kill_count(&counters.join("\n")),
    )
}

/// Ids of the container's ended runs that the OOM killer ended, as far as the pod's status
/// shows them (its current state and the last one: Kubernetes keeps no older history).
pub fn oom_killed_runs(pod: &Pod, container: &str) -> Vec<String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let Some(cs) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
    else {
        return Vec::new();
    };
    [cs.state.as_ref(), cs.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref())
        .filter(|t| t.reason.as_deref() == Some("OOMKilled"))
        .map(|t| {
            t.container_id.clone().unwrap_or_else(|| {
                format!(
                    "{uid}/{}",
                    t.finished_at
                        .as_ref()
                        .map(|f| format!("{f:?}"))
                        .unwrap_or_default()
                )
            })
        })
        .collect()
}

/// The pod that is the TaskManager now: not being deleted, running if one is.
pub fn current_pod(pods: &[Pod]) -> Option<&Pod> {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .or(live.first())
        .copied()
}

/// Why pods are not running, one line each (`taskmanager-…: ErrImageNeverPull: …`).
pub fn pod_problems(pods: &[Pod]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pods {
        let name = p.metadata.name.as_deref().unwrap_or("?");
        let Some(st) = &p.status else { continue };
        for c in st.container_statuses.iter().flatten() {
            let state = c.state.as_ref();
            if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                out.push(format!(
                    "{name}/{}: {} {}",
                    c.name,
                    w.reason.as_deref().unwrap_or("waiting"),
                    w.message.as_deref().unwrap_or("")
                ));
            }
            if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                out.push(format!(
                    "{name}/{}: last run ended {} (exit {}), {} restart(s)",
                    c.name,
                    t.reason.as_deref().unwrap_or("?"),
                    t.exit_code,
                    c.restart_count
                ));
            }
        }
        if st.container_statuses.is_none() {
            for cond in st.conditions.iter().flatten() {
                if cond.status != "True" {
                    out.push(format!(
                        "{name}: {} {} {}",
                        cond.type_,
                        cond.reason.as_deref().unwrap_or(""),
                        cond.message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }
    out
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct KindOptions {
    /// The kind cluster (created from [`KIND_CONFIG`] when there is none of that name).
    pub cluster: String,
    /// The namespace of this run: deleted first if it exists, created by the manifests.
    pub namespace: String,
    /// The image as a docker-archive (`cargo xtask image --format docker-archive`).
    pub archive: PathBuf,
    /// The image's name on the nodes; None: the archive's `RepoTags[0]`.
    pub image: Option<String>,
    pub allocator: Allocator,
    /// Leave the namespace (and a cluster this run created) in place.
    pub keep: bool,
    /// Where the Flink and port-forward logs are written.
    pub logs: PathBuf,
}

pub struct KindCluster {
    opts: KindOptions,
    kubectl: Kubectl,
    rest: FlinkRest,
    rest_port: u16,
    created_cluster: bool,
    port_forward: Mutex<Option<Child>>,
    /// Runs of the TaskManager container seen OOM-killed (see [`oom_killed_runs`]).
    oom_runs: Mutex<BTreeSet<String>>,
}

impl KindCluster {
    /// Creates or reuses the kind cluster, loads the image, applies the manifests, waits
    /// for the rollout, port-forwards the REST API to `spec.rest_port`, and returns once
    /// the TaskManager registered. On an error, what was made is cleaned up (unless `keep`).
    pub fn start(opts: &KindOptions, spec: &ClusterSpec) -> Result<KindCluster> {
        require_tools()?;
        std::fs::create_dir_all(&opts.logs)?;
        let sh = Shell::new()?;
        let name = &opts.cluster;
        let clusters = cmd!(sh, "kind get clusters")
            .quiet()
            .read()
            .context("kind get clusters")?;
        let created_cluster = !clusters.lines().any(|l| l.trim() == name);
        if created_cluster {
            let config = project::root().join(KIND_CONFIG);
            let step = Step::start(format!("creating kind cluster {name} from {KIND_CONFIG}"));
            cmd!(
                sh,
                "kind create cluster --name {name} --config {config} --wait 180s"
            )
            .run()
            .with_context(|| format!("kind create cluster --name {name}"))?;
            step.done("");
        } else {
            progress::note(format!("reusing kind cluster {name}"));
        }
        let mut cluster = KindCluster {
            opts: opts.clone(),
            kubectl: Kubectl::with_context(&opts.namespace, &format!("kind-{name}")),
            rest: FlinkRest::new(&format!("http://127.0.0.1:{}", spec.rest_port)),
            rest_port: spec.rest_port,
            created_cluster,
            port_forward: Mutex::new(None),
            oom_runs: Mutex::new(BTreeSet::new()),
        };
        cluster.deploy(spec)?;
        Ok(cluster)
    }

    fn deploy(&mut self, spec: &ClusterSpec) -> Result<()> {
        let sh = Shell::new()?;
        let (name, archive) = (&self.opts.cluster, &self.opts.archive);
        let image = match &self.opts.image {
            Some(i) => i.clone(),
            None => docker_archive_tag(archive)?,
        };
        let step = Step::start(format!("loading {image} into kind cluster {name}"));
        cmd!(sh, "kind load image-archive {archive} --name {name}")
            .quiet()
            .run()
            .with_context(|| format!("kind load image-archive {}", archive.display()))?;
        step.done("");

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
        let manifests = kube::manifests(&KubeParams {
            namespace: &ns,
            image: &image,
            cluster_spec: spec,
            allocator: self.opts.allocator,
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

        self.ensure_port_forward()?;
        self.rest
            .wait_for_taskmanagers(1, Duration::from_secs(180))
            .context("the TaskManager did not register with the JobManager")?;
        Ok(())
    }

    /// (Re)starts `kubectl port-forward svc/jobmanager <rest_port>:8081` if it is not
    /// running, and waits until the REST API answers through it.
    fn ensure_port_forward(&self) -> Result<()> {
        let mut pf = self.port_forward.lock().expect("port-forward lock");
        if let Some(child) = pf.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
            progress::note("kubectl port-forward exited; restarting it");
        }
        let log_path = self.opts.logs.join("port-forward.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut args: Vec<String> = Vec::new();
        if let Some(c) = &self.kubectl.context {
            args.extend(["--context".into(), c.clone()]);
        }
        args.extend([
            "--namespace".into(),
            self.opts.namespace.clone(),
            "port-forward".into(),
            format!("svc/{JOBMANAGER}"),
            format!("{}:{}", self.rest_port, kube::REST_PORT),
        ]);
        // A daemon for the cluster's lifetime: std::process, since xshell runs to completion.
        let mut child = Command::new("kubectl")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kubectl port-forward")?;
        let start = Instant::now();
        while self.rest.overview().is_err() {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
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
                    self.rest_port,
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        *pf = Some(child);
        Ok(())
    }

    fn pods(&self, selector: &str) -> Result<Vec<Pod>> {
        let json = self
            .kubectl
            .run(&["get", "pods", "-l", selector, "-o", "json"])?;
        let list: serde_json::Value = serde_json::from_str(&json).context("kubectl get pods")?;
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|p| serde_json::from_value(p).context("a pod from kubectl get pods"))
            .collect()
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
        Ok(self.taskmanager_pod()?.metadata.name.unwrap_or_default())
    }

    /// The kubectl this cluster uses (its context and namespace).
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
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
            let Some(name) = p.metadata.name.as_deref() else {
                continue;
            };
            save(name, false);
            let restarted = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0));
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

    /// `kubectl exec` of [`MEMORY_PROBE`]; OOM kills are the runs the pod statuses showed
    /// OOM-killed plus the current container cgroup's `oom_kill` count. A container that is
    /// not running gives no RSS and no cgroup bytes.
    fn taskmanager_memory(&self) -> Result<ContainerMemory> {
        self.ensure_port_forward()?;
        let pod = self.taskmanager_pod()?;
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let (rss_kb, cgroup_bytes, cgroup_ooms) =
            match self
                .kubectl
                .exec_in(name, Some(TASKMANAGER), &["sh", "-c", MEMORY_PROBE])
            {
                Ok(text) => parse_memory_probe(&text),
                Err(_) => (None, None, 0),
            };
        let seen = self.oom_runs.lock().expect("oom lock").len() as u64;
        Ok(ContainerMemory {
            rss_kb,
            cgroup_bytes,
            oom_kills: seen + cgroup_ooms,
        })
    }

    /// Force-deletes the TaskManager's pod (`--grace-period=0 --force`: the kubelet kills
    /// the container at once) and waits for the Deployment's new pod to run and a TaskManager
    /// with a new id to register. The old pod's dumps go with its emptyDir: collect first.
    fn kill_taskmanager(&mut self) -> Result<()> {
        self.ensure_port_forward()?;
        let before = self.rest.taskmanager_ids()?;
        let old = self.taskmanager_pod_name()?;
        if let Ok(text) = self.kubectl.run(&["logs", &old]) {
            let _ = std::fs::write(self.opts.logs.join(format!("{old}.log")), text);
        }
        let step = Step::start(format!("killing TaskManager pod {old}"));
        self.kubectl
            .run(&[
                "delete",
                "pod",
                &old,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ])
            .with_context(|| format!("deleting pod {old}"))?;
        let start = Instant::now();
        let timeout = Duration::from_secs(240);
        loop {
            let ids = self.rest.taskmanager_ids().unwrap_or_default();
            if ids.iter().any(|id| !before.contains(id)) {
                break;
            }
            if start.elapsed() > timeout {
                let problems = self
                    .pods(TASKMANAGER_SELECTOR)
                    .map(|p| pod_problems(&p).join("\n  "))
                    .unwrap_or_default();
                bail!(
                    "no new TaskManager registered within {timeout:?} after deleting pod {old}\n  {problems}"
                );
            }
            std::thread::sleep(Duration::from_secs(1));
            let _ = self.ensure_port_forward();
        }
        let new = self.taskmanager_pod_name()?;
        step.done(format!("new pod {new}"));
        Ok(())
    }

    fn collect(&self, out: &Path) -> Result<()> {
        let pod = self.taskmanager_pod_name()?;
        let got = crate::collect::collect(&self.kubectl, &pod, Some(TASKMANAGER), DUMP_DIR, out)?;
        if !got.missing.is_empty() {
            progress::note(format!(
                "mapped but gone from {pod}: {}",
                got.missing.join(", ")
            ));
        }
        Ok(())
    }
}

impl Drop for KindCluster {
    /// Stops the port-forward, saves the logs, and deletes the namespace (the cluster too
    /// when this run created it), unless `keep`.
    fn drop(&mut self) {
        if let Ok(mut pf) = self.port_forward.lock() {
            if let Some(mut c) = pf.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.save_logs();
        let (name, ns) = (&self.opts.cluster, &self.opts.namespace);
        if self.opts.keep {
            progress::note(format!(
                "kept: kind cluster {name}, namespace {ns} (`kubectl --context kind-{name} -n {ns} get pods`; \
                 `kind delete cluster --name {name}` removes it all)"
            ));
            return;
        }
        if self.created_cluster {
            if let Ok(sh) = Shell::new() {
                let _ = cmd!(sh, "kind delete cluster --name {name}").quiet().run();
            }
        } else {
            let _ = self
                .kubectl
                .run(&["delete", "namespace", ns, "--wait=false"]);
        }
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

    #[test]
    fn memory_probe_v2_and_v1() {
        let v2 = "Name:\tjava\nVmPeak:\t 4000000 kB\nVmRSS:\t  812344 kB\nThreads:\t80\n@@cgroup\n\
                  1073741824\nlow 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_memory_probe(v2), (Some(812344), Some(1 << 30), 1));
        let v1 = "VmRSS:\t 1000 kB\n@@cgroup\n2048\noom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_memory_probe(v1), (Some(1000), Some(2048), 2));
        assert_eq!(
            parse_memory_probe("VmRSS: 5 kB\n@@cgroup\n"),
            (Some(5), None, 0)
        );
        assert_eq!(parse_memory_probe(""), (None, None, 0));
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
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
        assert_eq!(
            current_pod(&pods).unwrap().metadata.name.as_deref(),
            Some("taskmanager-abc")
        );
        assert_eq!(
            current_pod(&pods[..2]).unwrap().metadata.name.as_deref(),
            Some("taskmanager-new")
        );
        assert!(pod_problems(&pods[1..2])[0].contains("ErrImageNeverPull not present"));
    }

    #[test]
    fn archive_tag() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("img.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let data = br#"[{"Config":"c.json","RepoTags":["flink:1.10.3"],"Layers":[]}]"#;
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &data[..]).unwrap();
        b.finish().unwrap();
        drop(b);
        assert_eq!(docker_archive_tag(&path).unwrap(), "flink:1.10.3");
        std::fs::write(d.path().join("x.tar"), b"").unwrap();
        let e = docker_archive_tag(&d.path().join("x.tar")).unwrap_err();
        assert!(format!("{e:#}").contains("not a docker-archive"), "{e:#}");
    }
}
