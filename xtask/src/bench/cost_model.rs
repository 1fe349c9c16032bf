//! What `bench --profiling-cost` measures and records: the allocator configurations, and
//! the record of one run of one of them.

use serde::{Deserialize, Serialize};

use super::stats::{Sample, Window};
use crate::e2e::cluster::Allocator;
use crate::progress::flag;

/// An allocator configuration of the measurement.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    Glibc,
    GlibcArenas2,
    JemallocNonprof,
    /// Profiling, a sample per 2 MiB allocated on average, a dump per 4 GiB.
    JemallocSample21,
    /// Profiling at jemalloc's default sampling (512 KiB), a dump per 4 GiB: `deploy
    /// --sampling production`.
    JemallocSample19,
    /// Profiling at 128 KiB, a dump per GiB: `deploy --sampling dense`, the e2e scenarios'.
    JemallocSample17,
    /// `jemalloc-nonprof` with `junk:false`: the recipe's `--enable-debug --enable-fill`
    /// build fills every allocation and every freed region with junk bytes by default.
    JemallocNonprofNojunk,
    /// `jemalloc-sample19` with `junk:false`.
    JemallocSample19Nojunk,
}

impl Config {
    pub(crate) const ALL: [Config; 8] = [
        Config::Glibc,
        Config::GlibcArenas2,
        Config::JemallocNonprof,
        Config::JemallocSample21,
        Config::JemallocSample19,
        Config::JemallocSample17,
        Config::JemallocNonprofNojunk,
        Config::JemallocSample19Nojunk,
    ];

    pub(crate) fn allocator(self) -> Allocator {
        match self {
            Config::Glibc => Allocator::Glibc,
            Config::GlibcArenas2 => Allocator::GlibcArenas2,
            Config::JemallocNonprof | Config::JemallocNonprofNojunk => Allocator::JemallocNonprof,
            _ => Allocator::Jemalloc,
        }
    }

    /// Returns `(lg_prof_sample, lg_prof_interval)` of a profiling configuration.
    pub(crate) fn sampling(self) -> Option<(u32, u32)> {
        match self {
            Config::JemallocSample21 => Some((21, 32)),
            Config::JemallocSample19 | Config::JemallocSample19Nojunk => Some((19, 32)),
            Config::JemallocSample17 => Some((17, 30)),
            _ => None,
        }
    }

    /// Returns whether junk filling is turned off (`junk:false` added to MALLOC_CONF).
    pub(crate) fn no_junk(self) -> bool {
        matches!(
            self,
            Config::JemallocNonprofNojunk | Config::JemallocSample19Nojunk
        )
    }

    /// Returns what MALLOC_CONF (or the environment) says, for the report.
    pub(crate) fn malloc_conf(self) -> String {
        let junk = if self.no_junk() { ",junk:false" } else { "" };
        match (self.allocator(), self.sampling()) {
            (_, Some((s, i))) => {
                format!("prof:true,lg_prof_sample:{s},lg_prof_interval:{i}{junk}")
            }
            (Allocator::JemallocNonprof, None) => format!("prof:false{junk}"),
            (Allocator::GlibcArenas2, None) => "MALLOC_ARENA_MAX=2".into(),
            _ => "glibc malloc".into(),
        }
    }

    pub(crate) fn name(self) -> String {
        flag(&self)
    }
}

/// One run of one configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub config: Config,
    pub round: u32,
    pub samples: Vec<Sample>,
    pub windows: Vec<Window>,
}
