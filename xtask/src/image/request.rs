//! What one `image` (or `lock`) run is asked for: the pipeline's input. `ImageArgs` converts
//! into it; `publish` and `bench` build it directly.

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

impl Request {
    /// Returns the request for the spec `flink` with every flag at its default: an OCI
    /// layout in the cache, nothing pushed or loaded, the lock written when missing.
    pub fn new(flink: &str) -> Request {
        Request {
            flink: flink.to_string(),
            specs: None,
            base: None,
            plain_http: false,
            registry_user: None,
            mirror: None,
            preload: false,
            malloc_conf: DEFAULT_MALLOC_CONF.to_string(),
            labels: Vec::new(),
            output: None,
            format: Format::Oci,
            push: None,
            load: None,
            keyring: None,
            archive_keyring: false,
            lock_only: false,
            locked: false,
            lock_file: None,
            source_date_epoch: 0,
            source: SourceArgs::default(),
            cache_dir: None,
        }
    }
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
