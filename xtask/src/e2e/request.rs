//! What one `e2e` run is asked for: the pipeline's input, which `E2eArgs` converts into
//! (with the driver chosen, the allocators expanded and the scenario's overrides gathered).

use std::path::PathBuf;

use super::cluster::Allocator;
use super::driver::{Driver, Options};
use super::scenario::Overrides;

/// One run of a scenario on a profiled image; `E2eArgs` documents each field as its flag.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub image: PathBuf,
    pub driver: Driver,
    pub scenario: String,
    /// Each once, in the order they run.
    pub allocators: Vec<Allocator>,
    pub overrides: Overrides,
    pub memory_limit_mb: u64,
    pub keys: u64,
    pub rest_port: u16,
    /// [default: target/flink-jemalloc/e2e-report]
    pub report: Option<PathBuf>,
    pub timeout_secs: u64,
    pub options: Options,
}
