//! The output stage of `image`: the assembled image is written as an OCI layout directory, an OCI
//! or docker-archive tarball, pushed to a registry (by blob, the ones it lacks), and loaded into a
//! Docker engine or a kind cluster's node (`--load`).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use super::cache::CacheBlobs;
use super::config::Assembled;
use super::context::RunContext;
use super::request::{Format, LoadTarget};
use crate::oci::{self, BlobSource};
use crate::progress::{self, Step};
use crate::registry::Reference;

/// Where the image went.
pub(crate) struct Outputs {
    pub path: PathBuf,
    /// `registry/repository@sha256:…` of a push.
    pub pushed: Option<String>,
}

/// Stage 6: writes the files, then does the push and the load asked for.
pub(crate) fn write(run: &RunContext, image: &Assembled) -> Result<Outputs> {
    let path = run.req.output.clone().unwrap_or_else(|| {
        run.cache.dir.join("images").join(if run.jspec.default {
            format!("flink-{}-jemalloc", run.spec.name)
        } else {
            format!("flink-{}-jemalloc-{}", run.spec.name, run.jspec.version)
        })
    });
    write_files(run, image, &path)?;
    progress::note(format!(
        "image {} written to {}",
        image.manifest.digest,
        path.display()
    ));
    let pushed = match &run.req.push {
        Some(target) => Some(push(run, image, &target.parse()?)?),
        None => None,
    };
    if let Some(target) = &run.req.load {
        load(run, image, target, &path)?;
    }
    Ok(Outputs { path, pushed })
}

/// Writes an OCI layout directory, or a `.tar` of one (`--format oci`) or a docker-archive.
fn write_files(run: &RunContext, image: &Assembled, path: &Path) -> Result<()> {
    let src = CacheBlobs(&run.cache);
    let epoch = run.req.source_date_epoch;
    if path.extension().is_none_or(|e| e != "tar") {
        return oci::write_layout(path, &image.manifest, &image.blobs, &src, &image.tag);
    }
    if run.req.format == Format::DockerArchive {
        return oci::write_docker_archive(
            path,
            &image.config,
            &image.blobs[1..],
            &src,
            &crate::docker::image_name(&image.tag),
            epoch,
        );
    }
    let parent = path.parent().context("output without parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".oci-")
        .tempdir_in(parent)?;
    let layout = tmp.path().join("layout");
    oci::write_layout(&layout, &image.manifest, &image.blobs, &src, &image.tag)?;
    let tar = oci::tar_dir(&layout, epoch)?;
    let t = tempfile::Builder::new()
        .prefix(".oci-tar-")
        .tempfile_in(parent)?;
    std::fs::write(t.path(), tar)?;
    t.persist(path)?;
    Ok(())
}

/// `--push`: pushes the blobs the registry lacks, then the manifest; returns `repo@digest`.
fn push(run: &RunContext, image: &Assembled, target: &Reference) -> Result<String> {
    let src = CacheBlobs(&run.cache);
    let step = Step::start(format!("pushing to {target}"));
    let mut uploaded = 0;
    for d in &image.blobs {
        let data = std::fs::read(src.path_of(d)?)?;
        if run.client.push_blob(target, d, &data)? {
            uploaded += 1;
        }
    }
    let digest = run.client.put_manifest(
        target,
        target.reference(),
        &image.manifest.data,
        crate::oci::OCI_MANIFEST,
    )?;
    step.done(format!(
        "{digest}; {uploaded} of {} blobs uploaded, the rest were there",
        image.blobs.len()
    ));
    Ok(format!(
        "{}/{}@{digest}",
        target.registry, target.repository
    ))
}

/// `--load`: writes the image as a docker-archive named [`crate::docker::image_name`] of its tag
/// and hands it to `docker load` or `kind load image-archive`; the archive is removed afterwards.
fn load(run: &RunContext, image: &Assembled, target: &LoadTarget, output: &Path) -> Result<()> {
    target.require()?;
    let name = crate::docker::image_name(&image.tag);
    let dir = output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new().prefix(".load-").tempdir_in(dir)?;
    let archive = tmp.path().join("image.docker.tar");
    oci::write_docker_archive(
        &archive,
        &image.config,
        &image.blobs[1..],
        &CacheBlobs(&run.cache),
        &name,
        run.req.source_date_epoch,
    )?;
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
}
