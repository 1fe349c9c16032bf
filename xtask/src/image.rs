//! `cargo xtask image --flink X`: the official Flink image plus a profiling jemalloc under
//! `/opt/jemalloc`, built without a Docker daemon and bit-for-bit reproducibly.
//!
//! resolve (lock or registry) → inspect the base (suite, libc6, apt sources) → build
//! jemalloc against that suite → layer + config + manifest → OCI layout, tarball, push.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::build::{self, BuildArgs};
use crate::digest::Sha256Hex;
use crate::download::Downloader;
use crate::fetch::SourceArgs;
use crate::inspect::{self, BaseFacts};
use crate::lock::{self, BaseLock, JemallocLock, Lock, SysrootLock};
use crate::oci::{self, Blob, BlobSource, ConfigChanges};
use crate::progress::{self, Step};
use crate::project::{self, Cache};
use crate::registry::{Auths, Credentials, Reference, RegistryClient};
use crate::repo::Repo;
use crate::spec::{DebianSpec, FlinkSpec, JemallocSpec};
use crate::sysroot;
use crate::tools_layer::{self, DebPin};

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

struct CacheBlobs<'a>(&'a Cache);

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
fn cache_blob(cache: &Cache, media_type: &str, data: Vec<u8>) -> Result<Blob> {
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

fn read_cached(cache: &Cache, digest: &str) -> Option<Vec<u8>> {
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

/// The mirror for `suite` among the base's apt sources.
pub fn mirror_for(facts: &BaseFacts, suite: &str) -> Option<String> {
    facts
        .apt_sources
        .iter()
        .find(|s| s.suite == suite)
        .map(|s| s.uri.clone())
}

pub fn image(args: &ImageArgs) -> Result<Built> {
    if !args.lock_only && !crate::rootless::is_root() {
        // Before any work: the in-image steps (ldconfig, `dot -c`) need a user namespace.
        crate::rootless::require_userns()?;
    }
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
    let dl = Downloader::new();

    // 1. The base: manifest, config and layers, from the cache when the lock pins them.
    let step = Step::start(format!("base image {base_ref}"));
    let mut network = false;
    let (manifest_bytes, manifest_digest, index_digest) = match usable
        .as_ref()
        .and_then(|l| read_cached(&cache, &l.base.manifest_digest).map(|b| (b, l)))
    {
        Some((bytes, l)) => (
            bytes,
            l.base.manifest_digest.clone(),
            l.base.index_digest.clone(),
        ),
        None => {
            network = true;
            let pinned = usable
                .as_ref()
                .map(|l| base_ref.with_digest(&l.base.manifest_digest));
            let (m, index) = client.image_manifest(pinned.as_ref().unwrap_or(&base_ref))?;
            if !oci::is_manifest_type(&m.media_type) {
                bail!("{base_ref}: unsupported manifest type {}", m.media_type);
            }
            cache_blob(&cache, &m.media_type, m.bytes.clone())?;
            (
                m.bytes,
                m.digest,
                index
                    .map(|i| i.digest)
                    .or(usable.as_ref().and_then(|l| l.base.index_digest.clone())),
            )
        }
    };
    let base_manifest: Value = serde_json::from_slice(&manifest_bytes)?;
    let config_digest = base_manifest["config"]["digest"]
        .as_str()
        .context("base manifest without config")?
        .to_string();
    let layers = base_manifest["layers"]
        .as_array()
        .context("base manifest without layers")?
        .clone();
    let mut layer_paths = Vec::new();
    let config_path = match read_cached(&cache, &config_digest) {
        Some(_) => cache.blob(oci::hex_of(&config_digest)),
        None => {
            network = true;
            client.blob(&base_ref, &config_digest, &cache)?
        }
    };
    for l in &layers {
        let d = l["digest"].as_str().context("layer without digest")?;
        let p = cache.blob(oci::hex_of(d));
        layer_paths.push(if p.is_file() {
            p
        } else {
            network = true;
            client.blob(&base_ref, d, &cache)?
        });
    }
    let base_config: Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    step.done(format!(
        "{manifest_digest}, {} layers{}",
        layers.len(),
        if network {
            ""
        } else {
            ", from the cache (no network)"
        }
    ));

    // 2. What the base is: suite and libc6 decide the sysroot; its dpkg status decides
    //    which of jeprof's tools are missing. Read from the cached layers (no network).
    let step = Step::start("inspecting the base's layers");
    let facts = inspect::inspect_layers(&layer_paths)?;
    let suite = facts.version_codename.clone().with_context(|| {
        format!(
            "{base_ref}: /etc/os-release names no VERSION_CODENAME ({:?})",
            facts.pretty_name
        )
    })?;
    let suite_os = debian
        .suite(&suite)
        .map(|s| s.os.clone())
        .with_context(|| {
            format!(
                "the base {base_ref} is {} {suite}: add the suite to images/debian.toml",
                facts.os_id
            )
        })?;
    if suite_os != facts.os_id {
        bail!(
            "{base_ref} is {} {suite}, but images/debian.toml lists {suite} as {suite_os}",
            facts.os_id
        );
    }
    let libc6 = facts
        .libc6_version
        .clone()
        .with_context(|| format!("{base_ref}: no installed libc6 in the dpkg status"))?;
    step.done(format!(
        "{}; libc6 {libc6}; apt sources: {}",
        facts.pretty_name.clone().unwrap_or(suite.clone()),
        facts
            .apt_sources
            .iter()
            .map(|s| format!("{} {}", s.uri, s.suite))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if spec.distribution != format!("{} {suite}", facts.os_id) {
        progress::note(format!(
            "note: the spec expects {}, the base is {} {suite}",
            spec.distribution, facts.os_id
        ));
    }
    if let Some(l) = &usable {
        if (l.base.suite.as_str(), l.base.libc6.as_str()) != (suite.as_str(), libc6.as_str()) {
            bail!(
                "{}: the locked base {} is {} libc6 {}, but its layers say {suite} libc6 {libc6}",
                lock_path.display(),
                l.base.manifest_digest,
                l.base.suite,
                l.base.libc6
            );
        }
    }
    let suite_spec = debian
        .suite(&suite)
        .with_context(|| format!("the base {base_ref} is Debian {suite}"))?;
    let mirror = args
        .mirror
        .clone()
        .or(usable.as_ref().map(|l| l.sysroot.mirror.clone()))
        .or_else(|| {
            (!suite_spec.archived)
                .then(|| mirror_for(&facts, &suite))
                .flatten()
        })
        .unwrap_or_else(|| suite_spec.mirror.clone());
    let keyring = match (&args.keyring, args.archive_keyring) {
        (Some(k), _) => Some(k.clone()),
        (None, true) => Some(suite_spec.archive_keyring(&suite, &cache.dir.join("keyrings"))?),
        (None, false) => None,
    };
    let facts_os = facts.os_id.clone();
    let make_lock = |sysroot_packages, tools| Lock {
        version: 1,
        flink: spec.flink.clone(),
        source_date_epoch: args.source_date_epoch,
        base: BaseLock {
            reference: base_text.clone(),
            index_digest: index_digest.clone(),
            manifest_digest: manifest_digest.clone(),
            os: facts_os.clone(),
            suite: suite.clone(),
            libc6: libc6.clone(),
        },
        jemalloc: JemallocLock {
            url: jemalloc_url.clone(),
            sha256: jemalloc_sha.clone(),
        },
        sysroot: SysrootLock {
            mirror: mirror.clone(),
            packages: sysroot_packages,
        },
        tools,
    };
    if args.lock_only {
        // `cargo xtask lock`: resolve everything afresh, write the lock, build nothing.
        let sysroot_pins = sysroot::resolve(
            &dl,
            &cache,
            &sysroot::Request {
                mirror: mirror.clone(),
                suite: suite.clone(),
                component: suite_spec.component.clone(),
                arch: debian.arch.clone(),
                packages: suite_spec.packages.clone(),
                dev_links: debian.dev_links.clone(),
                pins: None,
                keyring: keyring.clone(),
            },
        )?;
        let repo = Repo {
            mirror: &mirror,
            suite: &suite,
            component: &suite_spec.component,
            arch: &debian.arch,
            keyring: keyring.as_deref(),
        };
        let tools = tools_layer::resolve(&dl, &cache, &repo, &facts.dpkg_status)?;
        let new_lock = make_lock(sysroot_pins, tools);
        if existing.as_ref() == Some(&new_lock) {
            progress::note(format!("{} is up to date", lock_path.display()));
        } else {
            new_lock.write(&lock_path)?;
            progress::note(format!("wrote {}", lock_path.display()));
        }
        return Ok(Built {
            manifest_digest: manifest_digest.clone(),
            output: lock_path,
            pushed: None,
        });
    }

    // 3. jemalloc against that suite.
    let (tree, info) = build::build(&BuildArgs {
        sysroot_pins: usable.as_ref().map(|l| l.sysroot.packages.clone()),
        keyring: keyring.clone(),
        ..BuildArgs::new(
            SourceArgs {
                url: Some(jemalloc_url.clone()),
                sha256: Some(jemalloc_sha.clone()),
            },
            &suite,
            &mirror,
            &cache.dir,
        )
    })?;
    let sys_libc = info
        .sysroot_packages
        .iter()
        .find(|p| p.name == "libc6")
        .map(|p| p.version.clone())
        .context("the sysroot has no libc6")?;
    if upstream_version(&sys_libc) != upstream_version(&libc6) {
        bail!(
            "the {suite} sysroot has libc6 {sys_libc}, the base has {libc6}: a library built \
             against a newer glibc may not load. Point --mirror at a repository with the base's version"
        );
    }
    if sys_libc != libc6 {
        progress::note(format!(
            "libc6 {sys_libc} in the sysroot, {libc6} in the base: same glibc {}",
            upstream_version(&libc6)
        ));
    }

    // 4. The layer, config and manifest.
    let step = Step::start("writing the /opt/jemalloc layer");
    let layer = oci::layer(oci::layer_tar(
        &tree,
        &jspec.prefix,
        args.source_date_epoch,
    )?);
    let layer_blob = cache_blob(&cache, &layer.blob.media_type, layer.blob.data.clone())?;
    step.done(format!(
        "{} ({} bytes compressed)",
        layer_blob.digest,
        layer_blob.data.len()
    ));
    // 4b. jeprof's tools from the base's own suite.
    let repo = Repo {
        mirror: &mirror,
        suite: &suite,
        component: &suite_spec.component,
        arch: &debian.arch,
        keyring: keyring.as_deref(),
    };
    let tool_pins = match &usable {
        Some(l) => l.tools.clone(),
        None => tools_layer::resolve(&dl, &cache, &repo, &facts.dpkg_status)?,
    };
    let tools_tree = tools_tree(
        &dl,
        &cache,
        &mirror,
        &tool_pins,
        &facts.dpkg_status,
        &manifest_digest,
        &base_manifest,
        &config_digest,
    )?;
    let step = Step::start("writing the jeprof tools layer");
    let tools = oci::layer(oci::layer_tar(&tools_tree, "", args.source_date_epoch)?);
    let tools_blob = cache_blob(&cache, &tools.blob.media_type, tools.blob.data.clone())?;
    step.done(format!(
        "{} ({} bytes compressed, {} packages)",
        tools_blob.digest,
        tools_blob.data.len(),
        tool_pins.len()
    ));

    let created = time::OffsetDateTime::from_unix_timestamp(args.source_date_epoch as i64)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let lib = format!("{}/lib/libjemalloc.so.2", jspec.prefix);
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("JEMALLOC_PATH".to_string(), lib.clone()));
    if args.preload {
        env.push(("LD_PRELOAD".into(), lib.clone()));
        env.push(("MALLOC_CONF".into(), args.malloc_conf.clone()));
    }
    let patches: Vec<String> = info.patches.iter().map(|p| p.name.clone()).collect();
    let labels = vec![
        (
            "org.opencontainers.image.base.name".to_string(),
            base_text.clone(),
        ),
        (
            "org.opencontainers.image.base.digest".to_string(),
            manifest_digest.clone(),
        ),
        (
            "io.github.flink-jemalloc.flink".to_string(),
            spec.flink.clone(),
        ),
        (
            "io.github.flink-jemalloc.jemalloc.version".to_string(),
            info.jemalloc_version.clone(),
        ),
        (
            "io.github.flink-jemalloc.jemalloc.sha256".to_string(),
            info.source_sha256.clone(),
        ),
        (
            "io.github.flink-jemalloc.jemalloc.configure-flags".to_string(),
            info.configure_flags.join(" "),
        ),
        (
            "io.github.flink-jemalloc.jemalloc.patches".to_string(),
            patches.join(","),
        ),
        (
            "io.github.flink-jemalloc.jemalloc.unwinder".to_string(),
            info.unwinder.to_string(),
        ),
        (
            "io.github.flink-jemalloc.sysroot".to_string(),
            format!("{} {suite} libc6={sys_libc}", facts.os_id),
        ),
        (
            "io.github.flink-jemalloc.preload".to_string(),
            args.preload.to_string(),
        ),
        (
            // The package lock, as far as it is content: every layered package and every
            // sysroot package, name=version (mirrors stay out: they do not change bytes).
            "io.github.flink-jemalloc.packages".to_string(),
            tool_pins
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "io.github.flink-jemalloc.sysroot.packages".to_string(),
            info.sysroot_packages
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "io.github.flink-jemalloc.tools".to_string(),
            tool_pins
                .iter()
                .filter(|p| crate::deps::JEPROF_TOOLS.contains(&p.name.as_str()))
                .map(|p| format!("{}={}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    let changes = ConfigChanges {
        path_dir: format!("{}/bin", jspec.prefix),
        env,
        labels,
        history: format!(
            "flink-jemalloc: {} (jemalloc {} {}, patches {})",
            jspec.prefix,
            info.jemalloc_version,
            info.configure_flags.join(" "),
            patches.join(",")
        ),
        created,
    };
    let mut config = oci::config(&base_config, &layer, &changes);
    oci::add_layer(
        &mut config,
        &tools,
        &changes.created,
        &format!(
            "flink-jemalloc: jeprof tools from debian {suite}: {}",
            tool_pins
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    let config_blob = cache_blob(&cache, oci::OCI_CONFIG, oci::canonical(&config))?;
    let mut layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let mut d = serde_json::json!({"digest": l["digest"], "size": l["size"]});
            d["mediaType"] = Value::from(oci::oci_layer_type(
                l["mediaType"].as_str().unwrap_or(oci::OCI_LAYER_GZIP),
            ));
            d
        })
        .collect();
    layer_descs.push(layer_blob.descriptor());
    layer_descs.push(tools_blob.descriptor());
    let annotations = vec![
        (
            "org.opencontainers.image.base.name".to_string(),
            base_text.clone(),
        ),
        (
            "org.opencontainers.image.base.digest".to_string(),
            manifest_digest.clone(),
        ),
    ];
    let manifest = oci::manifest(&config_blob, &layer_descs, &annotations);
    let manifest_blob = cache_blob(
        &cache,
        crate::registry::OCI_MANIFEST,
        oci::canonical(&manifest),
    )?;
    let mut all_blobs = vec![config_blob.digest.clone()];
    all_blobs.extend(
        layer_descs
            .iter()
            .filter_map(|d| d["digest"].as_str().map(str::to_string)),
    );

    // 5. Outputs.
    let tag = spec.output_tag(&info.jemalloc_version);
    let output = args.output.clone().unwrap_or_else(|| {
        cache
            .dir
            .join("images")
            .join(format!("flink-{}-jemalloc", spec.name))
    });
    let src = CacheBlobs(&cache);
    let is_tar = output.extension().is_some_and(|e| e == "tar");
    if is_tar && args.format == Format::DockerArchive {
        let layer_digests: Vec<String> = layer_descs
            .iter()
            .filter_map(|d| d["digest"].as_str().map(str::to_string))
            .collect();
        oci::write_docker_archive(
            &output,
            &config_blob,
            &layer_digests,
            &src,
            &crate::docker::image_name(&tag),
            args.source_date_epoch,
        )?;
    } else if is_tar {
        let parent = output.parent().context("output without parent")?;
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".oci-")
            .tempdir_in(parent)?;
        let layout = tmp.path().join("layout");
        oci::write_layout(&layout, &manifest_blob, &all_blobs, &src, &tag)?;
        let tar = oci::tar_dir(&layout, args.source_date_epoch)?;
        let t = tempfile::Builder::new()
            .prefix(".oci-tar-")
            .tempfile_in(parent)?;
        std::fs::write(t.path(), tar)?;
        t.persist(&output)?;
    } else {
        oci::write_layout(&output, &manifest_blob, &all_blobs, &src, &tag)?;
    }
    progress::note(format!(
        "image {} written to {}",
        manifest_blob.digest,
        output.display()
    ));

    let mut pushed = None;
    if let Some(target) = &args.push {
        let target: Reference = target.parse()?;
        let step = Step::start(format!("pushing to {target}"));
        let mut uploaded = 0;
        for d in &all_blobs {
            let data = std::fs::read(src.path_of(d)?)?;
            if client.push_blob(&target, d, &data)? {
                uploaded += 1;
            }
        }
        let digest = client.put_manifest(
            &target,
            target.reference(),
            &manifest_blob.data,
            crate::registry::OCI_MANIFEST,
        )?;
        step.done(format!(
            "{digest}; {uploaded} of {} blobs uploaded, the rest were there",
            all_blobs.len()
        ));
        pushed = Some(format!(
            "{}@{digest}",
            Reference {
                tag: None,
                digest: None,
                ..target
            }
        ));
    }
    if let Some(target) = &args.load {
        load(
            target,
            &output,
            &config_blob,
            &layer_descs,
            &src,
            &tag,
            args.source_date_epoch,
        )?;
    }

    // 6. The lock: written on first resolution, unchanged afterwards.
    let new_lock = make_lock(info.sysroot_packages.clone(), tool_pins.clone());
    if existing.as_ref() != Some(&new_lock) {
        if args.locked {
            bail!("--locked: {} would change", lock_path.display());
        }
        new_lock.write(&lock_path)?;
        progress::note(format!("wrote {}", lock_path.display()));
    }
    Ok(Built {
        manifest_digest: manifest_blob.digest,
        output,
        pushed,
    })
}

/// The tools tree for these pins on this base, cached by both (a warm rebuild reuses it
/// without downloads or chroot work).
#[allow(clippy::too_many_arguments)]
fn tools_tree(
    dl: &Downloader,
    cache: &Cache,
    mirror: &str,
    pins: &[DebPin],
    base_status: &str,
    base_digest: &str,
    base_manifest: &Value,
    config_digest: &str,
) -> Result<PathBuf> {
    let key = crate::digest::key_of(
        std::iter::once(base_digest.to_string()).chain(
            pins.iter()
                .map(|p| format!("{} {} {}", p.name, p.version, p.sha256)),
        ),
    );
    let dir = cache.dir.join("tools").join(&key.as_str()[..16]);
    let _lock = cache.lock("tools", key.as_str())?;
    if dir.join("var/lib/dpkg/status").is_file() {
        progress::note(format!("jeprof tools tree (cached): {}", dir.display()));
        return Ok(dir);
    }
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent)?;
    let work = tempfile::Builder::new()
        .prefix(".tools-")
        .tempdir_in(parent)?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    let step = Step::start(format!("unpacking {} packages for jeprof", pins.len()));
    tools_layer::fill_tree(dl, cache, mirror, pins, base_status, &tree)?;
    step.done("");
    // The base as an OCI layout (OCI media types, as umoci wants) for the chroot.
    let config = Blob::new(
        oci::OCI_CONFIG,
        std::fs::read(cache.blob(oci::hex_of(config_digest)))?,
    );
    let layers: Vec<Value> = base_manifest["layers"]
        .as_array()
        .context("base manifest without layers")?
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": oci::oci_layer_type(l["mediaType"].as_str().unwrap_or(oci::OCI_LAYER_GZIP)),
                "digest": l["digest"],
                "size": l["size"],
            })
        })
        .collect();
    let manifest = Blob::new(
        crate::registry::OCI_MANIFEST,
        oci::canonical(&oci::manifest(&config, &layers, &[])),
    );
    let mut blobs = vec![config.digest.clone()];
    blobs.extend(
        layers
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_string)),
    );
    let layout = work.path().join("base-layout");
    oci::write_layout(&layout, &manifest, &blobs, &CacheBlobs(cache), "base")?;
    tools_layer::finish_in_chroot(&layout, "base", &tree, &work.path().join("chroot"))?;
    crate::unpack::replace_dir(tree, &dir)?;
    Ok(dir)
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
    /// A Docker engine that answers; `kind`, `kubectl` and `docker` for a kind cluster.
    pub fn require(&self) -> Result<()> {
        match self {
            LoadTarget::Docker => crate::docker::require("--load"),
            LoadTarget::Kind(_) => crate::kind_cluster::require_tools(),
        }
    }

    /// `docker`, or `kind=<cluster>`.
    pub fn parse(s: &str) -> Result<LoadTarget, String> {
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

/// `--load`: the image as a docker-archive named [`crate::docker::image_name`] of its tag,
/// handed to `docker load` or `kind load image-archive`; the archive is removed afterwards.
fn load(
    target: &LoadTarget,
    output: &Path,
    config: &Blob,
    layers: &[Value],
    src: &dyn BlobSource,
    tag: &str,
    epoch: u64,
) -> Result<()> {
    target.require()?;
    let name = crate::docker::image_name(tag);
    let dir = output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new().prefix(".load-").tempdir_in(dir)?;
    let archive = tmp.path().join("image.docker.tar");
    let digests: Vec<String> = layers
        .iter()
        .filter_map(|d| d["digest"].as_str().map(str::to_string))
        .collect();
    oci::write_docker_archive(&archive, config, &digests, src, &name, epoch)?;
    let step = Step::start(format!("loading {name}"));
    match target {
        LoadTarget::Docker => crate::docker::load(&archive)?,
        LoadTarget::Kind(cluster) => {
            let sh = Shell::new()?;
            cmd!(sh, "kind load image-archive {archive} --name {cluster}")
                .quiet()
                .run()
                .with_context(|| format!("kind load image-archive into kind cluster {cluster}"))?;
        }
    }
    step.done(match target {
        LoadTarget::Docker => "into the Docker engine".to_string(),
        LoadTarget::Kind(c) => format!("into kind cluster {c}"),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_targets() {
        assert_eq!(LoadTarget::parse("docker"), Ok(LoadTarget::Docker));
        assert_eq!(
            LoadTarget::parse("kind=flink-jemalloc"),
            Ok(LoadTarget::Kind("flink-jemalloc".into()))
        );
        for bad in ["kind", "kind=", "podman", "docker=x"] {
            let e = LoadTarget::parse(bad).unwrap_err();
            assert!(e.contains("kind=<cluster>"), "{bad}: {e}");
        }
    }

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
