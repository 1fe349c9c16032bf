//! `cargo xtask image --flink X`: the official Flink image plus a profiling jemalloc under
//! `/opt/jemalloc`, built without a Docker daemon and bit-for-bit reproducibly.
//!
//! The pipeline, one stage each ([`image`]): resolve the spec and the lock → pull the base
//! (`base`) → inspect it: suite, libc6, apt sources (`base`, `inspect`) → build jemalloc
//! against that suite (`crate::build`) → the jeprof tools layer (`tools_layer`, `deps`) →
//! layer, config and manifest (`config`) → layout, tarball, push, load (`output`) → lock
//! (`lock`).

pub mod base;
pub mod config;
pub mod deps;
pub mod inspect;
pub mod lock;
pub mod output;
pub mod tools_layer;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::build::sysroot;
use crate::build::{self, BuildArgs, BuildInfo};
use crate::digest::Sha256Hex;
use crate::download::Downloader;
use crate::fetch::SourceArgs;
use crate::oci::{self, Blob, BlobSource};
use crate::progress;
use crate::project::{self, Cache};
use crate::registry::{Auths, Credentials, Reference, RegistryClient};
use crate::spec::{DebianSpec, FlinkSpec, JemallocSpec};
use base::{Base, Target};
use lock::{BaseLock, JemallocLock, Lock, SysrootLock};
pub use output::LoadTarget;
use tools_layer::DebPin;

/// The seed recipe's profiling settings, baked in with `--preload`.
pub const DEFAULT_MALLOC_CONF: &str =
    "prof:true,lg_prof_interval:30,lg_prof_sample:17,prof_prefix:/tmp/jeprof.out";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Oci,
    DockerArchive,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// The spec to build: `<specs>/flink-<NAME>.toml` (NAME is usually the Flink version).
    #[arg(long, value_name = "NAME", required_unless_present = "list")]
    pub flink: Option<String>,
    /// Print the table of image specs (Markdown) and exit.
    #[arg(long)]
    pub list: bool,
    /// With --list: the specs as JSON, for pipelines.
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Directory of the `flink-*.toml` specs (and their `.lock` files) [default: images/].
    #[arg(long, env = "FLINK_JEMALLOC_SPECS")]
    pub specs: Option<PathBuf>,
    /// Base image reference instead of the spec's.
    #[arg(long)]
    pub base: Option<String>,
    /// Talk plain HTTP to registries (loopback test registries only).
    #[arg(long)]
    pub plain_http: bool,
    /// Registry user name, for the `--push` registry (else the base's); the password is read
    /// from $REGISTRY_PASSWORD. Other registries get the credentials of the Docker config
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), or none.
    #[arg(long)]
    pub registry_user: Option<String>,
    /// Debian mirror for the sysroot [default: the base's own apt source for its suite].
    #[arg(long)]
    pub mirror: Option<String>,
    /// Bake LD_PRELOAD and MALLOC_CONF into the image config (for setups that cannot set
    /// container env per TaskManager).
    #[arg(long)]
    pub preload: bool,
    /// MALLOC_CONF baked in with --preload.
    #[arg(long, default_value = DEFAULT_MALLOC_CONF)]
    pub malloc_conf: String,
    /// A label of the image config and annotation of its manifest, KEY=VALUE (repeatable),
    /// e.g. `org.opencontainers.image.source=https://github.com/acme/flink-jemalloc`: what a
    /// pipeline knows and a local build does not. Without it nothing is added, so local
    /// digests stay as they were; with it the digest is as deterministic as the values.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Output: a directory (OCI image layout) or a file ending in .tar
    /// [default: <cache>/images/flink-<version>-jemalloc].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Format of a .tar output.
    #[arg(long, value_enum, default_value = "oci")]
    pub format: Format,
    /// Push the image to this reference (e.g. registry.example/flink:1.10.1-jemalloc).
    #[arg(long)]
    pub push: Option<String>,
    /// Load the image, as `localhost/flink-jemalloc:<tag>` (the name `e2e` gives it): into
    /// the Docker engine (`--load` or `--load docker`), or into the node of a kind cluster
    /// (`--load kind=<cluster>`, with `kind load image-archive`).
    #[arg(long, value_name = "TARGET", num_args = 0..=1, default_missing_value = "docker",
          value_parser = LoadTarget::parse)]
    pub load: Option<LoadTarget>,
    /// OpenPGP keyring the Debian suite's Release file must be signed by (e.g.
    /// /usr/share/keyrings/debian-archive-keyring.gpg); without it the index is unchecked.
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Check the suite's signature with its distribution's archive keyrings, as
    /// images/debian.toml names them (debian-archive-keyring, ubuntu-keyring); `--keyring`
    /// wins over it.
    #[arg(long)]
    pub archive_keyring: bool,
    /// Resolve and write the lock only (`cargo xtask lock`).
    #[arg(skip)]
    pub lock_only: bool,
    /// Fail if the lock file is missing or would change.
    #[arg(long)]
    pub locked: bool,
    /// Lock file [default: images/flink-<version>.lock].
    #[arg(long)]
    pub lock_file: Option<PathBuf>,
    /// Fixed timestamp for layers, config and history.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    pub source_date_epoch: u64,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Cache and work directory [default: target/flink-jemalloc, or $FLINK_JEMALLOC_CACHE].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// What `image` made.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest_digest: String,
    pub output: PathBuf,
    pub pushed: Option<String>,
}

pub fn run(args: ImageArgs) -> Result<()> {
    if args.list {
        let dir = specs_dir(&args);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&FlinkSpec::all_in(&dir)?)?
            );
        } else {
            print!("{}", list_table(&dir)?);
        }
        return Ok(());
    }
    if let Some(target) = &args.load {
        // Before any work: what the load needs.
        target.require()?;
    }
    let built = image(&args)?;
    if args.lock_only {
        println!("{}", built.output.display());
    } else {
        println!("{}", built.manifest_digest);
    }
    Ok(())
}

/// The spec directory: `--specs`, else `images/`.
pub fn specs_dir(args: &ImageArgs) -> PathBuf {
    args.specs
        .clone()
        .unwrap_or_else(|| FlinkSpec::default_dir(&project::root()))
}

/// The Markdown table of the specs in `dir` (`--list`).
pub fn list_table(dir: &Path) -> Result<String> {
    let mut out = String::from(
        "| `--flink` | Flink | base image | distribution | Java | profiled image tag |\n|---|---|---|---|---|---|\n",
    );
    let jemalloc = JemallocSpec::load(&project::root())?.version;
    for s in FlinkSpec::all_in(dir)? {
        out.push_str(&format!(
            "| {} | {} | `{}` | {} | {} | `{}` |\n",
            s.name,
            s.flink,
            s.base,
            s.distribution,
            s.java,
            s.output_tag(&jemalloc)
        ));
    }
    Ok(out)
}

/// The cache as the source of an image's blobs.
pub struct CacheBlobs<'a>(pub &'a Cache);

impl BlobSource for CacheBlobs<'_> {
    fn path_of(&self, digest: &str) -> Result<PathBuf> {
        let p = self.0.blob(oci::hex_of(digest));
        if !p.is_file() {
            bail!("blob {digest} is not in the cache {}", self.0.dir.display());
        }
        Ok(p)
    }
}

/// Puts bytes into the content-addressed cache and returns the blob.
pub fn cache_blob(cache: &Cache, media_type: &str, data: Vec<u8>) -> Result<Blob> {
    let blob = Blob::new(media_type, data);
    let hex = Sha256Hex::parse(&blob.digest)?;
    let _lock = cache.lock("blob", hex.as_str())?;
    if !cache.blob(hex.as_str()).is_file() {
        crate::download::save_verified(cache, &hex, &blob.digest, |out| {
            crate::download::copy_hashing(
                &blob.data[..],
                out,
                Some(blob.data.len() as u64),
                &blob.digest,
            )
        })?;
    }
    Ok(blob)
}

/// The layer `name` made by `make`, cached by `key` (what determines its bytes): a record
/// `layers/<name>-<key>.json` beside the blob, so that a warm build reads a few bytes
/// instead of tarring and compressing again. A record whose blob is gone is made afresh.
pub fn cached_layer(
    cache: &Cache,
    name: &str,
    key: &Sha256Hex,
    make: impl FnOnce() -> Result<oci::Layer>,
) -> Result<(oci::LayerRef, bool)> {
    let dir = cache.dir.join("layers");
    let record = dir.join(format!("{name}-{}.json", &key.as_str()[..16]));
    let _lock = cache.lock("layer", &format!("{name}-{}", key.as_str()))?;
    if let Some(r) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<oci::LayerRef>(&b).ok())
    {
        let blob = cache.blob(oci::hex_of(&r.digest));
        if std::fs::metadata(&blob).is_ok_and(|m| m.len() == r.size) {
            return Ok((r, true));
        }
    }
    let layer = make()?;
    cache_blob(cache, &layer.blob.media_type, layer.blob.data.clone())?;
    let r = oci::LayerRef::of(&layer);
    std::fs::create_dir_all(&dir)?;
    let tmp = tempfile::NamedTempFile::new_in(&dir)?;
    std::fs::write(tmp.path(), serde_json::to_vec(&r)?)?;
    tmp.persist(&record)?;
    Ok((r, false))
}

/// The cached blob of `digest`, if the cache holds it intact.
pub fn read_cached(cache: &Cache, digest: &str) -> Option<Vec<u8>> {
    let p = cache.blob(oci::hex_of(digest));
    let data = std::fs::read(p).ok()?;
    (format!("sha256:{}", Sha256Hex::of_bytes(&data)) == digest).then_some(data)
}

/// The upstream part of a Debian version: `2.31-13+deb11u5` → `2.31`.
pub fn upstream_version(v: &str) -> &str {
    let v = v.split_once(':').map_or(v, |(_, r)| r);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

/// The credentials of a run: the user's Docker config, and `--registry-user` with
/// `$REGISTRY_PASSWORD` for the registry it is meant for: the `--push` target's, else the
/// base's. No registry sees another's credentials.
pub fn auths(args: &ImageArgs, base: &Reference) -> Result<Auths> {
    let mut auths = Auths::from_docker_config()?;
    if let Some(user) = &args.registry_user {
        let host = match &args.push {
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

/// What every stage of one `image` run reads: the arguments, the specs, the cache, the base
/// reference, the lock (as found, and when it still fits the request, as usable), and the
/// clients.
pub struct Run<'a> {
    pub args: &'a ImageArgs,
    pub spec: FlinkSpec,
    pub jspec: JemallocSpec,
    pub debian: DebianSpec,
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

/// The jemalloc build for the target, and the sysroot's libc6 version.
pub struct Jemalloc {
    pub tree: PathBuf,
    pub info: BuildInfo,
    pub sys_libc: String,
    /// Whether this run compiled it.
    pub compiled: bool,
}

/// The jeprof tools layer and the packages in it.
pub struct Tools {
    pub pins: Vec<DebPin>,
    pub layer: oci::LayerRef,
}

/// `image` (and `lock`): spec and lock → pull the base → inspect it → build jemalloc →
/// tools layer → assemble → write outputs → lock.
pub fn image(args: &ImageArgs) -> Result<Built> {
    if !args.lock_only && !crate::rootless::is_root() {
        // Before any work: the in-image steps (ldconfig, `dot -c`) need a user namespace.
        crate::rootless::require_userns()?;
    }
    let requests_before = crate::download::requests();
    let run = resolve(args)?;
    let base = base::pull(&run)?;
    let target = base::inspect(&run, &base)?;
    if args.lock_only {
        return lock_afresh(&run, &base, &target);
    }
    let jemalloc = build_jemalloc(&run, &target)?;
    let tools = tools_layer::stage(&run, &base, &target)?;
    let image = config::assemble(&run, &base, &target, &jemalloc, &tools)?;
    let outputs = output::write(&run, &image)?;
    let compiled = jemalloc.compiled;
    let lock = new_lock(
        &run,
        &base,
        &target,
        jemalloc.info.sysroot_packages,
        tools.pins,
    );
    keep_lock(&run, lock)?;
    let requests = crate::download::requests() - requests_before;
    if requests == 0 && !compiled {
        progress::note("warm: every input from the cache and the lock (no network, no compile)");
    } else {
        progress::note(format!(
            "{requests} HTTP request(s){}",
            if compiled { ", jemalloc compiled" } else { "" }
        ));
    }
    Ok(Built {
        manifest_digest: image.manifest.digest,
        output: outputs.path,
        pushed: outputs.pushed,
    })
}

/// Stage 0: the spec, the base reference, the lock and what it still pins.
fn resolve(args: &ImageArgs) -> Result<Run<'_>> {
    let root = project::root();
    let version = args.flink.as_deref().context("--flink is required")?;
    let specs = specs_dir(args);
    let spec = FlinkSpec::load_in(&specs, version)?;
    let jspec = JemallocSpec::load(&root)?;
    let debian = DebianSpec::load(&root)?;
    let cache = Cache::new(
        args.cache_dir
            .clone()
            .unwrap_or_else(project::default_cache_dir),
    );
    let base_text = args.base.clone().unwrap_or_else(|| spec.base.clone());
    let base_ref: Reference = base_text.parse()?;
    let lock_path = args
        .lock_file
        .clone()
        .unwrap_or_else(|| specs.join(format!("flink-{version}.lock")));
    let jemalloc_url = args.source.url.clone().unwrap_or_else(|| jspec.url.clone());
    let jemalloc_sha = match &args.source.sha256 {
        Some(s) => Sha256Hex::parse(s)?.to_string(),
        None => jspec.sha256.clone(),
    };
    let request = lock::Request {
        base: &base_text,
        jemalloc_url: &jemalloc_url,
        jemalloc_sha256: &jemalloc_sha,
        mirror: args.mirror.as_deref(),
        source_date_epoch: args.source_date_epoch,
    };
    let existing = Lock::read(&lock_path)?;
    if args.locked {
        lock::require(&lock_path, existing.as_ref(), &request)?;
    }
    let usable = existing
        .clone()
        .filter(|l| !args.lock_only && lock::differences(l, &request).is_empty());
    if let (Some(l), None) = (&existing, &usable) {
        progress::note(format!(
            "{} will be updated: {}",
            lock_path.display(),
            lock::differences(l, &request).join("; ")
        ));
    }
    let client = RegistryClient::new(args.plain_http, auths(args, &base_ref)?);
    Ok(Run {
        args,
        spec,
        jspec,
        debian,
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

/// `cargo xtask lock`: the sysroot and tools packages resolved afresh and the lock written;
/// nothing is built.
fn lock_afresh(run: &Run, base: &Base, target: &Target) -> Result<Built> {
    let sysroot_pins = sysroot::resolve(&run.dl, &run.cache, &sysroot_request(run, target))?;
    let repo = target.repo(&run.debian.arch);
    let tools = tools_layer::resolve(&run.dl, &run.cache, &repo, &target.facts.dpkg_status)?;
    let lock = new_lock(run, base, target, sysroot_pins, tools);
    if run.existing.as_ref() == Some(&lock) {
        progress::note(format!("{} is up to date", run.lock_path.display()));
    } else {
        lock.write(&run.lock_path)?;
        progress::note(format!("wrote {}", run.lock_path.display()));
    }
    Ok(Built {
        manifest_digest: base.digest.clone(),
        output: run.lock_path.clone(),
        pushed: None,
    })
}

/// The sysroot the target's suite gets.
fn sysroot_request(run: &Run, target: &Target) -> sysroot::Request {
    sysroot::Request {
        mirror: target.mirror.clone(),
        suite: target.suite.clone(),
        component: target.suite_spec.component.clone(),
        arch: run.debian.arch.clone(),
        packages: target.suite_spec.packages.clone(),
        dev_links: run.debian.dev_links.clone(),
        pins: None,
        keyring: target.keyring.clone(),
    }
}

/// Stage 3: jemalloc built against the target's suite (as `cargo xtask build` does, gates
/// included); a sysroot whose glibc differs from the base's is refused.
fn build_jemalloc(run: &Run, target: &Target) -> Result<Jemalloc> {
    let built = build::build(&BuildArgs {
        sysroot_pins: run.usable.as_ref().map(|l| l.sysroot.packages.clone()),
        keyring: target.keyring.clone(),
        ..BuildArgs::new(
            SourceArgs {
                url: Some(run.jemalloc_url.clone()),
                sha256: Some(run.jemalloc_sha.clone()),
            },
            &target.suite,
            &target.mirror,
            &run.cache.dir,
        )
    })?;
    let info = built.info;
    let libc6 = &target.libc6;
    let sys_libc = info
        .sysroot_packages
        .iter()
        .find(|p| p.name == "libc6")
        .map(|p| p.version.clone())
        .context("the sysroot has no libc6")?;
    if upstream_version(&sys_libc) != upstream_version(libc6) {
        bail!(
            "the {} sysroot has libc6 {sys_libc}, the base has {libc6}: a library built \
             against a newer glibc may not load. Point --mirror at a repository with the base's version",
            target.suite
        );
    }
    if sys_libc != *libc6 {
        progress::note(format!(
            "libc6 {sys_libc} in the sysroot, {libc6} in the base: same glibc {}",
            upstream_version(libc6)
        ));
    }
    Ok(Jemalloc {
        tree: built.dir,
        info,
        sys_libc,
        compiled: built.compiled,
    })
}

/// The lock of this run's inputs.
fn new_lock(
    run: &Run,
    base: &Base,
    target: &Target,
    sysroot_packages: Vec<sysroot::Pinned>,
    tools: Vec<DebPin>,
) -> Lock {
    Lock {
        version: 1,
        flink: run.spec.flink.clone(),
        source_date_epoch: run.args.source_date_epoch,
        base: BaseLock {
            reference: run.base_text.clone(),
            index_digest: base.index_digest.clone(),
            manifest_digest: base.digest.clone(),
            os: target.facts.os_id.clone(),
            suite: target.suite.clone(),
            libc6: target.libc6.clone(),
        },
        jemalloc: JemallocLock {
            url: run.jemalloc_url.clone(),
            sha256: run.jemalloc_sha.clone(),
        },
        sysroot: SysrootLock {
            mirror: target.mirror.clone(),
            packages: sysroot_packages,
        },
        tools,
    }
}

/// Stage 7: the lock, written on first resolution and unchanged afterwards (`--locked`
/// refuses a change).
fn keep_lock(run: &Run, lock: Lock) -> Result<()> {
    if run.existing.as_ref() != Some(&lock) {
        if run.args.locked {
            bail!("--locked: {} would change", run.lock_path.display());
        }
        lock.write(&run.lock_path)?;
        progress::note(format!("wrote {}", run.lock_path.display()));
    }
    Ok(())
}

/// `--label KEY=VALUE`: a key that is not empty and has no space, and its value.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "`{s}`: --label takes KEY=VALUE (e.g. org.opencontainers.image.revision=$GITHUB_SHA)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("2.31-13+deb11u5"), "2.31");
        assert_eq!(upstream_version("1:4.4.18-4"), "4.4.18");
        assert_eq!(upstream_version("2.28"), "2.28");
    }

    #[test]
    fn list_names_every_spec() {
        let t = list_table(&FlinkSpec::default_dir(&project::root())).unwrap();
        assert!(
            t.contains(
                "| 1.10.1 | 1.10.1 | `docker.io/library/flink:1.10.1-scala_2.12` | debian buster | 8 | `1.10.1-scala_2.12-jemalloc-5.2.1-prof` |"
            ),
            "{t}"
        );
        assert!(t.contains("| ubuntu noble | 17 |"), "{t}");
        // The README's table of supported versions is this output.
        let readme = std::fs::read_to_string(project::root().join("README.md")).unwrap();
        assert!(
            readme.contains(&t),
            "README.md's table differs from `cargo xtask image --list`:\n{t}"
        );
    }
}
