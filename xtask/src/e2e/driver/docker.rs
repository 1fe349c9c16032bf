//! The e2e scenario on a Docker engine (`--driver docker`): the JobManager and each
//! TaskManager are `docker run --detach` containers of the loaded image, through its own
//! entrypoint (`jobmanager`, `taskmanager`), configured as the kind pods are
//! (`JOB_MANAGER_RPC_ADDRESS`, `FLINK_PROPERTIES`, the TaskManager's allocator environment);
//! the TaskManager gets `--memory` as its pod limit and a host directory bind-mounted at
//! [`DUMP_DIR`], a new one per TaskManager container.
//!
//! Networking: the host network by default (engines without a bridge, like this machine's),
//! where Flink listens on 127.0.0.1; or a user-defined network (`--docker-network NAME`,
//! created when missing and removed afterwards if this run created it) where the JobManager
//! is found by its alias `jobmanager`, as a pod finds its Service, and its REST port is
//! published on 127.0.0.1.
//!
//! Everything this cluster makes carries the label `io.github.flink-jemalloc.run=<id>` and
//! is removed when the cluster is dropped or the run is interrupted ([`crate::teardown`]).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::docker::{self, docker, docker_text, Container};
use crate::e2e::cluster::{
    parse_memory_probe, probe_while_running, Cluster, ClusterSpec, ContainerMemory, MEMORY_PROBE,
};
use crate::e2e::flink_rest::FlinkRest;
use crate::heap_profile::ContainerFiles;
use crate::heap_profile::{self, DUMP_DIR};

use super::flink_process;
use crate::progress;
use crate::teardown;

/// The label every container and network of a run carries.
pub const RUN_LABEL: &str = "io.github.flink-jemalloc.run";

/// Clusters started by this process, for unique names.
static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How to run the cluster.
#[derive(Debug, Clone)]
pub(crate) struct DockerOptions {
    /// The image, loaded into the engine (`docker::image_name`).
    pub image: String,
    /// A user-defined network; None means the host network.
    pub network: Option<String>,
    /// Where each TaskManager's dump directory is made (`tm-<n>`), on the engine's host.
    pub dumps: PathBuf,
    /// Where the containers' logs are written when they are removed.
    pub logs: PathBuf,
}

/// The `docker run` arguments of one container (pure, so that they can be checked).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunArgs {
    pub name: String,
    pub role: &'static str,
    pub env: Vec<(String, String)>,
    pub memory_limit: Option<u64>,
    /// (host directory, container path)
    pub binds: Vec<(PathBuf, String)>,
    /// None means the host network.
    pub network: Option<String>,
    pub network_alias: Option<String>,
    /// (host address:port, container port) published.
    pub publish: Option<(String, u16)>,
    pub labels: Vec<(String, String)>,
}

impl RunArgs {
    /// Returns the `docker run --detach …` arguments, with the image and the role last.
    fn to_args(&self, image: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), "--detach".into(), "--name".into()];
        a.push(self.name.clone());
        for (k, v) in &self.labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        a.extend([
            "--network".into(),
            self.network.clone().unwrap_or_else(|| "host".into()),
        ]);
        if let Some(alias) = &self.network_alias {
            a.extend(["--network-alias".into(), alias.clone()]);
        }
        if let Some((host, port)) = &self.publish {
            a.extend(["--publish".into(), format!("{host}:{port}")]);
        }
        if let Some(limit) = self.memory_limit {
            // No swap beyond the limit, as in a pod.
            a.extend([
                "--memory".into(),
                format!("{limit}b"),
                "--memory-swap".into(),
                format!("{limit}b"),
            ]);
        }
        for (host, dest) in &self.binds {
            a.extend(["--volume".into(), format!("{}:{dest}", host.display())]);
        }
        for (k, v) in &self.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        a.push(image.to_string());
        a.push(self.role.to_string());
        a
    }
}

/// Returns the environment of both containers: what a kind pod gets. On the host network
/// Flink's configuration is the spec's as it is (REST on 127.0.0.1 at the spec's port); on a
/// user-defined network it is the pods' ([`flink_process::flink_properties`]: the JobManager is
/// `jobmanager`, REST on 8081, published on 127.0.0.1 at the spec's port).
pub(crate) fn common_env(spec: &ClusterSpec, network: Option<&str>) -> Vec<(String, String)> {
    let (address, props) = match network {
        None => {
            let mut p = String::new();
            for (k, v) in &spec.conf {
                p.push_str(&format!("{k}: {v}\n"));
            }
            p.push_str("jobmanager.rpc.address: 127.0.0.1\n");
            ("127.0.0.1".to_string(), p)
        }
        Some(_) => (
            flink_process::JOBMANAGER.to_string(),
            flink_process::flink_properties(spec),
        ),
    };
    vec![
        ("JOB_MANAGER_RPC_ADDRESS".into(), address),
        ("FLINK_PROPERTIES".into(), props),
    ]
}

pub(crate) struct DockerCluster {
    opts: DockerOptions,
    spec: ClusterSpec,
    /// Prefix of the container names, and the value of [`RUN_LABEL`].
    run: String,
    jobmanager: String,
    /// The current TaskManager container and its number (the first is 1).
    taskmanager: Option<(String, u32)>,
    incarnation: u32,
    /// The REST id of the current TaskManager.
    taskmanager_id: Option<String>,
    /// OOM kills of TaskManager containers that are gone.
    past_oom_kills: u64,
    created_network: bool,
    rest: FlinkRest,
    _teardown: teardown::Guard,
}

impl DockerCluster {
    /// Starts the JobManager, waits for its REST API, starts a TaskManager and returns once
    /// it registered. On an error everything made so far is removed.
    pub(crate) fn start(opts: &DockerOptions, spec: &ClusterSpec) -> Result<DockerCluster> {
        docker::require("--driver docker")?;
        std::fs::create_dir_all(&opts.logs)?;
        std::fs::create_dir_all(&opts.dumps)?;
        let run = format!(
            "flink-jemalloc-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let label = format!("{RUN_LABEL}={run}");
        let guard = teardown::on_interrupt(format!("docker containers {run}-*"), move || {
            docker::remove_labelled(&label)
        });
        let rest_port = spec.rest_port;
        let mut cluster = DockerCluster {
            opts: opts.clone(),
            spec: spec.clone(),
            jobmanager: format!("{run}-jobmanager"),
            run,
            taskmanager: None,
            incarnation: 0,
            taskmanager_id: None,
            past_oom_kills: 0,
            created_network: false,
            rest: FlinkRest::new(&format!("http://127.0.0.1:{rest_port}")),
            _teardown: guard,
        };
        if let Some(net) = &opts.network {
            if docker(&["network", "inspect", net]).is_err() {
                let label = format!("{RUN_LABEL}={}", cluster.run);
                docker(&["network", "create", "--label", &label, net])
                    .with_context(|| format!("creating docker network {net}"))?;
                cluster.created_network = true;
            }
        }
        let jm = RunArgs {
            name: cluster.jobmanager.clone(),
            role: "jobmanager",
            env: common_env(spec, opts.network.as_deref()),
            memory_limit: None,
            binds: vec![],
            network: opts.network.clone(),
            network_alias: opts
                .network
                .as_ref()
                .map(|_| flink_process::JOBMANAGER.to_string()),
            publish: opts.network.as_ref().map(|_| {
                (
                    format!("127.0.0.1:{rest_port}"),
                    flink_process::REST_PORT as u16,
                )
            }),
            labels: cluster.labels(),
        };
        cluster.run_container(&jm)?;
        cluster.wait_for_rest(Duration::from_secs(120))?;
        cluster.start_taskmanager(&[])?;
        Ok(cluster)
    }

    fn labels(&self) -> Vec<(String, String)> {
        vec![(RUN_LABEL.to_string(), self.run.clone())]
    }

    /// Returns the host directory mounted at [`DUMP_DIR`] in TaskManager `n`.
    pub(crate) fn dump_volume(&self, n: u32) -> PathBuf {
        self.opts.dumps.join(format!("tm-{n}"))
    }

    /// Returns the current TaskManager's container name.
    pub(crate) fn taskmanager_container(&self) -> Option<&str> {
        self.taskmanager.as_ref().map(|(c, _)| c.as_str())
    }

    fn run_container(&self, r: &RunArgs) -> Result<()> {
        let args = r.to_args(&self.opts.image);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        teardown::critical(|| docker(&args))
            .with_context(|| format!("starting the {} container {}", r.role, r.name))?;
        Ok(())
    }

    /// Starts TaskManager n+1 and waits until a TaskManager not in `known` registered.
    fn start_taskmanager(&mut self, known: &[String]) -> Result<()> {
        self.incarnation += 1;
        let n = self.incarnation;
        let volume = self.dump_volume(n);
        std::fs::create_dir_all(&volume)?;
        // The JVM runs as the image's user (flink); the directory is the engine host's.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o777))
            .with_context(|| format!("chmod {}", volume.display()))?;
        let mut env = common_env(&self.spec, self.opts.network.as_deref());
        env.push(("TASK_MANAGER_NUMBER_OF_TASK_SLOTS".into(), "1".into()));
        env.extend(self.spec.taskmanager_env.iter().cloned());
        let name = format!("{}-taskmanager-{n}", self.run);
        let tm = RunArgs {
            name: name.clone(),
            role: "taskmanager",
            env,
            memory_limit: Some(self.spec.taskmanager_memory_limit),
            binds: vec![(std::path::absolute(&volume)?, DUMP_DIR.to_string())],
            network: self.opts.network.clone(),
            network_alias: None,
            publish: None,
            labels: self.labels(),
        };
        self.run_container(&tm)?;
        self.taskmanager = Some((name.clone(), n));
        let start = Instant::now();
        loop {
            if let Ok(ids) = self.rest.taskmanager_ids() {
                if let Some(id) = ids.iter().find(|id| !known.contains(id)) {
                    self.taskmanager_id = Some(id.clone());
                    return Ok(());
                }
            }
            let state = docker::container_state(&name)?;
            if !state.running {
                self.save_logs(&name, &format!("taskmanager-{n}"));
                bail!(
                    "the TaskManager container {name} exited (exit {}{}); see {}",
                    state.exit_code,
                    if state.oom_killed { ", OOM-killed" } else { "" },
                    self.opts
                        .logs
                        .join(format!("taskmanager-{n}.log"))
                        .display()
                );
            }
            if start.elapsed() > Duration::from_secs(120) {
                self.save_logs(&name, &format!("taskmanager-{n}"));
                bail!(
                    "the TaskManager did not register within 120 s; see {}",
                    self.opts
                        .logs
                        .join(format!("taskmanager-{n}.log"))
                        .display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn wait_for_rest(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while self.rest.overview().is_err() {
            let state = docker::container_state(&self.jobmanager)?;
            if !state.running || start.elapsed() > timeout {
                self.save_logs(&self.jobmanager, "jobmanager");
                bail!(
                    "{}; see {}",
                    if state.running {
                        format!(
                            "the JobManager's REST API did not answer within {} s",
                            timeout.as_secs()
                        )
                    } else {
                        format!("the JobManager exited (exit {})", state.exit_code)
                    },
                    self.opts.logs.join("jobmanager.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Saves the `docker logs` of a container into `logs/<file>.log`; best effort.
    fn save_logs(&self, container: &str, file: &str) {
        let sh = match xshell::Shell::new() {
            Ok(sh) => sh,
            Err(_) => return,
        };
        if let Ok(out) = xshell::cmd!(sh, "docker logs {container}")
            .quiet()
            .ignore_status()
            .output()
        {
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            let _ = std::fs::write(self.opts.logs.join(format!("{file}.log")), text);
        }
    }
}

impl Cluster for DockerCluster {
    fn rest(&self) -> &FlinkRest {
        &self.rest
    }

    fn taskmanager_id(&self) -> Option<&str> {
        self.taskmanager_id.as_deref()
    }

    /// Runs [`MEMORY_PROBE`] through `docker exec` while the container runs; a container
    /// that is not running has no RSS, and counts as an OOM kill when `docker inspect` says
    /// so.
    fn taskmanager_memory(&self) -> Result<ContainerMemory> {
        let (name, _) = self.taskmanager.as_ref().context("no TaskManager")?;
        let state = std::cell::RefCell::new(docker::ContainerState::default());
        let text = probe_while_running(
            || {
                *state.borrow_mut() = docker::container_state(name)?;
                Ok(state.borrow().running)
            },
            || docker_text(&["exec", name, "sh", "-c", MEMORY_PROBE]),
        )
        .with_context(|| format!("reading the memory of {name}"))?;
        let probed = text.as_deref().map(parse_memory_probe).unwrap_or_default();
        let state = state.into_inner();
        Ok(ContainerMemory {
            oom_kills: self.past_oom_kills + u64::from(!state.running && state.oom_killed),
            ..probed
        })
    }

    /// Kills the TaskManager container with `docker kill` (SIGKILL), keeps its logs and
    /// removes the container, then starts a new TaskManager container; returns once a
    /// TaskManager with a new id registered (the dead one stays listed until its heartbeat
    /// times out).
    fn kill_taskmanager(&mut self) -> Result<()> {
        let known = self.rest.taskmanager_ids()?;
        if let Some((name, n)) = self.taskmanager.take() {
            let _ = docker(&["kill", "--signal", "KILL", &name]);
            let start = Instant::now();
            let state = loop {
                let s = docker::container_state(&name)?;
                if !s.running || start.elapsed() > Duration::from_secs(30) {
                    break s;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            self.past_oom_kills += u64::from(state.oom_killed);
            self.save_logs(&name, &format!("taskmanager-{n}"));
            let _ = docker(&["rm", "--force", &name]);
        }
        self.start_taskmanager(&known)
    }

    fn collect(&self, out: &Path) -> Result<()> {
        let (name, _) = self.taskmanager.as_ref().context("no TaskManager")?;
        let c = Container(name.clone());
        let got = heap_profile::collect(&c, DUMP_DIR, out)?;
        if !got.missing.is_empty() {
            progress::note(format!(
                "mapped but gone from {}: {}",
                c.describe(),
                got.missing.join(", ")
            ));
        }
        Ok(())
    }

    fn dump_times(&self) -> Result<Vec<(String, f64)>> {
        // The bind-mounted host directory: readable after the container died, too.
        let (_, n) = self.taskmanager.as_ref().context("no TaskManager")?;
        crate::heap_profile::dump_times_in(&self.dump_volume(*n))
    }
}

impl Drop for DockerCluster {
    /// Keeps the logs, then removes the containers and the network this cluster made.
    fn drop(&mut self) {
        if let Some((name, n)) = &self.taskmanager {
            self.save_logs(name, &format!("taskmanager-{n}"));
        }
        self.save_logs(&self.jobmanager, "jobmanager");
        docker::remove_labelled(&format!("{RUN_LABEL}={}", self.run));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            conf: vec![
                ("state.backend".into(), "rocksdb".into()),
                ("rest.address".into(), "127.0.0.1".into()),
                ("rest.port".into(), "18090".into()),
            ],
            taskmanager_env: vec![("LD_PRELOAD".into(), "/opt/jemalloc/lib/x.so".into())],
            taskmanager_memory_limit: 2 << 30,
            rest_port: 18090,
        }
    }

    #[test]
    fn host_network_keeps_the_specs_addresses() {
        let env = common_env(&spec(), None);
        assert_eq!(
            env[0],
            ("JOB_MANAGER_RPC_ADDRESS".into(), "127.0.0.1".into())
        );
        let props = &env[1].1;
        assert!(props.contains("rest.port: 18090\n"), "{props}");
        assert!(props.contains("state.backend: rocksdb\n"), "{props}");
        assert!(
            props.ends_with("jobmanager.rpc.address: 127.0.0.1\n"),
            "{props}"
        );
    }

    #[test]
    fn user_network_configures_like_the_pods() {
        let env = common_env(&spec(), Some("flink"));
        assert_eq!(env[0].1, "jobmanager");
        assert_eq!(env[1].1, flink_process::flink_properties(&spec()));
        assert!(env[1].1.contains("rest.port: 8081\n"));
    }

    #[test]
    fn run_args_for_a_taskmanager() {
        let r = RunArgs {
            name: "x-taskmanager-1".into(),
            role: "taskmanager",
            env: vec![("A".into(), "1 2".into())],
            memory_limit: Some(2 << 30),
            binds: vec![("/w/tm-1".into(), "/jeprof".into())],
            network: None,
            network_alias: None,
            publish: None,
            labels: vec![(RUN_LABEL.into(), "x".into())],
        };
        let a = r.to_args("localhost/flink-jemalloc:t");
        let s = a.join(" ");
        assert!(s.starts_with("run --detach --name x-taskmanager-1 "), "{s}");
        assert!(s.contains("--label io.github.flink-jemalloc.run=x"), "{s}");
        assert!(s.contains("--network host"), "{s}");
        assert!(
            s.contains("--memory 2147483648b --memory-swap 2147483648b"),
            "{s}"
        );
        assert!(s.contains("--volume /w/tm-1:/jeprof"), "{s}");
        assert!(a.contains(&"A=1 2".to_string()), "one argument: {a:?}");
        assert_eq!(
            &a[a.len() - 2..],
            ["localhost/flink-jemalloc:t", "taskmanager"]
        );

        let jm = RunArgs {
            role: "jobmanager",
            memory_limit: None,
            binds: vec![],
            network: Some("flink".into()),
            network_alias: Some("jobmanager".into()),
            publish: Some(("127.0.0.1:18090".into(), 8081)),
            ..r
        };
        let s = jm.to_args("i").join(" ");
        assert!(
            s.contains("--network flink --network-alias jobmanager"),
            "{s}"
        );
        assert!(s.contains("--publish 127.0.0.1:18090:8081"), "{s}");
        assert!(!s.contains("--memory"), "{s}");
    }
}
