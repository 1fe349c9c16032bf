//! Layers, reproducibly: a tar of a directory (sorted entries, parent directories, fixed
//! mtime, uid/gid 0, empty owner names), gzip with a pinned backend, and the layer as an
//! image refers to it.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::blob::Blob;
use super::media::OCI_LAYER_GZIP;
use crate::digest::Sha256Hex;

/// The version of [`layer_tar`] and [`gzip`]'s output: part of every cached layer's key, so
/// that a change of either makes the cached layers stale.
pub(crate) const LAYER_FORMAT: &str = "tar1-gzip-zlib-rs";

/// A built layer: the compressed blob and the digest of the uncompressed tar (`diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// A layer as an image refers to it: its blob's media type, digest and size, and the digest
/// of its uncompressed tar (the config's `diff_id`). It is cached beside the blob, so that a
/// warm build neither tars nor compresses again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LayerRef {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

impl LayerRef {
    pub(crate) fn of(layer: &Layer) -> LayerRef {
        LayerRef {
            media_type: layer.blob.media_type.clone(),
            digest: layer.blob.digest.clone(),
            size: layer.blob.data.len() as u64,
            diff_id: layer.diff_id.clone(),
        }
    }

    pub(crate) fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// Tars `src` as `dest_prefix/…` (e.g. `opt/jemalloc`), reproducibly: parents of the prefix
/// included, entries sorted by path, mtime `epoch`, uid/gid 0, no owner names, modes 0755
/// for directories and executables, 0644 for other files.
pub fn layer_tar(src: &Path, dest_prefix: &str, epoch: u64) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    collect(src, Path::new(""), &mut entries)?;
    entries.sort();
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    let prefix = dest_prefix.trim_matches('/');
    let mut acc = String::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        acc.push_str(part);
        acc.push('/');
        append(&mut tar, &acc, None, epoch)?;
    }
    for (rel, path) in entries {
        let name = if prefix.is_empty() {
            rel
        } else {
            format!("{prefix}/{rel}")
        };
        append(&mut tar, &name, Some(&path), epoch)?;
    }
    Ok(tar.into_inner()?)
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let dir = root.join(rel);
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let r = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            out.push((format!("{}/", r.display()), e.path()));
            collect(root, &r, out)?;
        } else {
            out.push((r.display().to_string(), e.path()));
        }
    }
    Ok(())
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    path: Option<&Path>,
    epoch: u64,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(epoch);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("")?;
    h.set_groupname("")?;
    let meta = match path {
        Some(p) => {
            Some(std::fs::symlink_metadata(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    match (&meta, path) {
        (None, _) => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, name, &[][..])?;
        }
        (Some(m), Some(_)) if m.is_dir() => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, name, &[][..])?;
        }
        (Some(m), Some(p)) if m.file_type().is_symlink() => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, name, std::fs::read_link(p)?)?;
        }
        (Some(m), Some(p)) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if m.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            let data = std::fs::read(p)?;
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, name, &data[..])?;
        }
        _ => unreachable!(),
    }
    Ok(())
}

/// Compresses `data` with gzip at the default level with flate2's zlib-rs backend (pure
/// Rust, zlib's algorithm, about twice as fast as miniz_oxide here; pinned in Cargo.lock, and
/// the golden-digest test notices a change). The gzip header carries no name and mtime 0.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

pub fn layer(tar: Vec<u8>) -> Layer {
    let diff_id = format!("sha256:{}", Sha256Hex::of_bytes(&tar));
    Layer {
        blob: Blob::new(OCI_LAYER_GZIP, gzip(&tar)),
        diff_id,
    }
}

/// Returns a tar of a directory tree with sorted entries and fixed metadata (an OCI layout as
/// one file).
pub(crate) fn tar_dir(dir: &Path, epoch: u64) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    collect(dir, Path::new(""), &mut entries)?;
    entries.sort();
    let mut tar = tar::Builder::new(Vec::new());
    for (rel, path) in entries {
        append(&mut tar, &rel, Some(&path), epoch)?;
    }
    Ok(tar.into_inner()?)
}
