//! Where things live: the project root and the cache directories under it.

use std::path::{Path, PathBuf};

/// The repository root (`images/`, `patches/`, `ci/`, `e2e/`): `$FLINK_JEMALLOC_ROOT` when
/// set (a checkout elsewhere, or a copy another user can read), else the xtask crate's
/// manifest directory's parent (as rust-analyzer does).
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLINK_JEMALLOC_ROOT").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}

/// Default cache and work area: `target/flink-jemalloc` under the root, or
/// `$FLINK_JEMALLOC_CACHE` when set.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("FLINK_JEMALLOC_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root().join("target").join("flink-jemalloc"),
    }
}

/// The directories of one cache area.
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// Content-addressed blobs: `blobs/sha256/<hex>`.
    pub fn blob(&self, sha256_hex: &str) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(sha256_hex)
    }

    /// Unpacked sources, keyed by the tarball digest.
    pub fn source_dir(&self, sha256_hex: &str) -> PathBuf {
        self.dir.join("src").join(&sha256_hex[..16])
    }

    pub fn sysroot_dir(&self, suite: &str, key: &str) -> PathBuf {
        self.dir
            .join("sysroot")
            .join(format!("{suite}-{}", &key[..16]))
    }

    pub fn build_dir(&self, key: &str) -> PathBuf {
        self.dir.join("build").join(&key[..16])
    }

    pub fn dist_dir(&self, version: &str, suite: &str) -> PathBuf {
        self.dir
            .join("dist")
            .join(format!("jemalloc-{version}-{suite}"))
    }
}
