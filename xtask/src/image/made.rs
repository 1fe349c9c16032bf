//! What the stages of `image` make, and what a run returns: [`stages`] runs one platform's
//! stages up to its lock ([`Made`]); [`Built`] is what `image` (and `lock`) made, with each
//! platform's image ([`PlatformBuilt`]).

use anyhow::Result;
use std::path::PathBuf;

use super::context::RunContext;
use super::lock::Lock;
use super::{base, config, jemalloc, locking, tools_layer};
use crate::progress;

/// What `image` made: the image (or, for `lock`, the base) and its lock.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image's manifest digest, the index's for several platforms (`lock`: the base's).
    pub manifest_digest: String,
    /// The layout or tarball written (`lock`: the lock file).
    pub output: PathBuf,
    pub pushed: Option<String>,
    /// The lock of the image's inputs, as written (the first platform's).
    pub lock: Lock,
    /// Each platform's image (one, unless `--platform` named several).
    pub images: Vec<PlatformBuilt>,
}

/// One platform's image of what `image` made.
#[derive(Debug, Clone)]
pub struct PlatformBuilt {
    /// `linux/arm64`.
    pub platform: String,
    /// Its image manifest's digest (`lock`: the base's).
    pub manifest_digest: String,
    pub lock: Lock,
    /// Where its lock is.
    pub lock_path: PathBuf,
}

/// What the stages of one platform made: the lock alone (`lock`), or the image and its lock.
pub(crate) enum Made {
    Locked {
        base_digest: String,
        lock: Lock,
    },
    Image {
        image: config::Assembled,
        lock: Lock,
        /// Whether jemalloc was compiled (else it came from the cache).
        compiled: bool,
    },
}

/// The stages of one platform, up to the lock: pull the base → inspect it → (for `lock`: the
/// lock afresh, written) build jemalloc → tools layer → assemble → the lock of the run, kept
/// by the caller once the outputs are written ([`locking::keep`]).
pub(crate) fn stages(run: &RunContext) -> Result<Made> {
    let base = base::pull(run)?;
    let target = base::inspect(run, &base)?;
    if run.req.lock_only {
        let lock = locking::afresh(run, &base, &target)?;
        return Ok(Made::Locked {
            base_digest: base.digest.clone(),
            lock,
        });
    }
    let jemalloc = jemalloc::build(run, &target)?;
    let tools = tools_layer::stage(run, &base, &target)?;
    let image = config::assemble(run, &base, &target, &jemalloc, &tools)?;
    let lock = locking::of_run(
        run,
        &base,
        &target,
        jemalloc.info.sysroot_packages,
        tools.pins,
    );
    let compiled = jemalloc.compiled;
    Ok(Made::Image {
        image,
        lock,
        compiled,
    })
}

/// Notes how many HTTP requests the run made since `before`, and whether it compiled, or
/// that it was warm.
pub(crate) fn note_requests(before: usize, compiled: bool) {
    let requests = crate::download::requests() - before;
    if requests == 0 && !compiled {
        progress::note("warm: every input from the cache and the lock (no network, no compile)");
    } else {
        progress::note(format!(
            "{requests} HTTP request(s){}",
            if compiled { ", jemalloc compiled" } else { "" }
        ));
    }
}
