//! What every allocator's run of one `e2e` shares ([`RunContext`]): the plan, the prepared
//! engine, the unpacked image, the job and the directories.

use std::path::Path;

use super::driver::{Driver, Engine, Options};
use super::scenario::Plan;
use crate::bundle::Bundle;

/// What every allocator's run shares.
pub(crate) struct RunContext<'a> {
    pub plan: &'a Plan,
    pub driver: Driver,
    pub options: &'a Options,
    pub engine: &'a Engine,
    pub bundle: &'a Bundle,
    /// The job's jar, compiled for the image's Flink.
    pub jar: &'a Path,
    /// Distinct keys of the job's RocksDB state.
    pub keys: u64,
    /// A run is given up after this many seconds.
    pub timeout_secs: u64,
    /// The TaskManager container's memory limit.
    pub memory_limit_mb: u64,
    /// The run's private work directory.
    pub work: &'a Path,
    /// The report directory.
    pub out: &'a Path,
}
