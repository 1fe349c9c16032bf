//! The OCI image layout directory: written atomically from a blob source, and read back
//! (its reference, manifest, config), every blob verified.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use super::blob::{canonical, hex_of, Blob, BlobSource};
use super::media::OCI_INDEX;
use crate::digest::Sha256Hex;

/// Writes an OCI image layout directory at `dest` (atomically: temp dir, then rename).
pub(crate) fn write_layout(
    dest: &Path,
    manifest: &Blob,
    blobs: &[String],
    src: &dyn BlobSource,
    ref_name: &str,
) -> Result<()> {
    let parent = dest.parent().context("layout destination without parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".layout-")
        .tempdir_in(parent)?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(
        dir.join("oci-layout"),
        canonical(&json!({"imageLayoutVersion": "1.0.0"})),
    )?;
    let mut desc = manifest.descriptor();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]});
    std::fs::write(dir.join("index.json"), canonical(&index))?;
    std::fs::write(
        dir.join("blobs/sha256").join(hex_of(&manifest.digest)),
        &manifest.data,
    )?;
    for d in blobs {
        let to = dir.join("blobs/sha256").join(hex_of(d));
        if !to.exists() {
            let from = src.path_of(d)?;
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).with_context(|| format!("copying blob {d}"))?;
            }
        }
    }
    crate::unpack::replace_dir(tmp.keep(), dest)
}

/// The blobs of an OCI image layout directory (`blobs/sha256/<hex>`).
pub(crate) struct LayoutBlobs<'a>(pub &'a Path);

impl BlobSource for LayoutBlobs<'_> {
    fn path_of(&self, digest: &str) -> Result<PathBuf> {
        let p = self
            .0
            .join("blobs/sha256")
            .join(Sha256Hex::parse(digest)?.as_str());
        if !p.is_file() {
            bail!(
                "blob {digest} is missing from the layout {}",
                self.0.display()
            );
        }
        Ok(p)
    }
}

/// Reads the manifest `digest` of an OCI layout: returns its bytes (checked against the
/// digest), the parsed manifest, and the blobs it names, config first, then the layers.
pub fn layout_manifest(layout: &Path, digest: &str) -> Result<(Vec<u8>, Value, Vec<String>)> {
    let bytes = std::fs::read(LayoutBlobs(layout).path_of(digest)?)?;
    if format!("sha256:{}", Sha256Hex::of_bytes(&bytes)) != digest {
        bail!(
            "{}: manifest {digest} does not match its digest",
            layout.display()
        );
    }
    let m: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: manifest {digest} is not JSON", layout.display()))?;
    let mut blobs = vec![m["config"]["digest"]
        .as_str()
        .context("manifest without config")?
        .to_string()];
    for l in m["layers"].as_array().context("manifest without layers")? {
        blobs.push(
            l["digest"]
                .as_str()
                .context("layer without digest")?
                .to_string(),
        );
    }
    Ok((bytes, m, blobs))
}

/// The (first) image of an OCI layout: its `org.opencontainers.image.ref.name` and its
/// manifest digest, from `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    pub ref_name: String,
    pub manifest_digest: String,
    /// The image index `index.json` names, for a layout of several platforms (the manifest
    /// is then this machine's platform's image in it).
    pub index_digest: Option<String>,
}

/// Reads [`LayoutRef`] of `layout`, or says that it is not what `image --output` writes. A
/// layout of several platforms (`index.json` naming an image index) gives the image of this
/// machine's platform.
pub fn layout_ref(layout: &Path) -> Result<LayoutRef> {
    let index_path = layout.join("index.json");
    let bytes = std::fs::read(&index_path).with_context(|| {
        format!(
            "{} is not an OCI layout (no index.json): pass what `cargo xtask image --output` wrote",
            layout.display()
        )
    })?;
    let index: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", index_path.display()))?;
    let first = &index["manifests"][0];
    let ref_name = first["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .with_context(|| {
            format!(
                "{} names no image (org.opencontainers.image.ref.name)",
                index_path.display()
            )
        })?;
    let digest = first["digest"]
        .as_str()
        .with_context(|| format!("{} names no manifest", index_path.display()))?;
    let (manifest_digest, index_digest) = if first["mediaType"] == OCI_INDEX {
        (native_image(layout, digest)?, Some(digest.to_string()))
    } else {
        (digest.to_string(), None)
    };
    Ok(LayoutRef {
        ref_name: ref_name.to_string(),
        manifest_digest,
        index_digest,
    })
}

/// Returns the digest of this machine's platform's image (linux/amd64 on x86-64,
/// linux/arm64 on aarch64) in the layout's image index `digest`.
fn native_image(layout: &Path, digest: &str) -> Result<String> {
    let bytes = std::fs::read(LayoutBlobs(layout).path_of(digest)?)?;
    let index: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: index {digest} is not JSON", layout.display()))?;
    let arch = crate::spec::native_platform().trim_start_matches("linux/");
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let found = manifests
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch);
    match found.and_then(|m| m["digest"].as_str()) {
        Some(d) => Ok(d.to_string()),
        None => bail!(
            "{}: the index has no linux/{arch} image, this machine's (it has: {}); build it \
             with `cargo xtask image --platform linux/{arch}`",
            layout.display(),
            manifests
                .iter()
                .map(|m| format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap_or("?"),
                    m["platform"]["architecture"].as_str().unwrap_or("?")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Checks every blob of the (first) image of `layout` (manifest, config, layers) against its
/// digest: a changed or damaged file is an error that names it.
pub(crate) fn verify_layout(layout: &Path) -> Result<()> {
    let digest = layout_ref(layout)?.manifest_digest;
    let (_, _, blobs) = layout_manifest(layout, &digest)?;
    for b in blobs {
        let path = LayoutBlobs(layout).path_of(&b)?;
        let actual = format!("sha256:{}", Sha256Hex::of_file(&path)?);
        if actual != b {
            bail!(
                "{}: blob {b} does not match its digest (it is {actual}: the file was changed or \
                 damaged); write the image again with `cargo xtask image --output`",
                layout.display()
            );
        }
    }
    Ok(())
}

/// Returns the config digest of the (first) image of `layout`: the id an engine gives the
/// image.
pub fn layout_config_digest(layout: &Path) -> Result<String> {
    let digest = layout_ref(layout)?.manifest_digest;
    let (_, _, blobs) = layout_manifest(layout, &digest)?;
    Ok(blobs[0].clone())
}

/// Returns the image config (`config.json` of the image spec) of the (first) image of
/// `layout`.
pub fn layout_config(layout: &Path) -> Result<Value> {
    let path = LayoutBlobs(layout).path_of(&layout_config_digest(layout)?)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: config is not JSON", layout.display()))
}
