//! Where the JobManager and TaskManager run: the drivers (`docker`, `runc`, `kind`) behind
//! the [`Cluster`] trait, what each prepares once per `e2e` run ([`Engine`]), and the
//! Flink process settings and ports they share (`flink_process`).

pub mod docker;
pub(crate) mod flink_process;
pub mod kind;
pub mod kube;
pub mod runc;

use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::docker::{self as engine, LoadedImage};
use crate::e2e::cluster::{Allocator, Cluster, ClusterSpec};
use crate::progress::flag;
use docker::{DockerCluster, DockerOptions};
use kind::{KindCluster, KindOptions, KindSession};
use runc::RuncCluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// JobManager and TaskManager as containers of a Docker engine (needs access to it).
    Docker,
    /// JobManager and TaskManager as runc containers on this machine (needs root, no engine).
    Runc,
    /// Standalone JobManager/TaskManager deployments on a kind cluster.
    Kind,
}

impl Driver {
    /// Returns the driver when none is asked for: docker when a Docker engine answers, else
    /// runc.
    pub(crate) fn default_here() -> Driver {
        if engine::engine_answers() {
            Driver::Docker
        } else {
            Driver::Runc
        }
    }
}

/// The drivers' flags of `e2e`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// docker: a user-defined network instead of the host network.
    pub docker_network: Option<String>,
    /// kind: the cluster's name.
    pub kind_cluster: String,
    /// kind: keep the namespace (and the cluster) afterwards.
    pub keep: bool,
}

/// Checks what the driver needs before any work: the error names what to do.
pub(crate) fn require(driver: Driver) -> Result<()> {
    match driver {
        Driver::Docker => engine::require("--driver docker"),
        Driver::Kind => kind::require_tools(),
        Driver::Runc => runc::require(),
    }
}

/// What a driver prepares once per run, for every allocator.
pub(crate) enum Engine {
    /// runc runs the unpacked image: its bundle directory.
    Runc(PathBuf),
    /// The image loaded into the Docker engine.
    Docker(LoadedImage),
    /// The kind cluster with the image loaded, and the image's entrypoint.
    Kind(KindSession, Vec<String>),
}

/// Prepares what the driver needs before the first cluster: the image loaded (docker, kind)
/// and, for kind, the session, whose kubeconfig (the cluster's admin credentials) stays in
/// the run's private `work` directory, never in the report a workflow uploads.
pub(crate) fn prepare(
    driver: Driver,
    options: &Options,
    layout: &Path,
    bundle_dir: &Path,
    work: &Path,
) -> Result<Engine> {
    Ok(match driver {
        Driver::Runc => Engine::Runc(bundle_dir.to_path_buf()),
        Driver::Docker => Engine::Docker(LoadedImage::from_layout(layout, work)?),
        Driver::Kind => {
            // kind loads docker-archives: the layout is rewritten once, named as e2e names it.
            let name = engine::image_name(&crate::oci::layout_ref(layout)?.ref_name);
            let archive = work.join("image.docker.tar");
            crate::oci::layout_to_docker_archive(layout, &archive, &name, 0)?;
            let config = crate::oci::layout_config(layout)?;
            let entrypoint = config["config"]["Entrypoint"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_else(|| vec!["/docker-entrypoint.sh".to_string()]);
            let session =
                KindSession::start(&options.kind_cluster, &archive, &name, work, options.keep)?;
            Engine::Kind(session, entrypoint)
        }
    })
}

/// Returns the engine behind `driver` and its version for the report (`docker 20.10.24`,
/// `runc 1.1.5+ds1`, `kind v0.27.0`); None when it does not answer.
pub(crate) fn engine_version(driver: Driver) -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    let read = |c: xshell::Cmd| c.quiet().ignore_stderr().read().ok();
    let v = match driver {
        Driver::Docker => {
            let format = "{{.Server.Version}}";
            read(xshell::cmd!(sh, "docker version --format {format}"))?
        }
        Driver::Runc => read(xshell::cmd!(sh, "runc --version"))?
            .lines()
            .next()?
            .trim_start_matches("runc version ")
            .to_string(),
        Driver::Kind => read(xshell::cmd!(sh, "kind version"))?
            .split_whitespace()
            .nth(1)?
            .to_string(),
    };
    Some(format!("{} {}", flag(&driver), v.trim()))
}

/// Starts a cluster of `engine` for one allocator's run, in the run's `work` directory with
/// the containers' logs in `logs`.
pub(crate) fn start(
    engine: &Engine,
    options: &Options,
    allocator: Allocator,
    spec: &ClusterSpec,
    work: &Path,
    logs: &Path,
) -> Result<Box<dyn Cluster>> {
    Ok(match engine {
        Engine::Runc(bundle_dir) => Box::new(RuncCluster::start(bundle_dir, spec, work, logs)?),
        Engine::Docker(image) => Box::new(DockerCluster::start(
            &DockerOptions {
                image: image.name.clone(),
                network: options.docker_network.clone(),
                dumps: work.join("dumps"),
                logs: logs.to_path_buf(),
            },
            spec,
        )?),
        Engine::Kind(session, entrypoint) => Box::new(KindCluster::start(
            &KindOptions {
                cluster: session.cluster.clone(),
                kubeconfig: session.kubeconfig.clone(),
                image: session.image.clone(),
                entrypoint: entrypoint.clone(),
                namespace: format!("flink-jemalloc-e2e-{}", allocator.name()),
                allocator,
                keep: options.keep,
                logs: logs.to_path_buf(),
            },
            spec,
        )?),
    })
}
