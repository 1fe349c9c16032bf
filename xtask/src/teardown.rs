//! What a run started is taken down again, also when it is interrupted: Ctrl-C (SIGINT),
//! SIGTERM (a CI job cancelled) and SIGHUP (a closed terminal) run every registered teardown,
//! newest first, then exit with 130. A normal end or an error runs the same teardown through
//! the owners' `Drop`; a registration is a [`Guard`] that forgets its action when dropped.
//!
//! The process's children (`make`, `umoci`, `docker`, …) are killed with it.
//!
//! Work that must not be cut in half by an interruption (creating a container and
//! registering it) runs inside [`critical`]: the interrupt waits for it, so nothing is made
//! after the teardown ran.

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};

type Action = Box<dyn FnOnce() + Send>;

struct Registry {
    next: u64,
    actions: BTreeMap<u64, (String, Action)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    actions: BTreeMap::new(),
});
/// Held by [`critical`] sections and by the interrupt while it tears down.
static CRITICAL: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();

/// A registered teardown; dropping it forgets the action (its owner has done it).
#[must_use = "dropping the guard forgets the teardown at once"]
pub(crate) struct Guard {
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut r) = REGISTRY.lock() {
            r.actions.remove(&self.id);
        }
    }
}

/// Registers `action` (described as `what`, e.g. "docker containers of this run") to run if
/// the process is interrupted before the guard is dropped.
pub(crate) fn on_interrupt(
    what: impl Into<String>,
    action: impl FnOnce() + Send + 'static,
) -> Guard {
    install();
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let id = r.next;
    r.next += 1;
    r.actions.insert(id, (what.into(), Box::new(action)));
    Guard { id }
}

/// Registers the removal of a run's work directory `dir` if the process is interrupted.
pub(crate) fn remove_on_interrupt(dir: &std::path::Path) -> Guard {
    let d = dir.to_path_buf();
    on_interrupt(dir.display().to_string(), move || {
        let _ = std::fs::remove_dir_all(&d);
    })
}

/// Runs `f` so that an interruption waits until it is done.
pub(crate) fn critical<T>(f: impl FnOnce() -> T) -> T {
    let _held = CRITICAL.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

fn install() {
    INSTALL.call_once(|| {
        // Without a handler, the default action (exit) applies: no worse than before.
        let _ = ctrlc::set_handler(interrupted);
    });
}

fn interrupted() {
    let _held = CRITICAL.lock().unwrap_or_else(|e| e.into_inner());
    let actions: Vec<(String, Action)> = {
        let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut r.actions).into_values().rev().collect()
    };
    eprintln!("interrupted: tearing down what this run started");
    for (what, action) in actions {
        eprintln!("    removing {what}");
        action();
    }
    // A `make`, `umoci` or `docker` this run started would go on without it.
    kill_descendants(std::process::id());
    std::process::exit(130);
}

/// Installs the interrupt handler (every command calls this first), so that even a run
/// with nothing registered stops its child processes when interrupted.
pub fn install_handler() {
    install();
}

/// A command's end: waits for an interruption's teardown that may be under way (it ends the
/// process itself, with 130, once everything is taken down, and the error is then its
/// consequence); otherwise prints the error in one line and fails.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    critical(|| ());
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Returns the pids below `pid` in the process tree, from `/proc/<pid>/stat` (`ppid` is the
/// fourth field, after the parenthesised command name, which may itself hold spaces).
fn descendants(pid: u32, stats: &[(u32, String)]) -> Vec<u32> {
    let parent_of = |stat: &str| -> Option<u32> {
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(1)?.parse().ok()
    };
    let parents: Vec<(u32, u32)> = stats
        .iter()
        .filter_map(|(p, stat)| Some((*p, parent_of(stat)?)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            if !found.contains(child) {
                found.push(*child);
                frontier.push(*child);
            }
        }
    }
    found
}

/// SIGKILLs every process below `pid`.
fn kill_descendants(pid: u32) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let stats: Vec<(u32, String)> = dir
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((p, std::fs::read_to_string(e.path().join("stat")).ok()?))
        })
        .collect();
    for child in descendants(pid, &stats) {
        // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
        unsafe {
            libc::kill(child as libc::pid_t, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_ppid() {
        let stats = vec![
            (10, "10 (xtask) S 1 10 10".to_string()),
            (11, "11 (make) S 10 10 10".to_string()),
            (12, "12 (cc1 (x) y) R 11 10 10".to_string()),
            (13, "13 (other) S 1 13 13".to_string()),
        ];
        let mut d = descendants(10, &stats);
        d.sort();
        assert_eq!(d, [11, 12]);
        assert!(descendants(13, &stats).is_empty());
    }
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_dropped_guard_forgets_its_action() {
        let ran = Arc::new(AtomicU32::new(0));
        let r = ran.clone();
        let g = on_interrupt("a test action", move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let id = g.id;
        assert!(REGISTRY.lock().unwrap().actions.contains_key(&id));
        drop(g);
        assert!(!REGISTRY.lock().unwrap().actions.contains_key(&id));
        assert_eq!(critical(|| 7), 7);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
