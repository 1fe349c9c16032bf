//! The content-addressed cache as an image's store: blobs are put in and read back by
//! digest, and layers are remembered by what determines their bytes.

use anyhow::{bail, Result};
use std::path::PathBuf;

use crate::digest::Sha256Hex;
use crate::oci::{self, Blob, BlobSource};
use crate::project::Cache;

/// The cache as the source of an image's blobs.
pub(crate) struct CacheBlobs<'a>(pub &'a Cache);

impl BlobSource for CacheBlobs<'_> {
    fn path_of(&self, digest: &str) -> Result<PathBuf> {
        let p = self.0.blob(oci::hex_of(digest));
        if !p.is_file() {
            bail!("blob {digest} is not in the cache {}", self.0.dir.display());
        }
        Ok(p)
    }
}

/// Puts bytes into the content-addressed cache and returns the blob.
pub(crate) fn cache_blob(cache: &Cache, media_type: &str, data: Vec<u8>) -> Result<Blob> {
    let blob = Blob::new(media_type, data);
    let hex = Sha256Hex::parse(&blob.digest)?;
    let _lock = cache.lock("blob", hex.as_str())?;
    if !cache.blob(hex.as_str()).is_file() {
        crate::download::save_verified(cache, &hex, &blob.digest, |out| {
            crate::download::copy_hashing(
                &blob.data[..],
                out,
                Some(blob.data.len() as u64),
                &blob.digest,
            )
        })?;
    }
    Ok(blob)
}

/// Returns the layer `name` made by `make`, cached by `key` (what determines its bytes): it keeps a
/// record `layers/<name>-<key>.json` beside the blob, so that a warm build reads a few bytes
/// instead of tarring and compressing again. A record whose blob is gone is made afresh.
pub(crate) fn cached_layer(
    cache: &Cache,
    name: &str,
    key: &Sha256Hex,
    make: impl FnOnce() -> Result<oci::Layer>,
) -> Result<(oci::LayerRef, bool)> {
    let dir = cache.dir.join("layers");
    let record = dir.join(format!("{name}-{}.json", &key.as_str()[..16]));
    let _lock = cache.lock("layer", &format!("{name}-{}", key.as_str()))?;
    if let Some(r) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<oci::LayerRef>(&b).ok())
    {
        let blob = cache.blob(oci::hex_of(&r.digest));
        if std::fs::metadata(&blob).is_ok_and(|m| m.len() == r.size) {
            return Ok((r, true));
        }
    }
    let layer = make()?;
    cache_blob(cache, &layer.blob.media_type, layer.blob.data.clone())?;
    let r = oci::LayerRef::of(&layer);
    std::fs::create_dir_all(&dir)?;
    let tmp = tempfile::NamedTempFile::new_in(&dir)?;
    std::fs::write(tmp.path(), serde_json::to_vec(&r)?)?;
    tmp.persist(&record)?;
    Ok((r, false))
}

/// Returns the cached blob of `digest`, if the cache holds it intact.
pub(crate) fn read_cached(cache: &Cache, digest: &str) -> Option<Vec<u8>> {
    let p = cache.blob(oci::hex_of(digest));
    let data = std::fs::read(p).ok()?;
    (format!("sha256:{}", Sha256Hex::of_bytes(&data)) == digest).then_some(data)
}
