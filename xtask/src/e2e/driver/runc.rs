//! A Flink JobManager and TaskManager as two `runc` containers on this machine, no
//! Kubernetes: both run the image's own entrypoint on one rootfs unpacked from the image's
//! OCI layout (`umoci unpack`), on the host network; the TaskManager has a cgroup memory
//! limit from its bundle's `config.json` and a host directory mounted at [`DUMP_DIR`] as its
//! dump volume. e2e/NOTES.md records how this was worked out. Needs root.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xshell::{cmd, Shell};

use crate::e2e::cluster::{oom_kill_count, vm_rss_kb, Cluster, ClusterSpec, ContainerMemory};
use crate::e2e::flink_rest::FlinkRest;
use crate::heap_profile::{self, DUMP_DIR};
use crate::teardown;

/// The capabilities a Docker container gets by default: the entrypoint needs SETUID/SETGID
/// (gosu), CHOWN and DAC_OVERRIDE; umoci's default set is only three.
const DOCKER_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Clusters started by this process, for unique container ids.
static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `--driver runc` needs root (runc makes namespaces and cgroups; the rootfs keeps the
/// image's owners) and the `runc` binary.
pub(crate) fn require() -> Result<()> {
    if !crate::rootless::is_root() {
        bail!(
            "--driver runc needs root (runc makes the containers' namespaces and cgroups): \
             run it with sudo, or use --driver docker with access to a Docker engine"
        );
    }
    let sh = Shell::new()?;
    cmd!(sh, "runc --version")
        .quiet()
        .ignore_stdout()
        .run()
        .context("--driver runc needs `runc` (apt-get install runc)")?;
    Ok(())
}

/// Deletes every runc container whose id starts with `prefix`; best effort, for teardown.
fn delete_prefixed(prefix: &str) {
    let Ok(sh) = Shell::new() else { return };
    let Ok(ids) = cmd!(sh, "runc list --quiet").quiet().ignore_stderr().read() else {
        return;
    };
    for id in ids.lines().filter(|id| id.starts_with(prefix)) {
        let _ = cmd!(sh, "runc delete --force {id}")
            .quiet()
            .ignore_stderr()
            .run();
    }
}

/// One container of the cluster, as its bundle's `config.json` says.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    /// The shared rootfs, absolute.
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub memory_limit: Option<u64>,
    /// cgroup path relative to each hierarchy's root.
    pub cgroups_path: String,
    /// Bind mounts: (host directory, container path).
    pub binds: Vec<(PathBuf, String)>,
    /// RLIMIT_NOFILE (a container cannot raise it above runc's own hard limit).
    pub max_open_files: u64,
}

/// Returns this process's hard limit of open files, at most 65536 (Docker's usual default).
fn open_files_limit(proc_limits: &str) -> u64 {
    proc_limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(65536, |v| v.min(65536))
}

/// Returns the runtime config of `c`, from the one umoci wrote for the image: host network
/// and UTS (so loopback and the host name work as on a pod's node), no terminal, Docker's
/// default capabilities, the memory limit, bind mounts.
fn container_config(image_config: &Value, c: &Container) -> Value {
    let mut cfg = image_config.clone();
    cfg["root"] = json!({"path": c.rootfs, "readonly": false});
    if let Some(o) = cfg.as_object_mut() {
        o.remove("hostname");
    }
    let p = &mut cfg["process"];
    p["terminal"] = json!(false);
    p["args"] = json!(c.args);
    p["env"] = json!(c.env);
    p["noNewPrivileges"] = json!(false);
    let nofile = c.max_open_files;
    p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]);
    let caps = json!(DOCKER_CAPABILITIES);
    p["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    let linux = &mut cfg["linux"];
    if let Some(ns) = linux["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network" && n["type"] != "uts");
    }
    linux["cgroupsPath"] = json!(c.cgroups_path);
    if let Some(limit) = c.memory_limit {
        linux["resources"]["memory"] = json!({"limit": limit});
    }
    if let Some(mounts) = cfg["mounts"].as_array_mut() {
        for (host, dest) in &c.binds {
            mounts.push(json!({
                "destination": dest,
                "type": "bind",
                "source": host,
                "options": ["rbind", "rw"]
            }));
        }
    }
    cfg
}

/// Finds the memory cgroup of a process from its `/proc/<pid>/cgroup`: v1's `memory`
/// hierarchy, else the v2 unified one. Returns the directory under `/sys/fs/cgroup`.
pub fn memory_cgroup_dir(proc_cgroup: &str) -> Option<PathBuf> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(Path::new("/sys/fs/cgroup/memory").join(path));
        }
        if controllers.is_empty() {
            v2 = Some(Path::new("/sys/fs/cgroup").join(path));
        }
    }
    v2
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Returns the usage and OOM kills of a memory cgroup directory (v1 or v2 files).
fn cgroup_memory(dir: &Path) -> (Option<u64>, u64) {
    let usage = read_trimmed(&dir.join("memory.usage_in_bytes"))
        .or_else(|| read_trimmed(&dir.join("memory.current")))
        .and_then(|s| s.parse().ok());
    let ooms = std::fs::read_to_string(dir.join("memory.oom_control"))
        .or_else(|_| std::fs::read_to_string(dir.join("memory.events")))
        .map(|t| oom_kill_count(&t))
        .unwrap_or(0);
    (usage, ooms)
}

struct Running {
    id: String,
    /// Host pid of the container's init (the JVM: the entrypoint `exec`s into it).
    pid: u32,
    cgroup: Option<PathBuf>,
}

pub struct RuncCluster {
    image_config: Value,
    rootfs: PathBuf,
    bundles: PathBuf,
    logs: PathBuf,
    dumps: PathBuf,
    spec: ClusterSpec,
    env: Vec<String>,
    prefix: String,
    jobmanager: Option<Running>,
    taskmanager: Option<Running>,
    /// TaskManagers started so far (the first is 1).
    incarnation: u32,
    /// The REST id of the current TaskManager.
    taskmanager_id: Option<String>,
    /// OOM kills of TaskManagers that are gone.
    past_oom_kills: u64,
    rest: FlinkRest,
    _teardown: teardown::Guard,
}

impl RuncCluster {
    /// Starts the JobManager from the unpacked image `bundle` (umoci's `rootfs/` and
    /// `config.json`), waits for its REST API, starts the TaskManager and waits until it
    /// registered. `work` holds the bundles and, under `dumps/tm-<n>`, each TaskManager's
    /// dump volume; logs go to `logs/`.
    pub fn start(
        bundle: &Path,
        spec: &ClusterSpec,
        work: &Path,
        logs: &Path,
    ) -> Result<RuncCluster> {
        require()?;
        let bundle = std::path::absolute(bundle)?;
        let rootfs = bundle.join("rootfs");
        let config_path = bundle.join("config.json");
        let image_config: Value = serde_json::from_slice(
            &std::fs::read(&config_path)
                .with_context(|| format!("reading {}", config_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        std::fs::write(
            rootfs.join("etc/hosts"),
            format!("127.0.0.1\tlocalhost {}\n", hostname.trim()),
        )?;
        let mut env = crate::bundle::config_env(&image_config);
        env.push("JOB_MANAGER_RPC_ADDRESS=127.0.0.1".into());
        if rootfs.join("opt/flink/conf/flink-conf.yaml").is_file() {
            append_flink_conf(&rootfs, &spec.conf)?;
        } else {
            // Flink 1.19 on reads conf/config.yaml (standard YAML, where a flat key beside a nested
            // one is a conflict): the image's entrypoint sets each key through
            // config-parser-utils.sh from FLINK_PROPERTIES, as on Kubernetes.
            let props: String = spec
                .conf
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect();
            env.push(format!("FLINK_PROPERTIES={props}"));
        }
        let work = std::path::absolute(work)?;
        std::fs::create_dir_all(logs)?;
        let prefix = format!(
            "flink-jemalloc-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let held = prefix.clone();
        let guard = teardown::on_interrupt(format!("runc containers {prefix}-*"), move || {
            delete_prefixed(&held)
        });
        let mut cluster = RuncCluster {
            image_config,
            rootfs,
            bundles: work.join("bundles"),
            logs: logs.to_path_buf(),
            dumps: work.join("dumps"),
            spec: spec.clone(),
            env,
            prefix: prefix.clone(),
            jobmanager: None,
            taskmanager: None,
            incarnation: 0,
            taskmanager_id: None,
            past_oom_kills: 0,
            rest: FlinkRest::new(&format!("http://127.0.0.1:{}", spec.rest_port)),
            _teardown: guard,
        };
        let jm =
            cluster.run_container("jobmanager", "jobmanager", cluster.env.clone(), None, &[])?;
        cluster.jobmanager = Some(jm);
        cluster.wait_for_rest(Duration::from_secs(120))?;
        cluster.start_taskmanager(&[])?;
        Ok(cluster)
    }

    /// Returns the directory mounted at [`DUMP_DIR`] in the current TaskManager.
    pub fn dump_volume(&self) -> PathBuf {
        self.dumps.join(format!("tm-{}", self.incarnation))
    }

    /// Returns the TaskManager JVM's host pid.
    pub fn taskmanager_pid(&self) -> Option<u32> {
        self.taskmanager.as_ref().map(|t| t.pid)
    }

    /// Starts a TaskManager and waits until one not in `known` (ids) registered.
    fn start_taskmanager(&mut self, known: &[String]) -> Result<()> {
        self.incarnation += 1;
        let volume = self.dump_volume();
        std::fs::create_dir_all(&volume)?;
        // The TaskManager runs as the image's flink user (the entrypoint drops to it).
        let (uid, gid) = flink_ids(&self.rootfs).unwrap_or((9999, 9999));
        std::os::unix::fs::chown(&volume, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", volume.display()))?;
        let mut env = self.env.clone();
        env.push("TASK_MANAGER_NUMBER_OF_TASK_SLOTS=1".into());
        env.extend(
            self.spec
                .taskmanager_env
                .iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        let name = format!("taskmanager-{}", self.incarnation);
        let tm = self.run_container(
            &name,
            "taskmanager",
            env,
            Some(self.spec.taskmanager_memory_limit),
            &[(volume, DUMP_DIR.to_string())],
        )?;
        self.taskmanager = Some(tm);
        let start = Instant::now();
        loop {
            if let Ok(ids) = self.rest.taskmanager_ids() {
                if let Some(id) = ids.iter().find(|id| !known.contains(id)) {
                    self.taskmanager_id = Some(id.clone());
                    return Ok(());
                }
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the TaskManager did not register within 120 s; see {}",
                    self.logs.join(format!("{name}.log")).display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn run_container(
        &self,
        name: &str,
        role: &str,
        env: Vec<String>,
        memory_limit: Option<u64>,
        binds: &[(PathBuf, String)],
    ) -> Result<Running> {
        let id = format!("{}-{name}", self.prefix);
        let dir = self.bundles.join(name);
        std::fs::create_dir_all(&dir)?;
        let c = Container {
            rootfs: self.rootfs.clone(),
            args: vec!["/docker-entrypoint.sh".into(), role.into()],
            env,
            memory_limit,
            cgroups_path: format!("/flink-jemalloc/{id}"),
            binds: binds.to_vec(),
            max_open_files: open_files_limit(
                &std::fs::read_to_string("/proc/self/limits").unwrap_or_default(),
            ),
        };
        let cfg = container_config(&self.image_config, &c);
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
        let log_path = self.logs.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        // Detached: runc hands its stdout/stderr (the log file) to the container and returns.
        // std::process, since the container keeps those descriptors open after runc exits.
        let status = teardown::critical(|| {
            Command::new("runc")
                .args(["run", "--detach", "--bundle"])
                .arg(&dir)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .status()
        })
        .context("running runc")?;
        if !status.success() {
            bail!(
                "runc run {id} failed ({status}); see {}",
                log_path.display()
            );
        }
        let state = runc_state(&id)?;
        let pid = state["pid"]
            .as_u64()
            .with_context(|| format!("runc state {id}: no pid"))? as u32;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| memory_cgroup_dir(&t));
        Ok(Running { id, pid, cgroup })
    }

    fn wait_for_rest(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while self.rest.overview().is_err() {
            if let Some(jm) = &self.jobmanager {
                if runc_state(&jm.id)
                    .map(|s| s["status"] == "stopped")
                    .unwrap_or(true)
                {
                    bail!(
                        "the JobManager exited; see {}",
                        self.logs.join("jobmanager.log").display()
                    );
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "the JobManager's REST API did not answer within {} s; see {}",
                    timeout.as_secs(),
                    self.logs.join("jobmanager.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Stops a container: TERM, KILL after ten seconds, then deletes it (and its cgroup).
    fn stop(&self, c: &Running, signal: &str) -> u64 {
        let sh = match Shell::new() {
            Ok(sh) => sh,
            Err(_) => return 0,
        };
        let id = &c.id;
        let _ = cmd!(sh, "runc kill {id} {signal}")
            .quiet()
            .ignore_stderr()
            .run();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if runc_state(id)
                .map(|s| s["status"] == "stopped")
                .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let ooms = c.cgroup.as_deref().map(|d| cgroup_memory(d).1).unwrap_or(0);
        let _ = cmd!(sh, "runc delete --force {id}")
            .quiet()
            .ignore_stderr()
            .run();
        ooms
    }
}

/// Returns the uid and gid of the image's `flink` user, from its /etc/passwd.
fn flink_ids(rootfs: &Path) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"flink") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Returns `runc state <id>` as JSON.
fn runc_state(id: &str) -> Result<Value> {
    let sh = Shell::new()?;
    let out = cmd!(sh, "runc state {id}").quiet().ignore_stderr().read()?;
    Ok(serde_json::from_str(&out)?)
}

impl Cluster for RuncCluster {
    fn rest(&self) -> &FlinkRest {
        &self.rest
    }

    fn taskmanager_id(&self) -> Option<&str> {
        self.taskmanager_id.as_deref()
    }

    fn taskmanager_memory(&self) -> Result<ContainerMemory> {
        let tm = self.taskmanager.as_ref().context("no TaskManager")?;
        let running = runc_state(&tm.id)
            .map(|s| s["status"] == "running")
            .unwrap_or(false);
        let rss_kb = if running {
            std::fs::read_to_string(format!("/proc/{}/status", tm.pid))
                .ok()
                .and_then(|s| vm_rss_kb(&s))
        } else {
            None
        };
        let (cgroup_bytes, ooms) = tm.cgroup.as_deref().map(cgroup_memory).unwrap_or_default();
        Ok(ContainerMemory {
            rss_kb,
            cgroup_bytes,
            oom_kills: self.past_oom_kills + ooms,
            // The container shares this machine's kernel and its /sys.
            cpus_online: crate::provenance::host_cpus_online(),
        })
    }

    fn kill_taskmanager(&mut self) -> Result<()> {
        if let Some(tm) = self.taskmanager.take() {
            self.past_oom_kills += self.stop(&tm, "KILL");
        }
        // The JobManager may list the dead one until its heartbeat times out: wait for a
        // TaskManager it did not know.
        let known = self.rest.taskmanager_ids()?;
        self.start_taskmanager(&known)
    }

    fn collect(&self, out: &Path) -> Result<()> {
        heap_profile::collect_from_dir(&self.dump_volume(), &self.rootfs, out)
    }

    fn dump_times(&self) -> Result<Vec<(String, f64)>> {
        heap_profile::dump_times_in(&self.dump_volume())
    }
}

/// Flink 1.x: writes the image's `flink-conf.yaml` plus `conf`, keeping the image's copy
/// pristine for the next cluster.
fn append_flink_conf(rootfs: &Path, conf: &[(String, String)]) -> Result<()> {
    let conf_path = rootfs.join("opt/flink/conf/flink-conf.yaml");
    let pristine = rootfs.join("opt/flink/conf/.flink-conf.yaml.image");
    if !pristine.exists() {
        std::fs::copy(&conf_path, &pristine)
            .with_context(|| format!("reading {}", conf_path.display()))?;
    }
    let mut text = std::fs::read_to_string(&pristine)?;
    text.push_str("\n# flink-jemalloc e2e\n");
    for (k, v) in conf {
        text.push_str(&format!("{k}: {v}\n"));
    }
    std::fs::write(&conf_path, text).with_context(|| format!("writing {}", conf_path.display()))
}

impl Drop for RuncCluster {
    fn drop(&mut self) {
        for c in [self.taskmanager.take(), self.jobmanager.take()]
            .into_iter()
            .flatten()
        {
            self.stop(&c, "TERM");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umoci_config() -> Value {
        json!({
            "ociVersion": "1.0.0",
            "root": {"path": "rootfs"},
            "hostname": "umoci-default",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "process": {"terminal": true, "args": ["/docker-entrypoint.sh", "help"],
                        "env": ["PATH=/usr/bin"], "noNewPrivileges": true,
                        "capabilities": {"bounding": ["CAP_KILL"]}},
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]},
                      "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                                     {"type": "uts"}, {"type": "mount"}]}
        })
    }

    #[test]
    fn container_config_shares_the_host_network_and_limits_memory() {
        let c = Container {
            rootfs: "/w/bundle/rootfs".into(),
            args: vec!["/docker-entrypoint.sh".into(), "taskmanager".into()],
            env: vec!["A=1".into()],
            memory_limit: Some(2 << 30),
            cgroups_path: "/flink-jemalloc/x".into(),
            binds: vec![("/w/dumps/tm-1".into(), "/jeprof".into())],
            max_open_files: 20000,
        };
        let cfg = container_config(&umoci_config(), &c);
        assert_eq!(cfg["root"]["path"], "/w/bundle/rootfs");
        assert!(cfg.get("hostname").is_none());
        assert_eq!(cfg["process"]["terminal"], false);
        assert_eq!(cfg["process"]["args"][1], "taskmanager");
        let ns: Vec<&str> = cfg["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "mount"]);
        assert_eq!(cfg["linux"]["resources"]["memory"]["limit"], 2u64 << 30);
        assert_eq!(cfg["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(cfg["linux"]["cgroupsPath"], "/flink-jemalloc/x");
        let caps = cfg["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SETUID"));
        let bind = &cfg["mounts"][1];
        assert_eq!(bind["destination"], "/jeprof");
        assert_eq!(bind["source"], "/w/dumps/tm-1");
    }

    #[test]
    fn memory_cgroup_of_v1_and_v2() {
        let v1 = "12:pids:/a\n4:memory:/flink-jemalloc/x\n0::/";
        assert_eq!(
            memory_cgroup_dir(v1).unwrap(),
            Path::new("/sys/fs/cgroup/memory/flink-jemalloc/x")
        );
        assert_eq!(
            memory_cgroup_dir("0::/flink-jemalloc/x\n").unwrap(),
            Path::new("/sys/fs/cgroup/flink-jemalloc/x")
        );
    }

    #[test]
    fn open_files_limit_is_read() {
        assert_eq!(
            open_files_limit("Max cpu time  unlimited unlimited seconds\nMax open files            20000                20000                files\n"),
            20000
        );
        assert_eq!(open_files_limit(""), 65536);
    }
}
