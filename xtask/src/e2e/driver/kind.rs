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

pub(crate) mod pods;
pub(crate) mod port_forward;
pub(crate) mod session;
pub(crate) mod tools;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::e2e::cluster::{
    dump_times_probe, parse_dump_times, parse_memory_probe, probe_while_running, Allocator,
    Cluster, ClusterSpec, ContainerMemory, MEMORY_PROBE,
};
use crate::e2e::driver::kube::{self, KubeParams, JOBMANAGER, TASKMANAGER, TASKMANAGER_SELECTOR};
use crate::e2e::flink_rest::FlinkRest;
use crate::heap_profile::ContainerFiles;
use crate::heap_profile::{self, DUMP_DIR};
use crate::kubectl::Kubectl;
use crate::progress::{self, Step};
use crate::teardown;

use pods::{
    container_run, container_running, current_pod, delete_pod, kill_commands, oom_killed_runs,
    pod_problems, restarted_unseen, Pod,
};
use port_forward::PortForward;
pub use session::KindSession;
pub(crate) use tools::require_tools;

/// How to run one cluster (one allocator) on a [`KindSession`]'s cluster.
#[derive(Debug, Clone)]
pub(crate) struct KindOptions {
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

pub(crate) struct KindCluster {
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
    pub(crate) fn start(opts: &KindOptions, spec: &ClusterSpec) -> Result<KindCluster> {
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

    /// Returns the TaskManager's pod now (after remembering its OOM-killed runs).
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

    /// Returns the TaskManager pod's name.
    fn taskmanager_pod_name(&self) -> Result<String> {
        Ok(self.taskmanager_pod()?.name().to_string())
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
    pub(crate) fn save_logs(&self) {
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

    /// Reads liveness and OOM kills from the pod's `containerStatuses` (a not-running
    /// container has no RSS; `lastState.terminated.reason: OOMKilled` runs are counted once
    /// each; a container whose run changed since the last poll died between the two, and
    /// counts as not running once, so the death is handled), and RSS and cgroup usage by
    /// `kubectl exec` of [`MEMORY_PROBE`], retried while the status says the container runs.
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
    /// then could kill a JVM that has just registered). Then it waits for the new TaskManager.
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
