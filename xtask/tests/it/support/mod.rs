//! Test support, by purpose: a loopback HTTP server with fault injection (`http`), the
//! real `xtask` binary's runs (`cli`), test files and tarballs (`archive`), the profiled
//! fixture images the heavy tests share (`images`), the checks every driver's e2e report
//! shares (`report`), workflow scripts (`workflow`), and the
//! machine taken by one heavy test at a time ([`serial`]).

pub mod archive;
pub mod cli;
pub mod http;
pub mod images;
pub mod report;
pub mod workflow;

pub use archive::{files_below, sha256_hex, TarBuilder};
pub use cli::{path_without, stderr, stdout, xtask, xtask_with_env};
pub use http::{BearerAuth, Fault, Server};
pub use images::{profiled_image, profiled_image_flink2, rebuild_profiled_image, ImageInputs};
pub use report::assert_both_allocators;
pub use workflow::{run_scripts, xtask_commands};

use std::sync::Mutex;

/// The machine, for one heavy test at a time: those that run Flink, Docker, runc, builds or
/// images share two cores and the host network's ports. A test that failed while holding
/// it does not keep the others from running.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: Mutex<()> = Mutex::new(());
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}
