//! Where things live: the project root and the cache directories under it.

use std::path::{Path, PathBuf};

/// Returns the repository root (`images/`, `patches/`, `ci/`, `e2e/`): `$FLINK_JEMALLOC_ROOT` when
/// set (a checkout elsewhere, or a copy another user can read), else the xtask crate's manifest
/// directory's parent (as rust-analyzer does).
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLINK_JEMALLOC_ROOT").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}

/// Returns the default cache and work area: `target/flink-jemalloc` under the root, or
/// `$FLINK_JEMALLOC_CACHE` when set.
pub(crate) fn default_cache_dir() -> PathBuf {
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

    /// Returns the path of a content-addressed blob: `blobs/sha256/<hex>`.
    pub fn blob(&self, sha256_hex: &str) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(sha256_hex)
    }

    /// Returns the directory of unpacked sources, keyed by the tarball digest.
    pub(crate) fn source_dir(&self, sha256_hex: &str) -> PathBuf {
        self.dir.join("src").join(&sha256_hex[..16])
    }

    pub(crate) fn sysroot_dir(&self, suite: &str, key: &str) -> PathBuf {
        self.dir
            .join("sysroot")
            .join(format!("{suite}-{}", &key[..16]))
    }

    pub(crate) fn build_dir(&self, key: &str) -> PathBuf {
        self.dir.join("build").join(&key[..16])
    }

    /// Returns `dist/jemalloc-<version>-<suite>` (`-<arch>` after it for other than amd64).
    pub(crate) fn dist_dir(&self, version: &str, suite: &str, arch: &str) -> PathBuf {
        let arch = if arch == "amd64" {
            String::new()
        } else {
            format!("-{arch}")
        };
        self.dir
            .join("dist")
            .join(format!("jemalloc-{version}-{suite}{arch}"))
    }

    /// Holds an exclusive lock on the cache entry `name` of `kind` (`blob`, `src`,
    /// `sysroot`, `build`, `tools`), a file under `locks/`, until the guard is dropped. A run
    /// that finds the entry locked says so and waits: it then finds the other run's work
    /// done and reuses it. The lock is the kernel's (flock): a process that dies, even by
    /// SIGKILL, releases it, so a lock left behind never blocks. The file is removed when
    /// the lock is released; a waiter that finds its file removed meanwhile locks afresh.
    pub(crate) fn lock(&self, kind: &str, name: &str) -> anyhow::Result<EntryLock> {
        use anyhow::Context;
        use std::os::unix::fs::MetadataExt;
        let dir = self.dir.join("locks");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{kind}-{safe}.lock"));
        let mut said = false;
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !said {
                        crate::progress::note(format!(
                            "another run is working on {kind} {name} in this cache; waiting for it"
                        ));
                        said = true;
                    }
                    file.lock()
                        .with_context(|| format!("locking {}", path.display()))?;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()))
                }
            }
            // The holder before us may have removed the file we waited on.
            let same = match (std::fs::metadata(&path), file.metadata()) {
                (Ok(p), Ok(f)) => p.ino() == f.ino() && p.dev() == f.dev(),
                _ => false,
            };
            if same {
                return Ok(EntryLock { path, _file: file });
            }
        }
    }
}

/// A held [`Cache::lock`]; dropping it removes the lock file and releases the lock.
pub(crate) struct EntryLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes a work directory (`<prefix>XXXXXX`) beside `out`, in its parent (made if missing;
/// `.` for a bare name), so that what is made there can be renamed into `out` whole. It is
/// removed when dropped, and when the process is interrupted while the guard lives.
pub(crate) fn work_dir_beside(
    out: &Path,
    prefix: &str,
) -> anyhow::Result<(tempfile::TempDir, crate::teardown::Guard)> {
    use anyhow::Context;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("a work directory in {}", parent.display()))?;
    let guard = crate::teardown::remove_on_interrupt(work.path());
    Ok((work, guard))
}
