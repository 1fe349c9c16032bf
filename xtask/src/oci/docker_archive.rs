//! The docker-archive (`docker load`'s format): written from blobs, converted to and from an
//! OCI image layout.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use super::blob::{canonical, hex_of, Blob, BlobSource};
use super::config::manifest;
use super::layout::{layout_manifest, layout_ref, write_layout, LayoutBlobs};
use super::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use crate::digest::Sha256Hex;

/// Writes a docker-archive (`docker load` format): `manifest.json`, the config as
/// `<hex>.json`, layers as `<hex>.tar.gz`, as a tar with sorted entries.
pub(crate) fn write_docker_archive(
    dest: &Path,
    config: &Blob,
    layers: &[String],
    src: &dyn BlobSource,
    repo_tag: &str,
    epoch: u64,
) -> Result<()> {
    let config_name = format!("{}.json", hex_of(&config.digest));
    let layer_names: Vec<String> = layers
        .iter()
        .map(|d| format!("{}.tar.gz", hex_of(d)))
        .collect();
    let manifest = json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]);
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("manifest.json".into(), canonical(&manifest)),
        (config_name, config.data.clone()),
    ];
    for (d, name) in layers.iter().zip(&layer_names) {
        files.push((name.clone(), std::fs::read(src.path_of(d)?)?));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    let parent = dest
        .parent()
        .context("archive destination without parent")?;
    std::fs::create_dir_all(parent)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".archive-")
        .tempfile_in(parent)?;
    {
        let mut tar = tar::Builder::new(tmp.as_file_mut());
        for (name, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(epoch);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, &data[..])?;
        }
        tar.finish()?;
    }
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Blobs that are files under other names (an unpacked docker-archive's), by digest.
struct NamedFiles(Vec<(String, PathBuf)>);

impl BlobSource for NamedFiles {
    fn path_of(&self, digest: &str) -> Result<PathBuf> {
        self.0
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("blob {digest} is not in the archive"))
    }
}

/// Writes an unpacked docker-archive (`manifest.json`, the config, the layers) as an OCI
/// layout tagged with its first `RepoTags` entry's tag.
pub(crate) fn docker_archive_dir_to_layout(dir: &Path, layout: &Path) -> Result<()> {
    let m: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
        .context("manifest.json is not JSON")?;
    let entry = &m[0];
    let file = |v: &Value| -> Result<PathBuf> {
        let rel = v
            .as_str()
            .context("manifest.json names a file that is not a string")?;
        let p = dir.join(rel);
        if !p.is_file() {
            bail!("manifest.json names {rel}, which the archive lacks");
        }
        Ok(p)
    };
    let config_path = file(&entry["Config"])?;
    let config = Blob::new(OCI_CONFIG, std::fs::read(&config_path)?);
    let mut files = vec![(config.digest.clone(), config_path)];
    let mut layers = Vec::new();
    for l in entry["Layers"]
        .as_array()
        .context("manifest.json without Layers")?
    {
        let path = file(l)?;
        let mut magic = [0u8; 2];
        std::io::Read::read(&mut std::fs::File::open(&path)?, &mut magic)?;
        let media_type = if magic == [0x1f, 0x8b] {
            OCI_LAYER_GZIP
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let digest = format!("sha256:{}", Sha256Hex::of_file(&path)?);
        let size = std::fs::metadata(&path)?.len();
        layers.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
        files.push((digest, path));
    }
    let manifest = Blob::new(OCI_MANIFEST, canonical(&manifest(&config, &layers, &[])));
    let tag = entry["RepoTags"][0]
        .as_str()
        .and_then(|t| t.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .unwrap_or_else(|| "latest".to_string());
    let digests: Vec<String> = files.iter().map(|(d, _)| d.clone()).collect();
    write_layout(layout, &manifest, &digests, &NamedFiles(files), &tag)
}

/// Rewrites the (first) image of an OCI layout as a docker-archive (for `kind load
/// image-archive` or `docker load`), tagged `repo_tag`; returns the config digest (the
/// image id an engine gives it).
pub fn layout_to_docker_archive(
    layout: &Path,
    dest: &Path,
    repo_tag: &str,
    epoch: u64,
) -> Result<String> {
    let src = LayoutBlobs(layout);
    let digest = layout_ref(layout)?.manifest_digest;
    let (_, manifest, blobs) = layout_manifest(layout, &digest)?;
    let config = Blob {
        media_type: manifest["config"]["mediaType"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        data: std::fs::read(src.path_of(&blobs[0])?)?,
        digest: blobs[0].clone(),
    };
    write_docker_archive(dest, &config, &blobs[1..], &src, repo_tag, epoch)?;
    Ok(config.digest)
}
