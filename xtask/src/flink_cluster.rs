//! A Flink JobManager and TaskManager run from an unpacked image bundle on this machine,
//! without Kubernetes: each in its own mount namespace (`unshare`) with `/proc` and `/dev`
//! mounted, `chroot`ed into the rootfs, started through the image's own entrypoint, on the
//! host network. This is the e2e scenario's no-Kubernetes driver; e2e/NOTES.md records how
//! it was worked out. Needs root.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::flink_rest::FlinkRest;

/// Mounts `/proc` and `/dev` in a private mount namespace, then runs the image's command
/// chrooted with exactly the environment given (`env -i`).
const LAUNCH: &str = r#"R=$1; shift
mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" || exit 1
exec chroot "$R" env -i "$@""#;

/// What to run the cluster with.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// `flink-conf.yaml` entries appended to the image's configuration.
    pub conf: Vec<(String, String)>,
    /// Extra environment of the TaskManager only (LD_PRELOAD, MALLOC_CONF).
    pub taskmanager_env: Vec<(String, String)>,
    pub rest_port: u16,
}

impl ClusterSpec {
    /// RocksDB state, one slot, REST on loopback.
    pub fn rocksdb(rest_port: u16) -> ClusterSpec {
        ClusterSpec {
            conf: vec![
                ("state.backend".into(), "rocksdb".into()),
                (
                    "state.checkpoints.dir".into(),
                    "file:///tmp/flink-checkpoints".into(),
                ),
                ("rest.address".into(), "127.0.0.1".into()),
                ("rest.port".into(), rest_port.to_string()),
            ],
            taskmanager_env: Vec::new(),
            rest_port,
        }
    }
}

pub struct ChrootCluster {
    rootfs: PathBuf,
    children: Vec<(String, Child)>,
    pub rest: FlinkRest,
    pub logs: PathBuf,
}

/// The `process.env` of a runtime bundle's `config.json` (what `umoci unpack` writes).
pub fn bundle_env(bundle: &Path) -> Result<Vec<String>> {
    let path = bundle.join("config.json");
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(cfg["process"]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

impl ChrootCluster {
    /// Starts the JobManager, waits for its REST API, starts the TaskManager, and waits until
    /// it registered. Logs go to `logs/{jobmanager,taskmanager}.log`.
    pub fn start(bundle: &Path, spec: &ClusterSpec, logs: &Path) -> Result<ChrootCluster> {
        let rootfs = bundle.join("rootfs");
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        std::fs::write(
            rootfs.join("etc/hosts"),
            format!("127.0.0.1\tlocalhost {}\n", hostname.trim()),
        )?;
        let conf_path = rootfs.join("opt/flink/conf/flink-conf.yaml");
        let mut conf = std::fs::read_to_string(&conf_path)
            .with_context(|| format!("reading {}", conf_path.display()))?;
        conf.push_str("\n# flink-jemalloc e2e\n");
        for (k, v) in &spec.conf {
            conf.push_str(&format!("{k}: {v}\n"));
        }
        std::fs::write(&conf_path, conf)?;
        std::fs::create_dir_all(logs)?;
        let mut env = bundle_env(bundle)?;
        env.push("HOME=/root".into());
        env.push("JOB_MANAGER_RPC_ADDRESS=127.0.0.1".into());
        let rest = FlinkRest::new(&format!("http://127.0.0.1:{}", spec.rest_port));
        let mut cluster = ChrootCluster {
            rootfs: rootfs.clone(),
            children: Vec::new(),
            rest,
            logs: logs.to_path_buf(),
        };

        let jm = cluster.launch("jobmanager", &env)?;
        cluster.children.push(("jobmanager".into(), jm));
        cluster.wait_for_rest(Duration::from_secs(120))?;
        let mut tm_env = env.clone();
        tm_env.push("TASK_MANAGER_NUMBER_OF_TASK_SLOTS=1".into());
        tm_env.extend(spec.taskmanager_env.iter().map(|(k, v)| format!("{k}={v}")));
        let tm = cluster.launch("taskmanager", &tm_env)?;
        cluster.children.push(("taskmanager".into(), tm));
        cluster
            .rest
            .wait_for_taskmanagers(1, Duration::from_secs(120))
            .with_context(|| format!("see {}", logs.join("taskmanager.log").display()))?;
        Ok(cluster)
    }

    fn launch(&self, role: &str, env: &[String]) -> Result<Child> {
        let log = std::fs::File::create(self.logs.join(format!("{role}.log")))?;
        // A daemon that outlives this call: std::process, since xshell runs to completion.
        Command::new("setsid")
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                LAUNCH,
                "sh",
            ])
            .arg(&self.rootfs)
            .args(env)
            .args(["/docker-entrypoint.sh", role])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {role} (needs root, unshare and chroot)"))
    }

    fn wait_for_rest(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while self.rest.overview().is_err() {
            for (role, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the {role} exited ({status}); see {}",
                        self.logs.join(format!("{role}.log")).display()
                    );
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "the JobManager's REST API did not answer within {timeout:?}; see {}",
                    self.logs.join("jobmanager.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// The TaskManager's JVM pid (the launcher `exec`s into it; the entrypoint drops to the
    /// flink user with gosu, which execs too).
    pub fn taskmanager_pid(&self) -> Option<u32> {
        self.children
            .iter()
            .find(|(r, _)| r == "taskmanager")
            .map(|(_, c)| c.id())
    }

    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }
}

impl Drop for ChrootCluster {
    /// TERM, then KILL after ten seconds; the mount namespaces go with the processes.
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
