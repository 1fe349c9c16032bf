//! OCI images, reproducibly: blobs and canonical JSON (`blob`), media types (`media`),
//! layer tars and gzip (`layer`), the config and manifest (`config`), and the two on-disk
//! forms, an OCI image layout (`layout`) and a docker-archive (`docker_archive`); and here,
//! what `--image` may be, checked before any work and opened as a layout.

pub(crate) mod blob;
pub(crate) mod config;
pub(crate) mod docker_archive;
pub(crate) mod layer;
pub(crate) mod layout;
pub(crate) mod media;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub(crate) use blob::BlobSource;
pub use blob::{canonical, hex_of, Blob};
pub(crate) use config::annotations_json;
pub use config::manifest;
pub(crate) use config::{add_layer, config, ConfigChanges};
pub(crate) use docker_archive::docker_archive_dir_to_layout;
pub use docker_archive::layout_to_docker_archive;
pub(crate) use docker_archive::write_docker_archive;
pub use layer::{layer, layer_tar, Layer};
pub(crate) use layer::{tar_dir, LayerRef, LAYER_FORMAT};
pub use layout::{layout_config, layout_config_digest, layout_manifest, layout_ref, LayoutRef};
pub(crate) use layout::{verify_layout, write_layout, LayoutBlobs};
pub(crate) use media::{is_manifest_type, oci_layer_type, OCI_INDEX, OCI_LAYER_GZIP};
pub use media::{OCI_CONFIG, OCI_MANIFEST};

fn not_an_image(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is neither an OCI image layout (a directory with index.json) nor a docker-archive \
         (a .tar with manifest.json): pass what `cargo xtask image --output` wrote",
        path.display()
    )
}

/// Takes a quick look, before any work, at whether `path` can be an image [`open_image`]
/// opens: a directory with `index.json`, or a tarball holding `index.json` or `manifest.json`.
pub(crate) fn check_image(path: &Path) -> Result<()> {
    if path.is_dir() {
        return match path.join("index.json").is_file() {
            true => Ok(()),
            false => Err(not_an_image(path)),
        };
    }
    if !path.exists() {
        bail!(
            "{} does not exist: pass the OCI layout or tarball `cargo xtask image --output` wrote",
            path.display()
        );
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let found = crate::unpack::decompressed(file).ok().and_then(|r| {
        let mut tar = tar::Archive::new(r);
        let entries = tar.entries().ok()?;
        for e in entries {
            let e = e.ok()?;
            let name = e
                .path()
                .ok()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if name == "index.json" || name == "manifest.json" {
                return Some(());
            }
        }
        None
    });
    found.ok_or_else(|| not_an_image(path))
}

/// What `--image` may be: an OCI image layout directory, or a tarball of one (`image
/// --output x.tar`), or a docker-archive (`--format docker-archive`, `docker save`). Returns
/// the layout directory, extracting or converting a tarball into `work`, with every blob
/// checked against its digest.
pub(crate) fn open_image(path: &Path, work: &Path) -> Result<PathBuf> {
    check_image(path)?;
    let not_an_image = || not_an_image(path);
    let layout = if path.is_dir() {
        if !path.join("index.json").is_file() {
            return Err(not_an_image());
        }
        path.to_path_buf()
    } else if path.is_file() {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let extracted = work.join("image-archive");
        crate::unpack::unpack_fresh(
            crate::unpack::decompressed(file)?,
            &extracted,
            crate::unpack::AbsoluteLinks::Refuse,
        )
        .map_err(|_| not_an_image())?;
        if extracted.join("index.json").is_file() && extracted.join("oci-layout").is_file() {
            extracted
        } else if extracted.join("manifest.json").is_file() {
            let layout = work.join("image-layout");
            docker_archive_dir_to_layout(&extracted, &layout)
                .with_context(|| format!("reading the docker-archive {}", path.display()))?;
            layout
        } else {
            return Err(not_an_image());
        }
    } else {
        return Err(not_an_image());
    };
    verify_layout(&layout)?;
    native_layout(&layout, work)
}

/// Returns `layout`, or for a layout of several platforms (its `index.json` naming an image
/// index) a layout of this machine's platform's image alone, written into `work`
/// (hard-linked blobs): umoci, `docker load` and the drivers take one image.
fn native_layout(layout: &Path, work: &Path) -> Result<PathBuf> {
    let r = layout_ref(layout)?;
    if r.index_digest.is_none() {
        return Ok(layout.to_path_buf());
    }
    let (bytes, _, blobs) = layout_manifest(layout, &r.manifest_digest)?;
    let manifest = Blob::new(OCI_MANIFEST, bytes);
    let single = work.join("image-native");
    write_layout(
        &single,
        &manifest,
        &blobs,
        &LayoutBlobs(layout),
        &r.ref_name,
    )?;
    Ok(single)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib")).unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("lib/libjemalloc.so.2"), b"\x7fELF fake").unwrap();
        std::os::unix::fs::symlink("libjemalloc.so.2", d.path().join("lib/libjemalloc.so"))
            .unwrap();
        std::fs::write(d.path().join("bin/jeprof"), b"#!/usr/bin/env perl\n").unwrap();
        std::fs::set_permissions(
            d.path().join("bin/jeprof"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        d
    }

    #[test]
    fn layer_tar_is_sorted_rooted_and_normalised() {
        let d = tree();
        let tar = layer_tar(d.path(), "/opt/jemalloc", 0).unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 0)
            );
            assert_eq!(h.username().unwrap(), Some(""));
            names.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
        }
        assert_eq!(
            names,
            vec![
                ("opt/".to_string(), 0o755),
                ("opt/jemalloc/".to_string(), 0o755),
                ("opt/jemalloc/bin/".to_string(), 0o755),
                ("opt/jemalloc/bin/jeprof".to_string(), 0o755),
                ("opt/jemalloc/lib/".to_string(), 0o755),
                ("opt/jemalloc/lib/libjemalloc.so".to_string(), 0o777),
                ("opt/jemalloc/lib/libjemalloc.so.2".to_string(), 0o644),
            ]
        );
    }

    /// Golden digests: a change of tar layout, gzip backend or level shows up here.
    #[test]
    fn golden_layer_digest() {
        let d = tree();
        let l = layer(layer_tar(d.path(), "opt/jemalloc", 0).unwrap());
        let again = layer(layer_tar(tree().path(), "opt/jemalloc", 0).unwrap());
        assert_eq!(l.blob.digest, again.blob.digest);
        assert_eq!(
            l.diff_id,
            "sha256:c8feba5eca02a8e6d3eb417478e78b5b42ee2c60a26f44488e4a73690ca4ecbe"
        );
        // Changed once, on purpose, when the backend went from miniz_oxide to zlib-rs
        // (`LAYER_FORMAT`): the same tar (diff_id above), other compressed bytes. It was
        // sha256:640c4e92c7a737edb4da7d678906d5011b9a9b41e52620051d6d307f95f25aed.
        assert_eq!(
            l.blob.digest,
            "sha256:085a40af8c60bbc14b452dcf9e40a083c10c07d202b5599861dd80e26f196a6c"
        );
    }

    #[test]
    fn config_keeps_base_and_adds_ours() {
        let base = json!({
            "architecture": "amd64", "os": "linux", "created": "2020-05-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "FLINK_HOME=/opt/flink"], "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["help"], "User": ""},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:a"]},
            "history": [{"created_by": "base"}]
        });
        let l = Layer {
            blob: Blob::new(OCI_LAYER_GZIP, vec![1]),
            diff_id: "sha256:b".into(),
        };
        let c = ConfigChanges {
            path_dir: "/opt/jemalloc/bin".into(),
            env: vec![(
                "JEMALLOC_PATH".into(),
                "/opt/jemalloc/lib/libjemalloc.so.2".into(),
            )],
            labels: vec![(
                "org.opencontainers.image.base.digest".into(),
                "sha256:x".into(),
            )],
            history: "flink-jemalloc".into(),
            created: "1970-01-01T00:00:00Z".into(),
        };
        let cfg = config(&base, &l.diff_id, &c);
        assert_eq!(
            cfg["config"]["Entrypoint"],
            json!(["/docker-entrypoint.sh"])
        );
        assert_eq!(cfg["config"]["Cmd"], json!(["help"]));
        assert_eq!(
            cfg["config"]["Env"],
            json!([
                "PATH=/usr/local/bin:/usr/bin:/opt/jemalloc/bin",
                "FLINK_HOME=/opt/flink",
                "JEMALLOC_PATH=/opt/jemalloc/lib/libjemalloc.so.2"
            ])
        );
        assert_eq!(cfg["rootfs"]["diff_ids"], json!(["sha256:a", "sha256:b"]));
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.base.digest"],
            "sha256:x"
        );
        assert_eq!(cfg["history"][1]["created"], "1970-01-01T00:00:00Z");
        assert_eq!(cfg["created"], "1970-01-01T00:00:00Z");
        // Canonical: keys sorted, compact.
        let text = String::from_utf8(canonical(&cfg)).unwrap();
        assert!(
            text.starts_with(r#"{"architecture":"amd64","config":"#),
            "{text}"
        );
    }

    #[test]
    fn a_layout_of_two_platforms_opens_as_the_machines_image() {
        let d = tempfile::tempdir().unwrap();
        let stage = d.path().join("stage");
        std::fs::create_dir_all(stage.join("blobs/sha256")).unwrap();
        let put = |b: &Blob| {
            std::fs::write(stage.join("blobs/sha256").join(hex_of(&b.digest)), &b.data).unwrap()
        };
        let mut descs = Vec::new();
        let mut all = Vec::new();
        for arch in ["amd64", "arm64"] {
            let config = Blob::new(OCI_CONFIG, canonical(&json!({"architecture": arch})));
            let layer = Blob::new(OCI_LAYER_GZIP, arch.as_bytes().to_vec());
            let m = Blob::new(
                OCI_MANIFEST,
                canonical(&manifest(&config, &[layer.descriptor()], &[])),
            );
            for b in [&config, &layer, &m] {
                put(b);
                all.push(b.digest.clone());
            }
            let mut desc = m.descriptor();
            desc["platform"] = json!({"os": "linux", "architecture": arch});
            descs.push((arch, desc));
        }
        let index = Blob::new(
            OCI_INDEX,
            canonical(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": descs.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            })),
        );
        let layout = d.path().join("layout");
        write_layout(&layout, &index, &all, &LayoutBlobs(&stage), "t").unwrap();
        let native = crate::spec::native_platform().trim_start_matches("linux/");
        let want = descs.iter().find(|(a, _)| *a == native).unwrap().1["digest"].clone();

        let r = layout_ref(&layout).unwrap();
        assert_eq!(r.index_digest.as_deref(), Some(index.digest.as_str()));
        assert_eq!(r.manifest_digest, want.as_str().unwrap());
        // What the commands open is a layout of that image alone, tagged the same.
        let work = d.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let opened = open_image(&layout, &work).unwrap();
        assert_ne!(opened, layout);
        let one = layout_ref(&opened).unwrap();
        assert_eq!((one.ref_name.as_str(), one.index_digest), ("t", None));
        assert_eq!(one.manifest_digest, want.as_str().unwrap());
        verify_layout(&opened).unwrap();
        assert_eq!(
            layout_config(&opened).unwrap()["architecture"],
            native,
            "the machine's config"
        );
        // A single-image layout opens as it is.
        assert_eq!(open_image(&opened, &work).unwrap(), opened);
    }
}
