//! What one `image` (or `lock`) run is asked for: the pipeline's input. `ImageArgs` converts
//! into it; `publish` and `bench` start from [`Request::new`] (in `image.rs`, where the
//! flags and their defaults are) and set what they need.

use anyhow::Result;
use std::path::{Path, PathBuf};

use crate::fetch::SourceArgs;

/// The seed recipe's profiling settings, baked in with `--preload`.
pub(crate) const DEFAULT_MALLOC_CONF: &str =
    "prof:true,lg_prof_interval:30,lg_prof_sample:17,prof_prefix:/tmp/jeprof.out";

/// One image to build, or only to lock; `ImageArgs` documents each field as its flag.
#[derive(Debug, Clone)]
pub struct Request {
    pub flink: String,
    /// `linux/amd64`, `linux/arm64` (images/debian.toml's platforms), or both: an image
    /// index of one image per platform.
    pub platforms: Vec<String>,
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
    /// Returns the platform of a one-platform request (the first of several: the index's
    /// run gives each platform a request of its own, [`Request::for_platform`]).
    pub(crate) fn platform(&self) -> &str {
        self.platforms
            .first()
            .map_or(crate::spec::native_platform(), String::as_str)
    }

    /// Returns the request for `platform` alone, as one platform of an index (its own lock,
    /// as [`platform_lock_file`] names it); no output, push or load of its own.
    pub(crate) fn for_platform(&self, platform: &str) -> Request {
        Request {
            platforms: vec![platform.to_string()],
            output: None,
            push: None,
            load: None,
            // `--registry-user` belongs to the `--push` registry when there is one: the
            // platform's run pulls the base with the base's own credentials only.
            registry_user: self.registry_user.clone().filter(|_| self.push.is_none()),
            ..self.clone()
        }
    }
}

/// Returns the lock file of `platform` (Debian architecture `arch`) for `--lock-file F`: F
/// for linux/amd64, F with `-<arch>` before `.lock` for another, as the default names are,
/// whether the run builds that platform alone or in an index.
pub(crate) fn platform_lock_file(f: &Path, platform: &str, arch: &str) -> PathBuf {
    if platform == crate::spec::DEFAULT_PLATFORM {
        return f.to_path_buf();
    }
    let stem = f.file_stem().unwrap_or_default().to_string_lossy();
    let ext = f
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    f.with_file_name(format!("{stem}-{arch}{ext}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_of_an_index_gets_its_own_lock_and_no_output() {
        let mut req = Request::new("2.2.1").unwrap();
        assert_eq!(req.platform(), crate::spec::native_platform());
        req.platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
        req.output = Some(PathBuf::from("/w/layout"));
        req.push = Some("r.example/f:t".into());
        req.registry_user = Some("pusher".into());
        let arm64 = req.for_platform("linux/arm64");
        assert_eq!(arm64.platforms, ["linux/arm64"]);
        assert_eq!(arm64.platform(), "linux/arm64");
        assert!(arm64.output.is_none() && arm64.push.is_none() && arm64.load.is_none());
        // The push's user is not the base registry's.
        assert!(arm64.registry_user.is_none());
        req.push = None;
        assert_eq!(
            req.for_platform("linux/arm64").registry_user.as_deref(),
            Some("pusher")
        );
        // --lock-file F: F for amd64, F-arm64 for arm64, alone or in an index.
        let f = Path::new("/w/flink.lock");
        assert_eq!(platform_lock_file(f, "linux/amd64", "amd64"), f);
        assert_eq!(
            platform_lock_file(f, "linux/arm64", "arm64"),
            Path::new("/w/flink-arm64.lock")
        );
    }
}
