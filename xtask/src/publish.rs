//! `cargo xtask publish`: build every spec (as `image` does, for each of the plan's platforms
//! its official image has), push each platform's image **by digest** to
//! `<registry>/<repository>@sha256:…` with its SBOM (SPDX 2.3 JSON, [`crate::publish::sbom`])
//! next to it as an OCI artifact whose `subject` is the image: found through the referrers
//! API where the registry has one, and through the cosign-style tag `sha256-<hex>.sbom`
//! everywhere (docker-registry 2.8 has no referrers API). Then the tag
//! `<spec tag>-jemalloc-<v>-prof` names the image, or with several platforms the image index
//! over them, pushed by digest first.
//!
//! Where to push comes from configuration (`--config ci/publish.toml`: registry,
//! repository, headline spec, which specs, platforms), each overridable by a flag. A JSON
//! report (`--report`) lists what was pushed, a row per platform: spec, tag, platform,
//! digest, the index's digest, SBOM digest.

pub(crate) mod push;
pub(crate) mod sbom;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};

use crate::build::PatchInfo;
use crate::digest::Sha256Hex;
use crate::fetch::SourceArgs;
use crate::image;
use crate::oci;
use crate::oci::OCI_MANIFEST;
use crate::progress;
use crate::project;
use crate::registry::{Auths, Credentials, Reference, RegistryClient};
use crate::spec::{FlinkSpec, JemallocSpec};

const DEFAULT_REPOSITORY: &str = "flink-jemalloc";

#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Pipeline configuration (TOML: registry, repository, headline, specs), e.g.
    /// ci/publish.toml; the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Registry host and optional path prefix to push to (e.g. ghcr.io/acme).
    #[arg(long)]
    pub registry: Option<String>,
    /// Repository under the registry [default: the config's, else flink-jemalloc].
    #[arg(long)]
    pub repository: Option<String>,
    /// Specs to publish (file stems of `<specs>/flink-<NAME>.toml`), repeatable
    /// [default: the config's `specs`, else all].
    #[arg(long = "flink", value_name = "NAME")]
    pub flink: Vec<String>,
    /// Print the plan as JSON ({"headline", "registry", "repository", "specs"}) and exit,
    /// for pipelines (a build matrix, the headline's e2e).
    #[arg(long)]
    pub plan: bool,
    /// Fail if a spec's lock file is missing or would change.
    #[arg(long)]
    pub locked: bool,
    /// Platforms, comma-separated (linux/amd64, linux/arm64): with several, each spec's tag
    /// names one image index over an image per platform, each image with its SBOM
    /// [default: the config's `platforms`, else linux/amd64].
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Talk plain HTTP to registries (loopback test registries only).
    #[arg(long)]
    pub plain_http: bool,
    /// Registry user name; the password is read from $REGISTRY_PASSWORD.
    #[arg(long)]
    pub registry_user: Option<String>,
    /// Directory of the `flink-*.toml` specs and their locks [default: images/].
    #[arg(long, env = "FLINK_JEMALLOC_SPECS")]
    pub specs: Option<PathBuf>,
    /// Debian/Ubuntu mirror for every spec [default: each base's own apt source].
    #[arg(long)]
    pub mirror: Option<String>,
    /// OpenPGP keyring the suites' Release files must be signed by.
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Check each suite's signature with its distribution's archive keyrings (see `image
    /// --archive-keyring`).
    #[arg(long)]
    pub archive_keyring: bool,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Cache and work directory [default: target/flink-jemalloc, or $FLINK_JEMALLOC_CACHE].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Write the publish report (JSON) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Fixed timestamp for layers, config, history and the SBOM's creation time.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    pub source_date_epoch: u64,
    /// A label (and manifest annotation) of every image, KEY=VALUE (repeatable): the
    /// workflow passes `org.opencontainers.image.source` and `.revision`, which link a
    /// ghcr.io package to its repository.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::image::parse_label)]
    pub labels: Vec<(String, String)>,
}

/// `ci/publish.toml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Registry host and optional path prefix.
    pub registry: Option<String>,
    /// Repository under the registry.
    pub repository: Option<String>,
    /// The spec the end-to-end test runs on.
    pub headline: Option<String>,
    /// Specs to publish; empty or missing means all.
    #[serde(default)]
    pub specs: Vec<String>,
    /// Platforms to publish; empty or missing means linux/amd64.
    #[serde(default)]
    pub platforms: Vec<String>,
}

impl Config {
    pub(crate) fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the publish configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// What one run publishes, after the configuration and the flags are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub registry: String,
    pub repository: String,
    pub headline: Option<String>,
    pub specs: Vec<String>,
    /// The platforms asked for (`linux/amd64` and maybe `linux/arm64`).
    pub platforms: Vec<String>,
    /// Per spec (the headline's too), those of them its official image has.
    pub spec_platforms: std::collections::BTreeMap<String, Vec<String>>,
    /// Specs of this plan (the headline's too) whose lock file `dir` lacks: a repository's
    /// first run, before any lock is committed, resolves them (`cargo xtask lock`) and builds
    /// from those.
    pub unlocked: Vec<String>,
}

/// Merges flags over the configuration and checks the result against the specs in `dir`.
pub(crate) fn plan(args: &PublishArgs, config: &Config, dir: &Path) -> Result<Plan> {
    let all: Vec<String> = FlinkSpec::all_in(dir)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let specs = if !args.flink.is_empty() {
        args.flink.clone()
    } else if !config.specs.is_empty() {
        config.specs.clone()
    } else {
        all.clone()
    };
    for s in specs.iter().chain(config.headline.iter()) {
        if !all.contains(s) {
            bail!(
                "no spec `{s}` in {} (known: {})",
                dir.display(),
                all.join(", ")
            );
        }
    }
    let registry = args
        .registry
        .clone()
        .or(config.registry.clone())
        .context("no registry: pass --registry HOST[/PREFIX] or set `registry` in --config")?;
    let registry = registry.trim_end_matches('/').to_string();
    let repository = args
        .repository
        .clone()
        .or(config.repository.clone())
        .unwrap_or_else(|| DEFAULT_REPOSITORY.to_string());
    // Both parts must make an image reference.
    format!("{registry}/{repository}")
        .parse::<Reference>()
        .with_context(|| format!("registry `{registry}` with repository `{repository}`"))?;
    if !registry.contains(['.', ':']) && !registry.starts_with("localhost") {
        bail!("registry `{registry}` names no host (e.g. ghcr.io/acme, 127.0.0.1:5000)");
    }
    let platforms = if !args.platform.is_empty() {
        args.platform.clone()
    } else if !config.platforms.is_empty() {
        config.platforms.clone()
    } else {
        vec![crate::spec::DEFAULT_PLATFORM.to_string()]
    };
    // The locks `image` reads: `flink-<spec>[-jemalloc-5.3.0][-arm64].lock`, one per platform.
    let jspec = JemallocSpec::load_release(&project::root(), args.source.jemalloc.as_deref())?;
    let debian = crate::spec::DebianSpec::load(&project::root())?;
    for p in &platforms {
        debian.platform(p)?;
    }
    let spec_platforms = spec_platforms(&specs, config.headline.as_deref(), &platforms, dir)?;
    let mut unlocked = Vec::new();
    for (s, ps) in &spec_platforms {
        for p in ps {
            let lock = image::context::lock_name(s, &jspec, p, debian.platform(p)?);
            if !dir.join(lock).is_file() {
                unlocked.push(s.clone());
            }
        }
    }
    unlocked.sort();
    unlocked.dedup();
    Ok(Plan {
        registry,
        repository,
        headline: config.headline.clone(),
        specs,
        platforms,
        spec_platforms,
        unlocked,
    })
}

/// Returns, per spec of `specs`, the platforms of `platforms` its official image has (in
/// `platforms`' order; a spec left with none is an error naming its file), and for a
/// headline not among them linux/amd64, what the e2e job builds of it.
fn spec_platforms(
    specs: &[String],
    headline: Option<&str>,
    platforms: &[String],
    dir: &Path,
) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(h) = headline.filter(|h| !specs.iter().any(|s| s == h)) {
        out.insert(
            h.to_string(),
            vec![crate::spec::DEFAULT_PLATFORM.to_string()],
        );
    }
    for s in specs {
        let spec = FlinkSpec::load_in(dir, s)?;
        let has: Vec<String> = platforms
            .iter()
            .filter(|p| spec.platforms.contains(p))
            .cloned()
            .collect();
        if has.is_empty() {
            bail!(
                "spec `{s}`: its official image has {}, none of {} ({}: `platforms`)",
                spec.platforms.join(", "),
                platforms.join(", "),
                dir.join(format!("flink-{s}.toml")).display()
            );
        }
        out.insert(s.to_string(), has);
    }
    Ok(out)
}

/// One published image (of one platform).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Published {
    pub spec: String,
    pub flink: String,
    pub tag: String,
    pub image: String,
    /// `linux/amd64`.
    pub platform: String,
    /// The digest of the index the tag names, when several platforms were published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub digest: String,
    pub base_digest: String,
    pub sbom_digest: String,
    pub sbom_tag: String,
}

pub fn run(args: PublishArgs) -> Result<()> {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let dir = FlinkSpec::dir_or_default(args.specs.as_deref());
    let plan = plan(&args, &config, &dir)?;
    if args.plan {
        println!(
            "{}",
            serde_json::to_string(&json!({
                "registry": plan.registry,
                "repository": plan.repository,
                "headline": plan.headline,
                "specs": plan.specs,
                "unlocked": plan.unlocked,
                "platforms": plan
                    .spec_platforms
                    .iter()
                    .map(|(s, p)| (s.clone(), json!(p.join(","))))
                    .collect::<serde_json::Map<_, _>>(),
            }))?
        );
        return Ok(());
    }
    let published = all(&args, &plan, &dir)?;
    for p in &published {
        println!("{}@{} {} sbom {}", p.image, p.digest, p.tag, p.sbom_digest);
    }
    Ok(())
}

/// Returns the image request of spec `spec`: publish's shared flags, written to `output`.
fn image_request(
    args: &PublishArgs,
    plan: &Plan,
    spec: &str,
    output: &Path,
) -> Result<image::Request> {
    Ok(image::Request {
        platforms: plan
            .spec_platforms
            .get(spec)
            .cloned()
            .unwrap_or_else(|| plan.platforms.clone()),
        specs: args.specs.clone(),
        mirror: args.mirror.clone(),
        keyring: args.keyring.clone(),
        archive_keyring: args.archive_keyring,
        source: args.source.clone(),
        cache_dir: args.cache_dir.clone(),
        output: Some(output.to_path_buf()),
        source_date_epoch: args.source_date_epoch,
        locked: args.locked,
        plain_http: args.plain_http,
        labels: args.labels.clone(),
        ..image::Request::new(spec)?
    })
}

/// Returns the client of the push: the push credentials are the push registry's only (the
/// bases are pulled with the Docker config's credentials of their own hosts, or
/// anonymously).
fn push_client(args: &PublishArgs, target: &Reference) -> Result<RegistryClient> {
    let mut auths = Auths::from_docker_config()?;
    if let Some(user) = &args.registry_user {
        auths = auths.with(
            &target.registry,
            Credentials {
                username: user.clone(),
                password: std::env::var("REGISTRY_PASSWORD").unwrap_or_default(),
            },
        );
    }
    Ok(RegistryClient::new(args.plain_http, auths))
}

/// Builds, pushes and tags every spec of `plan`, with its SBOM; writes `--report`.
pub(crate) fn all(args: &PublishArgs, plan: &Plan, dir: &Path) -> Result<Vec<Published>> {
    let root = project::root();
    let jspec = JemallocSpec::load_release(&root, args.source.jemalloc.as_deref())?;
    let jemalloc = sbom::Jemalloc {
        version: jspec.version.clone(),
        configure_flags: jspec.configure_flags.clone(),
        patch_dir: jspec.patches.display().to_string(),
        patches: patch_infos(&jspec, &root)?,
    };
    let target: Reference = format!("{}/{}", plan.registry, plan.repository).parse()?;
    let client = push_client(args, &target)?;
    let work_parent = args
        .cache_dir
        .clone()
        .unwrap_or_else(project::default_cache_dir)
        .join("publish");
    std::fs::create_dir_all(&work_parent)?;
    let work = tempfile::Builder::new()
        .prefix(".publish-")
        .tempdir_in(&work_parent)?;
    let mut published = Vec::new();
    for name in &plan.specs {
        let spec = FlinkSpec::load_in(dir, name)?;
        let tag = spec.output_tag(&jspec.version);
        progress::note(format!(
            "==> {name}: {} → {}/{}:{tag}",
            spec.base, target.registry, target.repository
        ));
        let layout = work.path().join(name);
        let built = image::make(&image_request(args, plan, name, &layout)?)
            .with_context(|| format!("building spec `{name}`"))?;
        let index_digest = (built.images.len() > 1 || plan.spec_platforms[name].len() > 1)
            .then(|| built.manifest_digest.clone());
        for one in &built.images {
            let pushed = push::image(&client, &target, &built.output, one, &tag)?;
            let sbom = push::sbom(
                args.source_date_epoch,
                &client,
                &target,
                &pushed,
                &one.lock,
                &jemalloc,
            )?;
            published.push(Published {
                spec: name.clone(),
                flink: spec.flink.clone(),
                tag: tag.clone(),
                image: format!("{}/{}", target.registry, target.repository),
                platform: one.platform.clone(),
                index_digest: index_digest.clone(),
                digest: pushed.digest,
                base_digest: one.lock.base.manifest_digest.clone(),
                sbom_digest: sbom.0,
                sbom_tag: sbom.1,
            });
        }
        match &index_digest {
            Some(index) => push::index(&client, &target, &built.output, index, &tag)?,
            None => {
                let (manifest, _, _) = oci::layout_manifest(&built.output, &built.manifest_digest)?;
                client.put_manifest(&target, &tag, &manifest, OCI_MANIFEST)?;
            }
        }
        // The layout is in the registry now; its blobs stay in the cache.
        std::fs::remove_dir_all(&layout).ok();
    }
    if let Some(path) = &args.report {
        write_report(path, plan, &published)?;
        progress::note(format!("report: {}", path.display()));
    }
    Ok(published)
}

/// Returns each carried patch's name and sha256.
fn patch_infos(jspec: &JemallocSpec, root: &Path) -> Result<Vec<PatchInfo>> {
    jspec
        .patch_files(root)?
        .iter()
        .map(|p| {
            Ok(PatchInfo {
                name: p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                sha256: Sha256Hex::of_file(p)?.to_string(),
            })
        })
        .collect()
}

/// Writes the publish report: canonical JSON, images in publishing order.
pub(crate) fn write_report(path: &Path, plan: &Plan, published: &[Published]) -> Result<()> {
    let v = json!({
        "registry": plan.registry,
        "repository": plan.repository,
        "images": published,
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, oci::canonical(&v))
        .with_context(|| format!("writing the report {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> PublishArgs {
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: PublishArgs,
        }
        let mut argv = vec!["publish"];
        argv.extend_from_slice(extra);
        W::try_parse_from(argv).unwrap().a
    }

    #[test]
    fn committed_config_names_existing_specs() {
        let root = project::root();
        let c = Config::load(&root.join("ci/publish.toml")).unwrap();
        let p = plan(&args(&[]), &c, &FlinkSpec::default_dir(&root)).unwrap();
        let headline = p.headline.clone().expect("a headline spec");
        assert!(p.specs.contains(&headline), "{p:?}");
        assert!(p.specs.contains(&"1.10.3".to_string()), "{p:?}");
        assert!(p.registry.contains('.'), "{p:?}");
    }

    #[test]
    fn a_first_run_lists_the_specs_without_locks() {
        let root = project::root();
        let dir = tempfile::tempdir().unwrap();
        for s in ["1.10.1", "1.10.3", "2.2.1"] {
            let name = format!("flink-{s}.toml");
            std::fs::copy(root.join("images").join(&name), dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("flink-2.2.1.lock"), "").unwrap();
        let c = Config {
            registry: Some("ghcr.io/acme".into()),
            headline: Some("1.10.3".into()),
            ..Config::default()
        };
        let p = plan(&args(&[]), &c, dir.path()).unwrap();
        assert_eq!(p.unlocked, ["1.10.1", "1.10.3"]);
        // The headline's lock is needed by the e2e job even when it is not published.
        let p = plan(&args(&["--flink", "2.2.1"]), &c, dir.path()).unwrap();
        assert_eq!(p.unlocked, ["1.10.3"]);
        // With arm64 too, a spec needs both platforms' locks.
        let both = args(&["--flink", "2.2.1", "--platform", "linux/amd64,linux/arm64"]);
        let p = plan(&both, &c, dir.path()).unwrap();
        assert_eq!(p.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(p.unlocked, ["1.10.3", "2.2.1"]);
        std::fs::write(dir.path().join("flink-2.2.1-arm64.lock"), "").unwrap();
        let p = plan(&both, &c, dir.path()).unwrap();
        assert_eq!(p.unlocked, ["1.10.3"]);
        let c = Config {
            platforms: vec!["linux/arm64".into()],
            ..c
        };
        let p = plan(&args(&["--flink", "2.2.1"]), &c, dir.path()).unwrap();
        assert_eq!(p.platforms, ["linux/arm64"]);
        let bad = plan(&args(&["--platform", "linux/s390x"]), &c, dir.path());
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("no platform linux/s390x"));
        // 1.10's official images are amd64 only: only its amd64 lock is needed, and arm64
        // alone is refused naming the spec's file.
        let p = plan(&both, &c, dir.path()).unwrap();
        assert_eq!(p.spec_platforms["1.10.3"], ["linux/amd64"]);
        assert_eq!(p.spec_platforms["2.2.1"], ["linux/amd64", "linux/arm64"]);
        let arm64 = args(&["--flink", "1.10.1", "--platform", "linux/arm64"]);
        let e = plan(&arm64, &c, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("spec `1.10.1`: its official image has linux/amd64, none of linux/arm64"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_config() {
        let root = project::root();
        let dir = FlinkSpec::default_dir(&root);
        let c = Config {
            registry: Some("ghcr.io/acme/".into()),
            repository: None,
            headline: Some("1.10.3".into()),
            specs: vec!["1.10.1".into()],
            platforms: vec![],
        };
        let p = plan(&args(&[]), &c, &dir).unwrap();
        // No lock is committed yet: a first run resolves the plan's and the headline's.
        let committed = |s: &str| dir.join(format!("flink-{s}.lock")).is_file();
        let expected: Vec<String> = ["1.10.1", "1.10.3"]
            .into_iter()
            .filter(|s| !committed(s))
            .map(String::from)
            .collect();
        assert_eq!(p.unlocked, expected);
        assert_eq!(
            (p.registry.as_str(), p.repository.as_str(), p.specs.clone()),
            (
                "ghcr.io/acme",
                DEFAULT_REPOSITORY,
                vec!["1.10.1".to_string()]
            )
        );
        let p = plan(
            &args(&[
                "--registry",
                "127.0.0.1:5000",
                "--flink",
                "1.10.3",
                "--repository",
                "x/y",
            ]),
            &c,
            &dir,
        )
        .unwrap();
        assert_eq!(
            (p.registry.as_str(), p.repository.as_str(), p.specs.clone()),
            ("127.0.0.1:5000", "x/y", vec!["1.10.3".to_string()])
        );
        let err = plan(&args(&["--flink", "0.9"]), &c, &dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no spec `0.9`") && err.contains("1.10.1"),
            "{err}"
        );
        let err = plan(&args(&[]), &Config::default(), &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--registry"), "{err}");
        let err = plan(&args(&["--registry", "nohost"]), &Config::default(), &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no host"), "{err}");
        let err = plan(
            &args(&["--registry", "ghcr.io", "--repository", "Bad"]),
            &c,
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Bad"), "{err}");
    }

    #[test]
    fn image_request_passes_the_shared_flags() {
        let a = args(&[
            "--registry",
            "r.example",
            "--locked",
            "--plain-http",
            "--mirror",
            "http://m",
            "--url",
            "file:///j.tar.bz2",
            "--sha256",
            &"a".repeat(64),
            "--specs",
            "/s",
        ]);
        let plan = Plan {
            registry: "r.example".into(),
            repository: "f".into(),
            headline: None,
            specs: vec![],
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            spec_platforms: [("1.10.3".to_string(), vec!["linux/amd64".to_string()])].into(),
            unlocked: vec![],
        };
        let i = image_request(&a, &plan, "1.10.3", Path::new("/out")).unwrap();
        assert_eq!(i.flink, "1.10.3");
        // The spec's platforms of the plan's: 1.10.3's official image is amd64 only.
        assert_eq!(i.platforms, ["linux/amd64"]);
        assert!(i.locked && i.plain_http && i.push.is_none());
        assert_eq!(i.mirror.as_deref(), Some("http://m"));
        assert_eq!(i.output.as_deref(), Some(Path::new("/out")));
        assert_eq!(i.specs.as_deref(), Some(Path::new("/s")));
        assert_eq!(i.source.sha256, Some("a".repeat(64)));
    }
}
