//! The registry side of `publish`: each platform's image pushed by digest, the index over
//! several, the tag, and each image's SBOM beside it as an artifact whose subject it is.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::Path;

use super::sbom;
use crate::digest::Sha256Hex;
use crate::image;
use crate::image::lock::Lock;
use crate::oci::{self, Blob, BlobSource, LayoutBlobs, OCI_MANIFEST};
use crate::progress::{self, Step};
use crate::registry::{Reference, RegistryClient};

/// The OCI empty descriptor's media type and content (`{}`), the config of artifacts.
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// An image in the registry: its digest, manifest and tag.
pub(crate) struct PushedImage {
    pub digest: String,
    manifest: Vec<u8>,
    tag: String,
}

/// Pushes one platform's built image by digest (the blobs the registry lacks, then the
/// manifest); the tag is given after every platform's image is there.
pub(crate) fn image(
    client: &RegistryClient,
    target: &Reference,
    layout: &Path,
    one: &image::PlatformBuilt,
    tag: &str,
) -> Result<PushedImage> {
    let step = Step::start(format!(
        "pushing {}/{}@{} ({})",
        target.registry, target.repository, one.manifest_digest, one.platform
    ));
    let (manifest, _, blobs) = oci::layout_manifest(layout, &one.manifest_digest)?;
    let mut uploaded = 0;
    for d in &blobs {
        let data = std::fs::read(LayoutBlobs(layout).path_of(d)?)?;
        if client.push_blob(target, d, &data)? {
            uploaded += 1;
        }
    }
    let digest = client.put_manifest(target, &one.manifest_digest, &manifest, OCI_MANIFEST)?;
    if digest != one.manifest_digest {
        bail!("pushed {digest}, built {}", one.manifest_digest);
    }
    step.done(format!("{uploaded} of {} blobs uploaded", blobs.len()));
    Ok(PushedImage {
        digest,
        manifest,
        tag: tag.to_string(),
    })
}

/// Pushes the layout's image index `digest` (its images are there already) by digest, then
/// tags it.
pub(crate) fn index(
    client: &RegistryClient,
    target: &Reference,
    layout: &Path,
    digest: &str,
    tag: &str,
) -> Result<()> {
    let bytes = std::fs::read(LayoutBlobs(layout).path_of(digest)?)?;
    let pushed = client.put_manifest(target, digest, &bytes, oci::OCI_INDEX)?;
    if pushed != digest {
        bail!("pushed index {pushed}, built {digest}");
    }
    client.put_manifest(target, tag, &bytes, oci::OCI_INDEX)?;
    progress::note(format!("index {digest} tagged {tag}"));
    Ok(())
}

/// Makes the SBOM from the lock the image was built from, pushes it beside the image as an
/// artifact whose subject it is, and tags it `sha256-<hex>.sbom`; returns (digest, tag).
pub(crate) fn sbom(
    source_date_epoch: u64,
    client: &RegistryClient,
    target: &Reference,
    image: &PushedImage,
    lock: &Lock,
    jemalloc: &sbom::Jemalloc,
) -> Result<(String, String)> {
    let (digest, tag) = (&image.digest, &image.tag);
    let image_name = target
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&target.repository);
    let sbom_bytes = sbom::to_bytes(&sbom::Input {
        lock,
        jemalloc,
        image_digest: digest,
        image_name,
        tag,
        source_date_epoch,
    })?;
    let step = Step::start(format!("pushing the SBOM of {digest}"));
    let (sbom_manifest, sbom_blobs) = sbom_artifact(
        sbom_bytes,
        &Blob::new(OCI_MANIFEST, image.manifest.clone()).descriptor(),
    );
    for b in &sbom_blobs {
        client.push_blob(target, &b.digest, &b.data)?;
    }
    let sbom_digest = client.put_manifest(
        target,
        &sbom_manifest.digest,
        &sbom_manifest.data,
        OCI_MANIFEST,
    )?;
    let sbom_tag = sbom_tag(digest)?;
    client.put_manifest(target, &sbom_tag, &sbom_manifest.data, OCI_MANIFEST)?;
    step.done(format!("{sbom_digest}, tagged {sbom_tag}"));
    Ok((sbom_digest, sbom_tag))
}

/// Returns the cosign-style tag of an image's SBOM: `sha256-<hex>.sbom`.
pub(crate) fn sbom_tag(image_digest: &str) -> Result<String> {
    let hex = Sha256Hex::parse(image_digest)?;
    Ok(format!("sha256-{hex}.sbom"))
}

/// Wraps the SBOM as an OCI artifact: an image manifest with `artifactType`
/// `application/spdx+json`, the empty config `{}`, one layer (the SPDX JSON) and `subject`
/// = the image. Returns the manifest and the blobs it needs (config, layer).
pub(crate) fn sbom_artifact(sbom: Vec<u8>, subject: &Value) -> (Blob, Vec<Blob>) {
    let config = Blob::new(OCI_EMPTY, b"{}".to_vec());
    let layer = Blob::new(sbom::SPDX_MEDIA_TYPE, sbom);
    let mut layer_desc = layer.descriptor();
    layer_desc["annotations"] = json!({"org.opencontainers.image.title": "sbom.spdx.json"});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": sbom::SPDX_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer_desc],
        "subject": subject,
    });
    (
        Blob::new(OCI_MANIFEST, oci::canonical(&manifest)),
        vec![config, layer],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbom_artifact_points_at_the_image() {
        let image = Blob::new(OCI_MANIFEST, b"{\"x\":1}".to_vec());
        let (m, blobs) = sbom_artifact(
            b"{\"spdxVersion\":\"SPDX-2.3\"}".to_vec(),
            &image.descriptor(),
        );
        let v: Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(v["artifactType"], "application/spdx+json");
        assert_eq!(v["subject"]["digest"], image.digest.as_str());
        assert_eq!(v["config"]["mediaType"], OCI_EMPTY);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["layers"][0]["digest"], blobs[1].digest.as_str());
        assert_eq!(
            sbom_tag(&image.digest).unwrap(),
            format!("sha256-{}.sbom", &image.digest[7..])
        );
    }
}
