//! `cargo xtask image --flink X`: the official Flink image plus a profiling jemalloc under
//! `/opt/jemalloc`, built without a Docker daemon and bit-for-bit reproducibly.
//!
//! The pipeline, one stage each ([`make`]): resolve the spec and the lock → pull the base
//! (`base`) → inspect it: suite, libc6, apt sources (`base`, `inspect`) → build jemalloc
//! against that suite (`crate::build`) → the jeprof tools layer (`tools_layer`, `deps`) →
//! layer, config and manifest (`config`) → layout, tarball, push, load (`output`) → lock
//! (`lock`).

pub(crate) mod base;
pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod context;
pub mod deps;
pub(crate) mod index;
pub mod inspect;
pub(crate) mod jemalloc;
pub mod lock;
pub(crate) mod locking;
pub(crate) mod made;
pub(crate) mod output;
pub(crate) mod request;
pub mod tools_layer;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::fetch::SourceArgs;
use crate::project;
use crate::spec::{FlinkSpec, JemallocSpec};
use made::{note_requests, stages, Made};
pub use made::{Built, PlatformBuilt};
pub(crate) use request::DEFAULT_MALLOC_CONF;
pub use request::{Format, LoadTarget, Request};

#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// The spec to build: `<specs>/flink-<NAME>.toml` (NAME is usually the Flink version).
    #[arg(long, value_name = "NAME", required_unless_present = "list")]
    pub flink: Option<String>,
    /// The platform to build for: linux/amd64, or linux/arm64 (the arm64 image of the
    /// official index; jemalloc cross-built, the in-image steps run under qemu-user); or
    /// both, comma-separated: one image index holding an image per platform [default: this
    /// machine's, linux/amd64 on x86-64].
    #[arg(long, value_delimiter = ',', default_value = crate::spec::native_platform())]
    pub platform: Vec<String>,
    /// Print the table of image specs (Markdown) and exit.
    #[arg(long)]
    pub list: bool,
    /// With --list: print the specs as JSON, for pipelines.
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
    /// The MALLOC_CONF that --preload bakes in.
    #[arg(long, default_value = DEFAULT_MALLOC_CONF)]
    pub malloc_conf: String,
    /// A label of the image config and annotation of its manifest, KEY=VALUE (repeatable),
    /// e.g. `org.opencontainers.image.source=https://github.com/acme/flink-jemalloc`: what a
    /// pipeline knows and a local build does not. Without it nothing is added, so local
    /// digests stay as they were; with it the digest is as deterministic as the values.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Output: a directory (OCI image layout) or a file ending in .tar
    /// [default: <cache>/images/flink-<version>-jemalloc, `-jemalloc-5.3.0` with --jemalloc
    /// 5.3.0, `-arm64` after it for --platform linux/arm64 alone].
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
    /// Lock file, linux/amd64's; another platform's is this with `-<arch>` before `.lock`
    /// (`flink-arm64.lock`), each platform its own [default: images/flink-<version>.lock;
    /// flink-<version>-jemalloc-5.3.0.lock with --jemalloc 5.3.0].
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

impl Request {
    /// Returns the request `cargo xtask image --flink <flink>` makes: every other field at
    /// the default its flag has (and what the environment sets, as for the command), so a
    /// request built in code never drifts from the command's.
    pub fn new(flink: &str) -> Result<Request> {
        #[derive(clap::Parser)]
        struct Image {
            #[command(flatten)]
            args: ImageArgs,
        }
        use clap::Parser;
        Image::try_parse_from(["image", "--flink", flink])
            .context("the defaults of `cargo xtask image`")?
            .args
            .into_request()
    }
}

impl ImageArgs {
    /// Returns the request these flags make (`--flink` must be given: `--list` is answered
    /// before this).
    fn into_request(self) -> Result<Request> {
        Ok(Request {
            flink: self.flink.context("--flink is required")?,
            platforms: self.platform,
            specs: self.specs,
            base: self.base,
            plain_http: self.plain_http,
            registry_user: self.registry_user,
            mirror: self.mirror,
            preload: self.preload,
            malloc_conf: self.malloc_conf,
            labels: self.labels,
            output: self.output,
            format: self.format,
            push: self.push,
            load: self.load,
            keyring: self.keyring,
            archive_keyring: self.archive_keyring,
            lock_only: self.lock_only,
            locked: self.locked,
            lock_file: self.lock_file,
            source_date_epoch: self.source_date_epoch,
            source: self.source,
            cache_dir: self.cache_dir,
        })
    }
}

pub fn run(args: ImageArgs) -> Result<()> {
    if args.list {
        let dir = FlinkSpec::dir_or_default(args.specs.as_deref());
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
        // Before any work, check what the load needs.
        target.require()?;
    }
    let req = args.into_request()?;
    let built = make(&req)?;
    if req.lock_only {
        for one in &built.images {
            println!("{}", one.lock_path.display());
        }
    } else {
        println!("{}", built.manifest_digest);
    }
    Ok(())
}

/// Returns the Markdown table of the specs in `dir` (`--list`).
fn list_table(dir: &Path) -> Result<String> {
    let mut out = String::from(
        "| `--flink` | Flink | base image | distribution | Java | platforms | profiled image tag |\n|---|---|---|---|---|---|---|\n",
    );
    let releases = JemallocSpec::all(&project::root())?;
    let jemalloc = releases[0].version.clone();
    for s in FlinkSpec::all_in(dir)? {
        out.push_str(&format!(
            "| {} | {} | `{}` | {} | {} | {} | `{}` |\n",
            s.name,
            s.flink,
            s.base,
            s.distribution,
            s.java,
            s.platforms
                .iter()
                .map(|p| p.trim_start_matches("linux/"))
                .collect::<Vec<_>>()
                .join(", "),
            s.output_tag(&jemalloc)
        ));
    }
    for r in &releases[1..] {
        out.push_str(&format!(
            "\nWith `--jemalloc {v}` each tag ends `-jemalloc-{v}-prof` instead.\n",
            v = r.version
        ));
    }
    Ok(out)
}

/// Runs `image` (and `lock`): spec and lock → pull the base → inspect it → build jemalloc →
/// tools layer → assemble → write outputs → lock; for several platforms, that up to the
/// lock once per platform, then one index over their images is written (`index`).
pub fn make(req: &Request) -> Result<Built> {
    if !req.lock_only && !crate::rootless::is_root() {
        // Before any work, check for a user namespace: the in-image steps (ldconfig,
        // `dot -c`) need one.
        crate::rootless::require_userns()?;
    }
    if req.platforms.len() > 1 {
        return index::make(req);
    }
    let requests_before = crate::download::requests();
    let run = context::resolve(req)?;
    let made = stages(&run)?;
    let (image, lock, outputs) = match made {
        Made::Locked { base_digest, lock } => {
            return Ok(Built {
                images: vec![PlatformBuilt {
                    platform: run.platform_name.clone(),
                    manifest_digest: base_digest.clone(),
                    lock: lock.clone(),
                    lock_path: run.lock_path.clone(),
                }],
                manifest_digest: base_digest,
                output: run.lock_path.clone(),
                pushed: None,
                lock,
            })
        }
        Made::Image {
            image,
            lock,
            compiled,
        } => {
            let outputs = output::write(&run, &image)?;
            locking::keep(&run, &lock)?;
            note_requests(requests_before, compiled);
            (image, lock, outputs)
        }
    };
    Ok(Built {
        images: vec![PlatformBuilt {
            platform: run.platform_name.clone(),
            manifest_digest: image.manifest.digest.clone(),
            lock: lock.clone(),
            lock_path: run.lock_path.clone(),
        }],
        manifest_digest: image.manifest.digest,
        output: outputs.path,
        pushed: outputs.pushed,
        lock,
    })
}

/// Parses `--label KEY=VALUE` into a key that is not empty and has no space, and its value.
pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
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
    fn list_names_every_spec() {
        let t = list_table(&FlinkSpec::default_dir(&project::root())).unwrap();
        assert!(
            t.contains(
                "| 1.10.1 | 1.10.1 | `docker.io/library/flink:1.10.1-scala_2.12` | debian buster | 8 | amd64 | `1.10.1-scala_2.12-jemalloc-5.2.1-prof` |"
            ),
            "{t}"
        );
        assert!(t.contains("| ubuntu noble | 17 | amd64, arm64 |"), "{t}");
        // The README's table of supported versions is this output.
        let readme = std::fs::read_to_string(project::root().join("README.md")).unwrap();
        assert!(
            readme.contains(&t),
            "README.md's table differs from `cargo xtask image --list`:\n{t}"
        );
    }
}
