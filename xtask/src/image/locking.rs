//! The last stage of `image`, and all of `lock`: the lock of a run's inputs is made from what the
//! stages resolved ([`of_run`]), written on first resolution and kept unchanged after ([`keep`];
//! `--locked` refuses a change), or resolved afresh without building ([`afresh`]).

use anyhow::{bail, Result};

use super::base::{Base, Target};
use super::context::RunContext;
use super::lock::{BaseLock, DebPin, JemallocLock, Lock, SysrootLock};
use super::tools_layer;
use crate::build::sysroot;
use crate::progress;

/// `cargo xtask lock`: resolves the sysroot and tools packages afresh and writes the lock;
/// nothing is built.
pub(crate) fn afresh(run: &RunContext, base: &Base, target: &Target) -> Result<Lock> {
    let sysroot_pins = sysroot::resolve(&run.dl, &run.cache, &sysroot_request(run, target))?;
    let repo = target.repo(&run.platform.arch);
    let tools = tools_layer::resolve(&run.dl, &run.cache, &repo, &target.facts.dpkg_status)?;
    let lock = of_run(run, base, target, sysroot_pins, tools);
    if run.existing.as_ref() == Some(&lock) {
        progress::note(format!("{} is up to date", run.lock_path.display()));
    } else {
        lock.write(&run.lock_path)?;
        progress::note(format!("wrote {}", run.lock_path.display()));
    }
    Ok(lock)
}

/// Returns the sysroot the target's suite gets.
fn sysroot_request(run: &RunContext, target: &Target) -> sysroot::Request {
    sysroot::Request {
        mirror: target.mirror.clone(),
        suite: target.suite.clone(),
        component: target.suite_spec.component.clone(),
        platform: run.platform.clone(),
        packages: target.suite_spec.packages.clone(),
        pins: None,
        keyring: target.keyring.clone(),
    }
}

/// Returns the lock of this run's inputs.
pub(crate) fn of_run(
    run: &RunContext,
    base: &Base,
    target: &Target,
    sysroot_packages: Vec<sysroot::Pinned>,
    tools: Vec<DebPin>,
) -> Lock {
    Lock {
        version: 1,
        flink: run.spec.flink.clone(),
        platform: (run.platform_name != crate::spec::DEFAULT_PLATFORM)
            .then(|| run.platform_name.clone()),
        source_date_epoch: run.req.source_date_epoch,
        base: BaseLock {
            reference: run.base_text.clone(),
            index_digest: base.index_digest.clone(),
            manifest_digest: base.digest.clone(),
            os: target.facts.os_id.clone(),
            suite: target.suite.clone(),
            libc6: target.libc6.clone(),
        },
        jemalloc: JemallocLock {
            url: run.jemalloc_url.clone(),
            sha256: run.jemalloc_sha.clone(),
        },
        sysroot: SysrootLock {
            mirror: target.mirror.clone(),
            packages: sysroot_packages,
        },
        tools,
    }
}

/// Stage 7: writes the lock on first resolution and leaves it unchanged afterwards
/// (`--locked` refuses a change).
pub(crate) fn keep(run: &RunContext, lock: &Lock) -> Result<()> {
    if run.existing.as_ref() != Some(lock) {
        if run.req.locked {
            bail!("--locked: {} would change", run.lock_path.display());
        }
        lock.write(&run.lock_path)?;
        progress::note(format!("wrote {}", run.lock_path.display()));
    }
    Ok(())
}
