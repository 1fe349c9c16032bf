//! `cargo xtask deploy`: what makes an existing Flink deployment run its TaskManagers on a
//! profiled image with profiling on, for each way of running Flink: a `FlinkDeployment`
//! merge patch (the Flink Kubernetes Operator), a TaskManager pod template and the
//! configuration that names it (native Kubernetes), a strategic merge patch of the
//! TaskManager Deployment (standalone Kubernetes) and an override file for the `taskmanager`
//! service (Docker Compose). They are printed, or written with `--out DIR`; nothing is
//! applied.
//! The files themselves are made by the pure functions of `deploy/manifests.rs`.

pub(crate) mod manifests;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::progress;
pub(crate) use manifests::{render, File, Params, Sampling, Target};

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false)
    .args(["operator", "native", "standalone", "compose"])))]
pub struct DeployArgs {
    /// A FlinkDeployment of the Flink Kubernetes Operator (a merge patch of its spec).
    #[arg(long)]
    pub operator: bool,
    /// Flink's native Kubernetes integration (a TaskManager pod template and the
    /// configuration that names it).
    #[arg(long)]
    pub native: bool,
    /// Flink's standalone Kubernetes Deployments (a strategic merge patch of the
    /// TaskManager's Deployment).
    #[arg(long)]
    pub standalone: bool,
    /// Docker Compose, as Flink's docs run it (an override file for the taskmanager service).
    #[arg(long)]
    pub compose: bool,
    /// The profiled image, as your cluster pulls it (what `cargo xtask image --push` or
    /// `publish` printed, best by digest).
    #[arg(long)]
    pub image: String,
    /// How densely jemalloc samples: `production` (jemalloc's default, one sample per
    /// 512 KiB allocated on average, a dump per 4 GiB allocated) or `dense` (one per
    /// 128 KiB as the e2e scenarios do, a dump per 1 GiB; more dumps, finer sites).
    /// Measured on a RocksDB job that allocates as fast as it can (README "What profiling
    /// costs"): beside the same jemalloc without profiling, production costs 13% of its
    /// throughput (15% more CPU per record), dense 16% (19%); RSS within 2%.
    #[arg(long, value_enum, default_value_t = Sampling::Production)]
    pub sampling: Sampling,
    /// A dump every 2^N bytes allocated, instead of the sampling's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(20..=40))]
    pub lg_prof_interval: Option<u32>,
    /// The name of what is patched: the FlinkDeployment (operator), the TaskManager
    /// Deployment (standalone, default `flink-taskmanager` as in Flink's docs) or the
    /// compose service (default `taskmanager`).
    #[arg(long)]
    pub name: Option<String>,
    /// Write the files into this directory instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace files of the same names in `--out`.
    #[arg(long)]
    pub force: bool,
}

impl DeployArgs {
    fn target(&self) -> Target {
        if self.operator {
            Target::Operator
        } else if self.native {
            Target::Native
        } else if self.standalone {
            Target::Standalone
        } else {
            Target::Compose
        }
    }

    /// Returns the request the flags make (checked).
    pub(crate) fn params(&self) -> Result<Params> {
        let image = self.image.trim();
        if image.is_empty() || image.contains(char::is_whitespace) {
            bail!(
                "--image '{}' is not an image reference: give the profiled image as your cluster \
                 pulls it, e.g. registry.example.com/flink@sha256:…",
                self.image
            );
        }
        if let Some(name) = &self.name {
            if !manifests::is_dns_label(name) && self.target() != Target::Compose {
                bail!(
                    "--name '{name}' is not a Kubernetes object name (lower-case letters, digits \
                     and '-', at most 63): give the name `kubectl get` shows"
                );
            }
        }
        Ok(Params {
            target: self.target(),
            image: image.to_string(),
            sampling: self.sampling,
            lg_prof_interval: self.lg_prof_interval,
            name: self.name.clone(),
        })
    }
}

pub fn run(args: DeployArgs) -> Result<()> {
    let files = render(&args.params()?)?;
    match &args.out {
        None => {
            for f in &files {
                println!("# ==> {} <==", f.name);
                print!("{}", f.text);
            }
        }
        Some(dir) => {
            write_all(dir, &files, args.force)?;
            for f in &files {
                println!("{}", dir.join(&f.name).display());
            }
        }
    }
    if let Some(first) = files.first() {
        progress::note(first.how_to_apply.clone());
    }
    Ok(())
}

/// Writes every file into `dir` (made if missing), each through a temporary file renamed
/// into place; refuses, before writing any, when one exists and `force` is not given.
pub(crate) fn write_all(dir: &Path, files: &[File], force: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !force {
        if let Some(f) = files.iter().find(|f| dir.join(&f.name).exists()) {
            bail!(
                "{} exists: pass --force to replace it, or another --out",
                dir.join(&f.name).display()
            );
        }
    }
    for f in files {
        let dest = dir.join(&f.name);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, f.text.as_bytes())
            .with_context(|| format!("writing {}", dest.display()))?;
        tmp.persist(&dest)
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    Ok(())
}
