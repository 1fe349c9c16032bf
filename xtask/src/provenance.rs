//! What made a measurement: the checkout's commit (and whether it had uncommitted changes)
//! and the machine (CPUs online, memory, cgroup version, kernel, the container engine), so a
//! recorded report says which code and which host its figures come from; and the CPUs online
//! as glibc counts them (`/sys/devices/system/cpu/online`), which the e2e drivers read in a
//! TaskManager container too.

use serde::{Deserialize, Serialize};
use std::path::Path;
use xshell::{cmd, Shell};

/// The code and the machine behind a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Provenance {
    /// `git rev-parse HEAD` of the checkout, when it is one.
    pub commit: Option<String>,
    /// Whether tracked files differed from that commit (`git status --porcelain
    /// --untracked-files=no` printed anything).
    pub dirty: Option<bool>,
    pub machine: Machine,
}

/// The host a measurement ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// `/sys/devices/system/cpu/online`, counted.
    pub cpus_online: Option<u32>,
    /// `MemTotal` of `/proc/meminfo`, MiB.
    pub memory_mib: Option<u64>,
    /// `v2` where `/sys/fs/cgroup` is the unified hierarchy, else `v1`.
    pub cgroup: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// The engine that ran the containers, e.g. `docker 20.10.24`, `runc 1.1.5`.
    pub engine: Option<String>,
}

impl Provenance {
    /// Returns the checkout at `root` and this machine, with `engine` as given.
    pub(crate) fn here(root: &Path, engine: Option<String>) -> Provenance {
        let sh = Shell::new().ok();
        let git = |args: &[&str]| -> Option<String> {
            let sh = sh.as_ref()?;
            cmd!(sh, "git -C {root} {args...}")
                .quiet()
                .ignore_stderr()
                .read()
                .ok()
        };
        let commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
        let dirty = commit
            .as_ref()
            .and(git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.trim().is_empty());
        let read = |p: &str| std::fs::read_to_string(p).ok();
        Provenance {
            commit,
            dirty,
            machine: Machine {
                cpus_online: host_cpus_online(),
                memory_mib: read("/proc/meminfo").and_then(|m| mem_total_mib(&m)),
                cgroup: if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
                    "v2"
                } else {
                    "v1"
                }
                .to_string(),
                kernel: read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_string()),
                engine,
            },
        }
    }

    /// Formats one line for people: `commit 1a2b3c4d (uncommitted changes), 2 CPUs, 23 GiB,
    /// cgroup v1, kernel 6.1.0, docker 20.10.24`.
    pub(crate) fn line(&self) -> String {
        let mut parts = vec![match (&self.commit, self.dirty) {
            (Some(c), Some(true)) => format!("commit {} with uncommitted changes", short(c)),
            (Some(c), _) => format!("commit {}", short(c)),
            (None, _) => "no git commit".to_string(),
        }];
        let m = &self.machine;
        if let Some(c) = m.cpus_online {
            parts.push(format!("{c} CPUs"));
        }
        if let Some(mib) = m.memory_mib {
            parts.push(format!("{:.0} GiB", mib as f64 / 1024.0));
        }
        parts.push(format!("cgroup {}", m.cgroup));
        if let Some(k) = &m.kernel {
            parts.push(format!("kernel {k}"));
        }
        if let Some(e) = &m.engine {
            parts.push(e.clone());
        }
        parts.join(", ")
    }
}

/// Returns the number of CPUs in a kernel CPU list (`0-3,8,10-11` → 7), as in
/// `/sys/devices/system/cpu/online`; None for anything else.
pub(crate) fn cpu_count(list: &str) -> Option<u32> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    list.split(',').try_fold(0u32, |n, part| {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to): (u32, u32) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
        Some(n + to.checked_sub(from)? + 1)
    })
}

/// Returns the CPUs online on this machine: what a container here sees too (the file is not
/// namespaced).
pub(crate) fn host_cpus_online() -> Option<u32> {
    cpu_count(&std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?)
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// Returns `MemTotal:  24634824 kB` of `/proc/meminfo` in MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_checkout_and_machine() {
        let p = Provenance::here(&crate::project::root(), Some("docker 1.0".into()));
        // The tests run in a git checkout (a clean clone in CI).
        let commit = p.commit.clone().expect("a commit");
        assert_eq!(commit.len(), 40, "{commit}");
        assert!(p.dirty.is_some());
        assert!(p.machine.cpus_online.is_some_and(|c| c >= 1));
        assert!(p.machine.memory_mib.is_some_and(|m| m > 0));
        let line = p.line();
        assert!(
            line.starts_with(&format!("commit {}", &commit[..10])),
            "{line}"
        );
        assert!(
            line.ends_with("docker 1.0") && line.contains("cgroup v"),
            "{line}"
        );
        let elsewhere = Provenance::here(Path::new("/"), None);
        assert_eq!((&elsewhere.commit, elsewhere.dirty), (&None, None));
        assert!(elsewhere.line().starts_with("no git commit"));
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("0-1\n"), Some(2));
        assert_eq!(cpu_count("0-3,8,10-11"), Some(7));
        assert_eq!(cpu_count("0"), Some(1));
        for bad in ["", "3-1", "a-b", "0-"] {
            assert_eq!(cpu_count(bad), None, "{bad}");
        }
    }

    #[test]
    fn memory_is_read_from_meminfo() {
        assert_eq!(
            mem_total_mib("MemTotal:       24634824 kB\nMemFree: 1 kB\n"),
            Some(24057)
        );
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
    }
}
