//! Blobs: bytes with their media type and digest, canonical JSON, and where a writer finds
//! the blobs it copies (`BlobSource`).

use anyhow::Result;
use serde_json::{json, Value};
use std::path::PathBuf;

use crate::digest::Sha256Hex;

/// Returns canonical JSON: serde_json's maps are sorted (no `preserve_order`), and the
/// output is compact.
pub fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values always serialize")
}

/// A blob with its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        let digest = format!("sha256:{}", Sha256Hex::of_bytes(&data));
        Blob {
            media_type: media_type.to_string(),
            data,
            digest,
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// Where image blobs come from when writing outputs.
pub(crate) trait BlobSource {
    fn path_of(&self, digest: &str) -> Result<PathBuf>;
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}
