//! `kubectl` in one namespace, through xshell, with errors that say what failed and why
//! (kubectl's own last words, without its `E1127 …memcache.go` log noise).

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::heap_profile::ContainerFiles;

/// Where to get kubectl, for error messages.
pub(crate) const KUBECTL_INSTALL: &str =
    "install kubectl: https://kubernetes.io/docs/tasks/tools/ \
     (a release binary, or the `kubectl` package from pkgs.k8s.io's apt repository)";

/// Returns whether `tool` is an executable file in one of `path`'s directories (a `$PATH`
/// value).
pub fn on_path(tool: &str, path: &OsStr) -> bool {
    find_on_path(tool, path).is_some()
}

/// Returns the executable file `tool` in the first of `path`'s directories that has one (a
/// `$PATH` value).
pub(crate) fn find_on_path(tool: &str, path: &OsStr) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Returns the useful part of kubectl's stderr: klog lines
/// (`E1127 02:54:03.19 … memcache.go:265]`) are dropped when anything else is left; at most
/// the last five lines.
pub(crate) fn error_text(stderr: &str) -> String {
    let is_klog = |l: &str| {
        let b = l.as_bytes();
        b.len() > 5 && matches!(b[0], b'E' | b'W' | b'I') && b[1..5].iter().all(u8::is_ascii_digit)
    };
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let useful: Vec<&str> = lines.iter().copied().filter(|l| !is_klog(l)).collect();
    let chosen = if useful.is_empty() { lines } else { useful };
    let start = chosen.len().saturating_sub(5);
    chosen[start..].join("\n")
}

/// kubectl bound to a namespace, and to a kubeconfig file and context or the user's.
#[derive(Debug, Clone)]
pub(crate) struct Kubectl {
    pub namespace: String,
    pub context: Option<String>,
    /// An explicit kubeconfig (`--kubeconfig`): the kind driver writes its cluster's, so
    /// that it works where `$HOME` or `$KUBECONFIG` differ (sudo, CI).
    pub kubeconfig: Option<PathBuf>,
}

impl Kubectl {
    /// Returns kubectl in the kubeconfig's current context.
    pub(crate) fn new(namespace: &str) -> Kubectl {
        Kubectl {
            namespace: namespace.to_string(),
            context: None,
            kubeconfig: None,
        }
    }

    /// Returns kubectl in `context` (kind names its clusters' contexts `kind-<name>`).
    pub(crate) fn with_context(namespace: &str, context: &str) -> Kubectl {
        Kubectl {
            context: Some(context.to_string()),
            ..Kubectl::new(namespace)
        }
    }

    /// Returns kubectl with the kubeconfig file `kubeconfig` (its current context).
    pub(crate) fn with_kubeconfig(namespace: &str, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..Kubectl::new(namespace)
        }
    }

    /// Returns the global flags every call gets: `--kubeconfig F`, `--context C`,
    /// `--namespace N`.
    pub(crate) fn global_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(k) = &self.kubeconfig {
            a.extend(["--kubeconfig".to_string(), k.display().to_string()]);
        }
        if let Some(c) = &self.context {
            a.extend(["--context".to_string(), c.clone()]);
        }
        a.extend(["--namespace".to_string(), self.namespace.clone()]);
        a
    }

    /// Fails with [`KUBECTL_INSTALL`] when kubectl is not on the PATH.
    pub(crate) fn require() -> Result<()> {
        if !on_path("kubectl", &std::env::var_os("PATH").unwrap_or_default()) {
            bail!("`kubectl` was not found on the PATH; {KUBECTL_INSTALL}");
        }
        Ok(())
    }

    fn exec(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
        let sh = Shell::new()?;
        let global = self.global_args();
        let g = &global;
        let mut c = cmd!(sh, "kubectl {g...} {args...}").quiet().ignore_status();
        if let Some(input) = stdin {
            c = c.stdin(input);
        }
        let out = c
            .output()
            .with_context(|| format!("running kubectl ({KUBECTL_INSTALL})"))?;
        if !out.status.success() {
            bail!(
                "`kubectl {} {}` failed ({}): {}",
                global.join(" "),
                args.join(" "),
                out.status,
                error_text(&String::from_utf8_lossy(&out.stderr))
            );
        }
        Ok(out.stdout)
    }

    /// Runs `kubectl --namespace N ARGS…` and returns its stdout.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(args, None)?).into_owned())
    }

    /// Like [`Kubectl::run`], with `input` on stdin (`apply -f -`).
    pub(crate) fn run_with_input(&self, args: &[&str], input: &[u8]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(args, Some(input))?).into_owned())
    }

    /// Runs `kubectl exec POD [-c C] -- ARGV…` and returns its stdout.
    pub(crate) fn exec_in(
        &self,
        pod: &str,
        container: Option<&str>,
        argv: &[&str],
    ) -> Result<String> {
        let mut args = vec!["exec", pod];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        args.push("--");
        args.extend(argv);
        self.run(&args)
    }

    /// Runs `kubectl cp NS/POD:SRC DEST [-c C]`, then checks that `dest` arrived (kubectl cp
    /// can exit 0 having copied nothing).
    fn cp_from(&self, pod: &str, container: Option<&str>, src: &str, dest: &Path) -> Result<()> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let from = format!("{}/{pod}:{src}", self.namespace);
        let to = dest.to_string_lossy();
        let mut args = vec!["cp", from.as_str(), to.as_ref()];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        self.run(&args)?;
        if !dest.is_file() {
            bail!("`kubectl cp {from} {to}` left no file at {to}");
        }
        Ok(())
    }
}

/// A container of a pod, through kubectl.
pub(crate) struct PodContainer<'a> {
    pub kubectl: &'a Kubectl,
    pub pod: &'a str,
    /// None means kubectl's choice, the pod's first container.
    pub container: Option<&'a str>,
}

impl ContainerFiles for PodContainer<'_> {
    fn describe(&self) -> String {
        format!("pod {}/{}", self.kubectl.namespace, self.pod)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let ls = self
            .kubectl
            .exec_in(self.pod, self.container, &["ls", "-1", "--", dir])
            .with_context(|| {
                format!(
                    "listing the heap dumps in {dir} of {} (is the cluster reachable, `kubectl cluster-info`, and \
                     the pod running, `kubectl get pods -n {}`?)",
                    self.describe(),
                    self.kubectl.namespace
                )
            })?;
        Ok(ls.lines().map(|l| l.trim().to_string()).collect())
    }

    fn copy_file(&self, src: &str, dest: &Path) -> Result<()> {
        self.kubectl.cp_from(self.pod, self.container, src, dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_names_its_kubeconfig() {
        let k = Kubectl::with_kubeconfig("e2e", Path::new("/r/kubeconfig"));
        assert_eq!(
            k.global_args(),
            ["--kubeconfig", "/r/kubeconfig", "--namespace", "e2e"]
        );
        assert_eq!(
            Kubectl::with_context("n", "kind-x").global_args(),
            ["--context", "kind-x", "--namespace", "n"]
        );
    }

    #[test]
    fn error_text_drops_klog_noise() {
        let stderr = "E1127 02:54:03.194197   19090 memcache.go:265] \"Unhandled Error\" err=\"couldn't get current server API group list\"\n\
                      E1127 02:54:03.195877   19090 memcache.go:265] again\n\
                      The connection to the server localhost:8080 was refused - did you specify the right host or port?\n";
        assert_eq!(
            error_text(stderr),
            "The connection to the server localhost:8080 was refused - did you specify the right host or port?"
        );
        assert_eq!(error_text("E1127 only noise\n"), "E1127 only noise");
        assert_eq!(
            error_text("Error from server (NotFound): pods \"x\" not found\n"),
            "Error from server (NotFound): pods \"x\" not found"
        );
    }

    #[test]
    fn on_path_finds_executables_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("kind"), "#!/bin/sh\n").unwrap();
        std::fs::write(d.path().join("kubectl"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            d.path().join("kind"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), d.path()]).unwrap();
        assert!(on_path("kind", &path));
        assert!(!on_path("kubectl", &path), "not executable");
        assert!(!on_path("docker", &path));
    }
}
