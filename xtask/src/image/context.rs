//! What every stage of one `image` run reads ([`RunContext`]), and stage 0 that makes it
//! ([`resolve`]): the spec, the base reference, the lock and what it still pins.

use anyhow::Result;
use std::path::PathBuf;

use super::lock::{self, Lock};
use super::request::Request;
use crate::digest::Sha256Hex;
use crate::download::Downloader;
use crate::progress;
use crate::project::{self, Cache};
use crate::registry::{Auths, Credentials, Reference, RegistryClient};
use crate::spec::{DebianSpec, FlinkSpec, JemallocSpec, PlatformSpec, DEFAULT_PLATFORM};

/// What every stage of one `image` run reads: the arguments, the specs, the cache, the base
/// reference, the lock (as found, and when it still fits the request, as usable), and the
/// clients.
pub(crate) struct RunContext<'a> {
    pub req: &'a Request,
    pub spec: FlinkSpec,
    pub jspec: JemallocSpec,
    pub debian: DebianSpec,
    /// The platform the image is built for (`linux/amd64`), and its name.
    pub platform: PlatformSpec,
    pub platform_name: String,
    pub cache: Cache,
    pub base_text: String,
    pub base_ref: Reference,
    pub lock_path: PathBuf,
    pub jemalloc_url: String,
    pub jemalloc_sha: String,
    pub existing: Option<Lock>,
    pub usable: Option<Lock>,
    pub client: RegistryClient,
    pub dl: Downloader,
}

/// Stage 0: resolves the spec, the base reference, the lock and what it still pins.
pub(crate) fn resolve(req: &Request) -> Result<RunContext<'_>> {
    let root = project::root();
    let version = req.flink.as_str();
    let specs = FlinkSpec::dir_or_default(req.specs.as_deref());
    let spec = FlinkSpec::load_in(&specs, version)?;
    let jspec = JemallocSpec::load_release(&root, req.source.jemalloc.as_deref())?;
    let debian = DebianSpec::load(&root)?;
    let platform = debian.platform(req.platform())?.clone();
    let cache = Cache::new(
        req.cache_dir
            .clone()
            .unwrap_or_else(project::default_cache_dir),
    );
    let base_text = req.base.clone().unwrap_or_else(|| spec.base.clone());
    let base_ref: Reference = base_text.parse()?;
    let lock_path = match &req.lock_file {
        Some(f) => super::request::platform_lock_file(f, req.platform(), &platform.arch),
        None => specs.join(lock_name(version, &jspec, req.platform(), &platform)),
    };
    let jemalloc_url = req.source.url.clone().unwrap_or_else(|| jspec.url.clone());
    let jemalloc_sha = match &req.source.sha256 {
        Some(s) => Sha256Hex::parse(s)?.to_string(),
        None => jspec.sha256.clone(),
    };
    let request = lock::Request {
        base: &base_text,
        jemalloc_url: &jemalloc_url,
        jemalloc_sha256: &jemalloc_sha,
        mirror: req.mirror.as_deref(),
        source_date_epoch: req.source_date_epoch,
        platform: req.platform(),
    };
    let existing = Lock::read(&lock_path)?;
    if req.locked {
        lock::require(&lock_path, existing.as_ref(), &request)?;
    }
    let usable = existing
        .clone()
        .filter(|l| !req.lock_only && lock::differences(l, &request).is_empty());
    if let (Some(l), None) = (&existing, &usable) {
        progress::note(format!(
            "{} will be updated: {}",
            lock_path.display(),
            lock::differences(l, &request).join("; ")
        ));
    }
    let client = RegistryClient::new(req.plain_http, auths(req, &base_ref)?);
    Ok(RunContext {
        req,
        spec,
        jspec,
        debian,
        platform,
        platform_name: req.platform().to_string(),
        cache,
        base_text,
        base_ref,
        lock_path,
        jemalloc_url,
        jemalloc_sha,
        existing,
        usable,
        client,
        dl: Downloader::new(),
    })
}

/// Returns the lock's file name: `flink-<version>.lock`, with `-jemalloc-<v>` for a release
/// other than the default and `-<arch>` for a platform other than linux/amd64 (a lock per
/// platform: each pins its own base manifest and packages).
pub(crate) fn lock_name(
    version: &str,
    jspec: &JemallocSpec,
    platform_name: &str,
    platform: &PlatformSpec,
) -> String {
    format!(
        "flink-{version}{}{}.lock",
        jspec.name_suffix(),
        platform_suffix(platform_name, platform)
    )
}

/// Returns `-<arch>` for a platform other than linux/amd64, else nothing: what the names of
/// its lock and default output end with.
pub(crate) fn platform_suffix(platform_name: &str, platform: &PlatformSpec) -> String {
    if platform_name == DEFAULT_PLATFORM {
        String::new()
    } else {
        format!("-{}", platform.arch)
    }
}

/// Returns the credentials of a run: the user's Docker config, and `--registry-user` with
/// `$REGISTRY_PASSWORD` for the registry it is meant for: the `--push` target's, else the base's.
/// No registry sees another's credentials.
pub(crate) fn auths(req: &Request, base: &Reference) -> Result<Auths> {
    let mut auths = Auths::from_docker_config()?;
    if let Some(user) = &req.registry_user {
        let host = match &req.push {
            Some(p) => p.parse::<Reference>()?.registry,
            None => base.registry.clone(),
        };
        auths = auths.with(
            &host,
            Credentials {
                username: user.clone(),
                password: std::env::var("REGISTRY_PASSWORD").unwrap_or_default(),
            },
        );
    }
    Ok(auths)
}
