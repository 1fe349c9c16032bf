//! `cargo xtask fetch`: download the jemalloc release, verify its pinned sha256, unpack it
//! safely into the cache, and print where the source tree is.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::digest::Sha256Hex;
use crate::download::Downloader;
use crate::progress::{self, Step};
use crate::project::{self, Cache};
use crate::spec::JemallocSpec;
use crate::unpack::{self, AbsoluteLinks};

/// Which jemalloc and where its source comes from; all default to `images/jemalloc.toml`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// The jemalloc release (a `[release."<version>"]` of images/jemalloc.toml: 5.2.1, the
    /// default, or 5.3.0).
    #[arg(long, value_name = "VERSION")]
    pub jemalloc: Option<String>,
    /// Tarball URL (http, https or file://) instead of the official release.
    #[arg(long)]
    pub url: Option<String>,
    /// The sha256 the tarball must have (required with --url unless it is the release's).
    #[arg(long)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Cache and work directory [default: target/flink-jemalloc, or $FLINK_JEMALLOC_CACHE].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// A verified, unpacked source tree.
#[derive(Debug, Clone)]
pub(crate) struct FetchedSource {
    pub url: String,
    pub sha256: Sha256Hex,
    /// The top directory of the unpacked tree (the one holding `configure`).
    pub dir: PathBuf,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let cache = Cache::new(args.cache_dir.unwrap_or_else(project::default_cache_dir));
    let spec = JemallocSpec::load_release(&project::root(), args.source.jemalloc.as_deref())?;
    let src = fetch_source(&Downloader::new(), &cache, &spec, &args.source)?;
    println!("{}", src.dir.display());
    Ok(())
}

/// Resolves the URL and digest, downloads (or reuses the cached tarball), and unpacks.
pub(crate) fn fetch_source(
    dl: &Downloader,
    cache: &Cache,
    spec: &JemallocSpec,
    args: &SourceArgs,
) -> Result<FetchedSource> {
    let url = args.url.clone().unwrap_or_else(|| spec.url.clone());
    let sha256 = match (&args.sha256, &args.url) {
        (Some(s), _) => Sha256Hex::parse(s).context("--sha256")?,
        (None, Some(u)) if *u != spec.url => bail!(
            "--url {u} needs --sha256: only the official releases' digests are pinned in images/jemalloc.toml"
        ),
        (None, _) => Sha256Hex::parse(&spec.sha256)?,
    };
    let cached = cache.blob(sha256.as_str()).is_file();
    let step = Step::start(if cached {
        format!(
            "jemalloc {} source (cached, sha256 {})",
            spec.version,
            &sha256.as_str()[..12]
        )
    } else {
        format!("downloading {url}")
    });
    let tarball = dl.fetch(cache, &url, &sha256)?;
    step.done(format!("sha256 {sha256} verified"));

    let unpacked = cache.source_dir(sha256.as_str());
    let _lock = cache.lock("src", sha256.as_str())?;
    if !unpacked.is_dir() {
        let step = Step::start(format!("unpacking into {}", unpacked.display()));
        let file = std::fs::File::open(&tarball)
            .with_context(|| format!("opening {}", tarball.display()))?;
        let stats = unpack::unpack_fresh(
            unpack::decompressed(file)?,
            &unpacked,
            AbsoluteLinks::Refuse,
        )
        .with_context(|| format!("unpacking {url} (sha256 {sha256})"))?;
        step.done(format!("{} files", stats.files));
    }
    let dir = source_root(&unpacked)?;
    progress::note(format!("source tree: {}", dir.display()));
    Ok(FetchedSource { url, sha256, dir })
}

/// Returns the directory holding `configure`: the tree itself or its single top directory.
fn source_root(unpacked: &Path) -> Result<PathBuf> {
    if unpacked.join("configure").is_file() {
        return Ok(unpacked.to_path_buf());
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(unpacked)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match &dirs[..] {
        [one] if one.join("configure").is_file() => Ok(one.clone()),
        _ => bail!(
            "{} holds no jemalloc source tree (expected one top directory with `configure`)",
            unpacked.display()
        ),
    }
}
