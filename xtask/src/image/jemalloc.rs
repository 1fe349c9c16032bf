//! Stage 3 of `image`: jemalloc is built against the target's suite (as `cargo xtask build`
//! does, gates included); a sysroot whose glibc differs from the base's is refused.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use super::base::Target;
use super::context::RunContext;
use crate::build::{self, BuildArgs, BuildInfo};
use crate::fetch::SourceArgs;
use crate::progress;

/// The jemalloc build for the target, and the sysroot's libc6 version.
pub(crate) struct Jemalloc {
    pub tree: PathBuf,
    pub info: BuildInfo,
    pub sys_libc: String,
    /// Whether this run compiled it.
    pub compiled: bool,
}

/// Stage 3: builds jemalloc against the target's suite (as `cargo xtask build` does, gates
/// included); a sysroot whose glibc differs from the base's is refused.
pub(crate) fn build(run: &RunContext, target: &Target) -> Result<Jemalloc> {
    let built = build::jemalloc(&BuildArgs {
        sysroot_pins: run.usable.as_ref().map(|l| l.sysroot.packages.clone()),
        keyring: target.keyring.clone(),
        platform: run.platform_name.clone(),
        ..BuildArgs::new(
            SourceArgs {
                jemalloc: Some(run.jspec.version.clone()),
                url: Some(run.jemalloc_url.clone()),
                sha256: Some(run.jemalloc_sha.clone()),
            },
            &target.suite,
            &target.mirror,
            &run.cache.dir,
        )
    })?;
    let info = built.info;
    let libc6 = &target.libc6;
    let sys_libc = info
        .sysroot_packages
        .iter()
        .find(|p| p.name == "libc6")
        .map(|p| p.version.clone())
        .context("the sysroot has no libc6")?;
    if upstream_version(&sys_libc) != upstream_version(libc6) {
        bail!(
            "the {} sysroot has libc6 {sys_libc}, the base has {libc6}: a library built \
             against a newer glibc may not load. Point --mirror at a repository with the base's version",
            target.suite
        );
    }
    if sys_libc != *libc6 {
        progress::note(format!(
            "libc6 {sys_libc} in the sysroot, {libc6} in the base: same glibc {}",
            upstream_version(libc6)
        ));
    }
    Ok(Jemalloc {
        tree: built.dir,
        info,
        sys_libc,
        compiled: built.compiled,
    })
}

/// Returns the upstream part of a Debian version: `2.31-13+deb11u5` → `2.31`.
fn upstream_version(v: &str) -> &str {
    let v = v.split_once(':').map_or(v, |(_, r)| r);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("2.31-13+deb11u5"), "2.31");
        assert_eq!(upstream_version("1:4.4.18-4"), "4.4.18");
        assert_eq!(upstream_version("2.28"), "2.28");
    }
}
