//! What one `image` (or `lock`) run is asked for: the pipeline's input. `ImageArgs` converts
//! into it; `publish` and `bench` start from [`Request::new`] (in `image.rs`, where the
//! flags and their defaults are) and set what they need.

use anyhow::Result;
use std::path::PathBuf;

use crate::fetch::SourceArgs;

/// The seed recipe's profiling settings, baked in with `--preload`.
pub(crate) const DEFAULT_MALLOC_CONF: &str =
    "prof:true,lg_prof_interval:30,lg_prof_sample:17,prof_prefix:/tmp/jeprof.out";

/// One image to build, or only to lock; `ImageArgs` documents each field as its flag.
#[derive(Debug, Clone)]
pub struct Request {
    pub flink: String,
    pub specs: Option<PathBuf>,
    pub base: Option<String>,
    pub plain_http: bool,
    pub registry_user: Option<String>,
    pub mirror: Option<String>,
    pub preload: bool,
    pub malloc_conf: String,
    pub labels: Vec<(String, String)>,
    pub output: Option<PathBuf>,
    pub format: Format,
    pub push: Option<String>,
    pub load: Option<LoadTarget>,
    pub keyring: Option<PathBuf>,
    pub archive_keyring: bool,
    pub lock_only: bool,
    pub locked: bool,
    pub lock_file: Option<PathBuf>,
    pub source_date_epoch: u64,
    pub source: SourceArgs,
    pub cache_dir: Option<PathBuf>,
}

/// The form of a `.tar` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Oci,
    DockerArchive,
}

/// Where `--load` puts the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadTarget {
    /// The Docker engine (`docker load`).
    Docker,
    /// The node of the kind cluster of this name (`kind load image-archive --name`).
    Kind(String),
}

impl LoadTarget {
    /// Requires a Docker engine that answers, or `kind`, `kubectl` and `docker` for a kind
    /// cluster.
    pub(crate) fn require(&self) -> Result<()> {
        match self {
            LoadTarget::Docker => crate::docker::require("--load"),
            LoadTarget::Kind(_) => crate::e2e::driver::kind::require_tools(),
        }
    }

    /// Parses `docker`, or `kind=<cluster>`.
    pub(crate) fn parse(s: &str) -> Result<LoadTarget, String> {
        match s.split_once('=') {
            None if s == "docker" => Ok(LoadTarget::Docker),
            Some(("kind", name)) if !name.is_empty() => Ok(LoadTarget::Kind(name.to_string())),
            _ => Err(format!(
                "`{s}`: --load takes `docker` (the default) or `kind=<cluster>` \
                 (e.g. --load kind=flink-jemalloc)"
            )),
        }
    }
}
