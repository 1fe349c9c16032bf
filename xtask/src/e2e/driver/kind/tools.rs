//! What the kind driver runs (`kind`, `kubectl`, `docker`), checked before any work with
//! how to install what is missing; the cluster's default name and configuration.

use anyhow::{bail, Result};
use std::ffi::OsStr;

use crate::kubectl::{on_path, KUBECTL_INSTALL};

/// The kind cluster's default name.
pub(crate) const DEFAULT_CLUSTER: &str = "flink-jemalloc";
/// The kind cluster configuration, relative to the project root.
pub(crate) const KIND_CONFIG: &str = "ci/kind.yaml";

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

/// Returns the tools of [`TOOLS`] missing from `path` (a `$PATH` value).
fn missing_tools(path: &OsStr) -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|(t, _)| !on_path(t, path))
        .map(|(t, _)| *t)
        .collect()
}

/// Fails for the tools missing from `path`, naming each and how to install it.
fn check_tools(path: &OsStr) -> Result<()> {
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

/// Requires `kind`, `kubectl` and `docker` on the PATH, and the Docker engine answering.
pub(crate) fn require_tools() -> Result<()> {
    check_tools(&std::env::var_os("PATH").unwrap_or_default())?;
    crate::docker::require("--driver kind")
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
}
