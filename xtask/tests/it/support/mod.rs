//! Test support, by purpose: a loopback HTTP server with fault injection (`http`), the
//! real `xtask` binary's runs (`cli`), test files and tarballs (`archive`), the profiled
//! fixture images the heavy tests share (`images`), the checks every driver's e2e report
//! shares (`report`), workflow scripts (`workflow`), and the
//! machine: a heavy test takes it alone ([`serial`]), the light ones share it ([`shared`]).

pub mod archive;
pub mod cli;
pub mod http;
pub mod images;
pub mod report;
pub mod workflow;

pub use archive::{files_below, sha256_hex, TarBuilder};
pub use cli::{path_without, sh, stderr, stdout, xtask, xtask_with_env};
pub use http::{BearerAuth, Fault, Server};
pub use images::{
    profiled_image, profiled_image_flink2, rebuild_profiled_image, Base, ImageInputs,
};
pub use report::assert_both_allocators;
pub use workflow::{run_scripts, xtask_commands};

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The machine, for one heavy test at a time: the tests that run Flink, Docker, runc,
/// builds or images take it alone (they share two cores and the host network's ports, and
/// their timings must not depend on what else runs); every other test takes it
/// [`shared`], beside the other light ones but never beside a heavy one. A test that failed
/// while holding it does not keep the others from running.
static MACHINE: RwLock<()> = RwLock::new(());

/// The machine alone, for a heavy test.
pub fn serial() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// The machine shared with the other light tests, for a light one.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}
