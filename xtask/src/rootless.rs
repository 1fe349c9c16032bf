//! Work inside an unpacked image without being root, the way ko, Jib, crane and
//! mmdebstrap's `unshare` mode do it: the image is unpacked rootless (`umoci unpack
//! --rootless`: every file owned by the caller, the image's owners kept in xattrs), and the
//! in-image steps (`ldconfig`, `dot -c`, jeprof in `analyze`) run chrooted inside a user
//! namespace where the caller is root (`unshare --map-root-user`). As root, both are the
//! plain commands. Where user namespaces are not allowed, the error names the sysctl that
//! forbids them and the `sudo` alternative.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;
use xshell::{cmd, Shell};

/// Returns the effective uid of this process, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// The sysctls that can forbid unprivileged user namespaces: (file under /proc/sys, name,
/// the value that forbids them, the value that allows them).
const USERNS_SYSCTLS: &[(&str, &str, &str, &str)] = &[
    (
        "kernel/apparmor_restrict_unprivileged_userns",
        "kernel.apparmor_restrict_unprivileged_userns",
        "1",
        "0",
    ),
    (
        "kernel/unprivileged_userns_clone",
        "kernel.unprivileged_userns_clone",
        "0",
        "1",
    ),
    (
        "user/max_user_namespaces",
        "user.max_user_namespaces",
        "0",
        "15000",
    ),
];

/// Returns what to do when `unshare --map-root-user` failed with `stderr`; `read` gives a
/// sysctl's value by its file under /proc/sys (None when the kernel has no such file).
fn userns_advice(stderr: &str, read: impl Fn(&str) -> Option<String>) -> String {
    let culprit = USERNS_SYSCTLS
        .iter()
        .find(|(file, _, forbids, _)| read(file).is_some_and(|v| v.trim() == *forbids));
    let reason = match culprit {
        Some((_, name, forbids, allows)) => format!(
            "{name}={forbids} forbids them; allow them with `sudo sysctl -w {name}={allows}`"
        ),
        None => format!(
            "`unshare --map-root-user` failed: {}",
            stderr.trim().lines().last().unwrap_or("")
        ),
    };
    format!(
        "as a user other than root this step runs in a user namespace, and this machine does \
         not allow unprivileged user namespaces ({reason}); or run the command with sudo"
    )
}

/// Returns Ok when this process may make a user namespace in which it is root (checked
/// once).
pub(crate) fn require_userns() -> Result<()> {
    static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let sh = Shell::new().map_err(|e| e.to_string())?;
            let out = cmd!(sh, "unshare --map-root-user true")
                .quiet()
                .ignore_status()
                .output()
                .map_err(|e| format!("running unshare (apt-get install util-linux): {e}"))?;
            if out.status.success() {
                return Ok(());
            }
            Err(userns_advice(&String::from_utf8_lossy(&out.stderr), |f| {
                std::fs::read_to_string(Path::new("/proc/sys").join(f)).ok()
            }))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Returns the command line that runs `argv` chrooted in `rootfs`: `chroot ROOTFS …` as
/// root, `unshare --map-root-user chroot ROOTFS …` otherwise (after [`require_userns`]).
fn chroot_argv(rootfs: &Path, argv: &[&str]) -> Result<Vec<OsString>> {
    let mut a: Vec<OsString> = Vec::new();
    if !is_root() {
        require_userns()?;
        a.extend(["unshare", "--map-root-user"].map(OsString::from));
    }
    a.push("chroot".into());
    a.push(rootfs.into());
    a.extend(argv.iter().map(OsString::from));
    Ok(a)
}

/// Runs `argv` chrooted in `rootfs` (see [`chroot_argv`]) and returns its stdout. `what`
/// names the step in errors.
pub(crate) fn run_in(rootfs: &Path, argv: &[&str], what: &str) -> Result<String> {
    run_in_emulated(rootfs, argv, what, None)
}

/// The name, at the top of a root file system, of the emulator copied in for a run.
const EMULATOR_IN_ROOTFS: &str = ".flink-jemalloc-emulator";

/// [`run_in`] for a root file system of another CPU: `emulator` (qemu's user-mode
/// `qemu-aarch64-static`, a static program) is copied into `rootfs` for the run and runs
/// `argv` there, so no binfmt_misc registration is needed, as root or not. The copy is
/// removed afterwards, whatever the run did. A program that starts another of the image's
/// programs (a shell script's `exec`) is not emulated that way: call the binary itself.
pub fn run_in_emulated(
    rootfs: &Path,
    argv: &[&str],
    what: &str,
    emulator: Option<&Path>,
) -> Result<String> {
    let copied = match emulator {
        Some(q) => {
            let to = rootfs.join(EMULATOR_IN_ROOTFS);
            std::fs::copy(q, &to).with_context(|| {
                format!(
                    "copying {} into {} to run {what}",
                    q.display(),
                    rootfs.display()
                )
            })?;
            Some(to)
        }
        None => None,
    };
    let inside = format!("/{EMULATOR_IN_ROOTFS}");
    let argv: Vec<&str> = copied
        .is_some()
        .then_some(inside.as_str())
        .into_iter()
        .chain(argv.iter().copied())
        .collect();
    let ran = chroot_argv(rootfs, &argv).and_then(|a| {
        let (program, rest) = a.split_first().expect("a program");
        let sh = Shell::new()?;
        Ok(cmd!(sh, "{program} {rest...}")
            .quiet()
            .ignore_stderr()
            .read()?)
    });
    if let Some(c) = copied {
        std::fs::remove_file(&c).with_context(|| format!("removing {}", c.display()))?;
    }
    ran.with_context(|| format!("{what} in {}", rootfs.display()))
}

/// Runs `umoci unpack` of `image` (`layout:tag`) into `dest`, `--rootless` unless root.
pub(crate) fn umoci_unpack(image: &str, dest: &Path) -> Result<()> {
    let sh = Shell::new()?;
    let rootless: &[&str] = if is_root() { &[] } else { &["--rootless"] };
    cmd!(sh, "umoci unpack {rootless...} --image {image} {dest}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("umoci unpack {image} (apt-get install umoci)"))?;
    if !dest.join("rootfs").is_dir() {
        bail!("umoci unpack {image} left no rootfs in {}", dest.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_names_the_sysctl_that_forbids_user_namespaces() {
        let ubuntu = userns_advice(
            "unshare: write failed /proc/self/uid_map: Operation not permitted",
            |f| (f == "kernel/apparmor_restrict_unprivileged_userns").then(|| "1\n".to_string()),
        );
        assert!(
            ubuntu.contains("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
            "{ubuntu}"
        );
        assert!(ubuntu.contains("run the command with sudo"), "{ubuntu}");
        let max = userns_advice("", |f| {
            (f == "user/max_user_namespaces").then(|| "0".into())
        });
        assert!(max.contains("user.max_user_namespaces=0 forbids"), "{max}");
        let allowed = userns_advice("unshare: unshare failed: Operation not permitted\n", |f| {
            (f == "kernel/apparmor_restrict_unprivileged_userns").then(|| "0".into())
        });
        assert!(
            allowed.contains("unshare failed: Operation not permitted") && !allowed.contains("-w"),
            "{allowed}"
        );
    }

    #[test]
    fn chroot_as_root_is_plain() {
        if is_root() {
            let a = chroot_argv(Path::new("/r"), &["/sbin/ldconfig"]).unwrap();
            assert_eq!(a, ["chroot", "/r", "/sbin/ldconfig"].map(OsString::from));
        }
    }
}
