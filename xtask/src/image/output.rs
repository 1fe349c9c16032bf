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
    let path = run
        .req
        .output
        .clone()
        .unwrap_or_else(|| default_path(run, true));
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

/// Returns `<cache>/images/flink-<spec>-jemalloc`, `-<release>` after it for a jemalloc
/// release other than the default and, `with_platform`, `-<arch>` for a platform other than
/// linux/amd64 (an index's layout has no platform in its name).
pub(crate) fn default_path(run: &RunContext, with_platform: bool) -> PathBuf {
    let release = if run.jspec.default {
        String::new()
    } else {
        format!("-{}", run.jspec.version)
    };
    let platform = if with_platform {
        super::context::platform_suffix(&run.platform_name, &run.platform)
    } else {
        String::new()
    };
    run.cache.dir.join("images").join(format!(
        "flink-{}-jemalloc{release}{platform}",
        run.spec.name
    ))
}

/// Writes an OCI layout directory, or a `.tar` of one (`--format oci`) or a docker-archive.
fn write_files(run: &RunContext, image: &Assembled, path: &Path) -> Result<()> {
    if run.req.format == Format::DockerArchive && path.extension().is_some_and(|e| e == "tar") {
        return oci::write_docker_archive(
            path,
            &image.config,
            &image.blobs[1..],
            &CacheBlobs(&run.cache),
            &crate::docker::image_name(&image.tag),
            run.req.source_date_epoch,
        );
    }
    write_oci(run, &image.manifest, &image.blobs, &image.tag, path)
}

/// Writes the OCI layout of `top` (an image's manifest, or an index over several) with
/// `blobs` (every blob below it) as a directory, or as a `.tar` of one.
pub(crate) fn write_oci(
    run: &RunContext,
    top: &oci::Blob,
    blobs: &[String],
    tag: &str,
    path: &Path,
) -> Result<()> {
    let src = CacheBlobs(&run.cache);
    let epoch = run.req.source_date_epoch;
    if path.extension().is_none_or(|e| e != "tar") {
        return oci::write_layout(path, top, blobs, &src, tag);
    }
    let parent = path.parent().context("output without parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".oci-")
        .tempdir_in(parent)?;
    let layout = tmp.path().join("layout");
    oci::write_layout(&layout, top, blobs, &src, tag)?;
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
    let step = Step::start(format!("pushing to {target}"));
    let (digest, uploaded) =
        push_image(&run.client, &run.cache, image, target, target.reference())?;
    step.done(format!(
        "{digest}; {uploaded} of {} blobs uploaded, the rest were there",
        image.blobs.len()
    ));
    Ok(format!(
        "{}/{}@{digest}",
        target.registry, target.repository
    ))
}

/// Pushes the blobs of `image` the registry lacks, then its manifest as `reference` (a tag,
/// or its digest for an image of an index); returns the manifest's digest and how many
/// blobs were uploaded.
pub(crate) fn push_image(
    client: &crate::registry::RegistryClient,
    cache: &crate::project::Cache,
    image: &Assembled,
    target: &Reference,
    reference: &str,
) -> Result<(String, usize)> {
    let src = CacheBlobs(cache);
    let mut uploaded = 0;
    for d in &image.blobs {
        let data = std::fs::read(src.path_of(d)?)?;
        if client.push_blob(target, d, &data)? {
            uploaded += 1;
        }
    }
    let digest = client.put_manifest(
        target,
        reference,
        &image.manifest.data,
        crate::oci::OCI_MANIFEST,
    )?;
    Ok((digest, uploaded))
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
