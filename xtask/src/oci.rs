//! Image pieces, reproducibly: a layer tar from a directory (sorted entries, parent
//! directories, fixed mtime, uid/gid 0, empty owner names), gzip with a pinned backend,
//! the config and manifest as canonical JSON (keys sorted, no whitespace), and the two
//! on-disk forms: an OCI image layout and a docker-archive tarball.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::digest::Sha256Hex;
use crate::registry::{DOCKER_MANIFEST, OCI_MANIFEST};

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The version of [`layer_tar`] and [`gzip`]'s output: part of every cached layer's key, so
/// that a change of either makes the cached layers stale.
pub const LAYER_FORMAT: &str = "tar1-gzip-zlib-rs";

/// Canonical JSON: serde_json's maps are sorted (no `preserve_order`), output is compact.
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

/// A built layer: the compressed blob and the digest of the uncompressed tar (`diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// A layer as an image refers to it: its blob's media type, digest and size, and the digest
/// of its uncompressed tar (the config's `diff_id`). Cached beside the blob, so that a warm
/// build neither tars nor compresses again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRef {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

impl LayerRef {
    pub fn of(layer: &Layer) -> LayerRef {
        LayerRef {
            media_type: layer.blob.media_type.clone(),
            digest: layer.blob.digest.clone(),
            size: layer.blob.data.len() as u64,
            diff_id: layer.diff_id.clone(),
        }
    }

    pub fn descriptor(&self) -> Value {
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

/// gzip at the default level with flate2's zlib-rs backend (pure Rust, zlib's algorithm,
/// about twice as fast as miniz_oxide here; pinned in Cargo.lock, and the golden-digest test
/// notices a change). The gzip header carries no name and mtime 0.
pub fn gzip(data: &[u8]) -> Vec<u8> {
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

/// The OCI media type for a base layer's (possibly Docker) media type.
pub fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        other => other,
    }
}

/// What the jemalloc layer changes in the image config.
#[derive(Debug, Clone)]
pub struct ConfigChanges {
    pub path_dir: String,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub history: String,
    pub created: String,
}

/// The base config with the layer's diff_id, env, labels and a history entry added; the
/// base's entrypoint, cmd, user and other env stay as they are.
pub fn config(base: &Value, diff_id: &str, c: &ConfigChanges) -> Value {
    let mut cfg = base.clone();
    cfg["created"] = json!(c.created);
    let inner = cfg
        .as_object_mut()
        .expect("image config is an object")
        .entry("config")
        .or_insert_with(|| json!({}));
    let mut env: Vec<String> = inner["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    fn set(env: &mut Vec<String>, k: &str, v: String) {
        let kv = format!("{k}={v}");
        match env.iter_mut().find(|e| e.split('=').next() == Some(k)) {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_string)
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    if !path.split(':').any(|p| p == c.path_dir) {
        set(&mut env, "PATH", format!("{path}:{}", c.path_dir));
    }
    for (k, v) in &c.env {
        set(&mut env, k, v.clone());
    }
    inner["Env"] = json!(env);
    let labels = inner
        .as_object_mut()
        .unwrap()
        .entry("Labels")
        .or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    for (k, v) in &c.labels {
        labels[k] = json!(v);
    }
    add_layer(&mut cfg, diff_id, &c.created, &c.history);
    cfg
}

/// Appends a layer's diff_id and a history entry to an image config.
pub fn add_layer(cfg: &mut Value, diff_id: &str, created: &str, created_by: &str) {
    match cfg["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(diff_id)),
        None => cfg["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]}),
    }
    let history = cfg
        .as_object_mut()
        .unwrap()
        .entry("history")
        .or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        h.push(json!({"created": created, "created_by": created_by}));
    }
}

/// An OCI image manifest over the base's layers plus ours.
pub fn manifest(config: &Blob, layers: &[Value], annotations: &[(String, String)]) -> Value {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers,
    });
    if !annotations.is_empty() {
        m["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    m
}

/// Where image blobs come from when writing outputs.
pub trait BlobSource {
    fn path_of(&self, digest: &str) -> Result<PathBuf>;
}

/// Writes an OCI image layout directory at `dest` (atomically: temp dir, then rename).
pub fn write_layout(
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
    let index =
        json!({"schemaVersion": 2, "mediaType": crate::registry::OCI_INDEX, "manifests": [desc]});
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

/// A tar of a directory tree with sorted entries and fixed metadata (an OCI layout as one file).
pub fn tar_dir(dir: &Path, epoch: u64) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    collect(dir, Path::new(""), &mut entries)?;
    entries.sort();
    let mut tar = tar::Builder::new(Vec::new());
    for (rel, path) in entries {
        append(&mut tar, &rel, Some(&path), epoch)?;
    }
    Ok(tar.into_inner()?)
}

/// A docker-archive (`docker load` format): `manifest.json`, the config as `<hex>.json`,
/// layers as `<hex>.tar.gz`, written as a tar with sorted entries.
pub fn write_docker_archive(
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

/// The blobs of an OCI image layout directory (`blobs/sha256/<hex>`).
pub struct LayoutBlobs<'a>(pub &'a Path);

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

/// The manifest `digest` of an OCI layout: its bytes (checked against the digest), parsed,
/// and the blobs it names, config first, then the layers.
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
}

/// Reads [`LayoutRef`] of `layout`, or says that it is not what `image --output` writes.
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
    Ok(LayoutRef {
        ref_name: ref_name.to_string(),
        manifest_digest: digest.to_string(),
    })
}

/// Every blob of the (first) image of `layout` (manifest, config, layers) checked against its
/// digest: a changed or damaged file is an error that names it.
pub fn verify_layout(layout: &Path) -> Result<()> {
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

fn not_an_image(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is neither an OCI image layout (a directory with index.json) nor a docker-archive \
         (a .tar with manifest.json): pass what `cargo xtask image --output` wrote",
        path.display()
    )
}

/// A quick look, before any work, at whether `path` can be an image [`open_image`] opens:
/// a directory with `index.json`, or a tarball holding `index.json` or `manifest.json`.
pub fn check_image(path: &Path) -> Result<()> {
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
pub fn open_image(path: &Path, work: &Path) -> Result<PathBuf> {
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
    Ok(layout)
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

/// An unpacked docker-archive (`manifest.json`, the config, the layers) as an OCI layout
/// tagged with its first `RepoTags` entry's tag.
fn docker_archive_dir_to_layout(dir: &Path, layout: &Path) -> Result<()> {
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
    let manifest = Blob::new(
        crate::registry::OCI_MANIFEST,
        canonical(&self::manifest(&config, &layers, &[])),
    );
    let tag = entry["RepoTags"][0]
        .as_str()
        .and_then(|t| t.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .unwrap_or_else(|| "latest".to_string());
    let digests: Vec<String> = files.iter().map(|(d, _)| d.clone()).collect();
    write_layout(layout, &manifest, &digests, &NamedFiles(files), &tag)
}

/// The config digest of the (first) image of `layout`: the id an engine gives the image.
pub fn layout_config_digest(layout: &Path) -> Result<String> {
    let digest = layout_ref(layout)?.manifest_digest;
    let (_, _, blobs) = layout_manifest(layout, &digest)?;
    Ok(blobs[0].clone())
}

/// The image config (`config.json` of the image spec) of the (first) image of `layout`.
pub fn layout_config(layout: &Path) -> Result<Value> {
    let path = LayoutBlobs(layout).path_of(&layout_config_digest(layout)?)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: config is not JSON", layout.display()))
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

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Docker v2 manifests are accepted as input; the output is always OCI.
pub fn is_manifest_type(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
