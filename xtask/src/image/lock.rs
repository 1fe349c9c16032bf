//! The image lock (`images/flink-<version>.lock`), like Cargo.lock, records every input the image
//! is made from: it is resolved once (with the network), committed, then reused. `--locked` refuses
//! to build when it is missing or when the request differs from it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::build::sysroot::Pinned;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    pub flink: String,
    /// The platform, for one other than linux/amd64 (`linux/arm64`); absent means amd64, so
    /// the amd64 locks read as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub source_date_epoch: u64,
    pub base: BaseLock,
    pub jemalloc: JemallocLock,
    pub sysroot: SysrootLock,
    /// jeprof's tools (binutils, graphviz, perl, file and what they need) not in the base.
    #[serde(default)]
    pub tools: Vec<DebPin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BaseLock {
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub manifest_digest: String,
    pub os: String,
    pub suite: String,
    pub libc6: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JemallocLock {
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SysrootLock {
    pub mirror: String,
    pub packages: Vec<Pinned>,
}

const HEADER: &str =
    "# Written by `cargo xtask image`: the resolved inputs of this image. Commit it;\n\
# `--locked` refuses to build when it is missing or would change.\n";

impl Lock {
    pub fn read(path: &Path) -> Result<Option<Lock>> {
        match std::fs::read_to_string(path) {
            Ok(text) => match toml::from_str(&text) {
                Ok(lock) => Ok(Some(lock)),
                Err(e) => {
                    let line = e
                        .span()
                        .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                        .unwrap_or(1);
                    bail!(
                        "{}:{line}: not a lock this tool reads ({}): undo the edit, or delete \
                         the file and run `cargo xtask lock` to resolve it afresh",
                        path.display(),
                        e.message().trim().replace('\n', "; ")
                    )
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn to_text(&self) -> Result<String> {
        Ok(format!("{HEADER}\n{}", toml::to_string_pretty(self)?))
    }

    /// Writes atomically (temporary file, rename).
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let dir = path.parent().context("lock path without parent")?;
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new().prefix(".lock-").tempfile_in(dir)?;
        std::fs::write(tmp.path(), self.to_text()?)?;
        tmp.persist(path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// What a build asks for, compared with a lock's request fields.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub base: &'a str,
    pub jemalloc_url: &'a str,
    pub jemalloc_sha256: &'a str,
    pub mirror: Option<&'a str>,
    pub source_date_epoch: u64,
    pub platform: &'a str,
}

/// Returns the ways `lock` does not answer `req` (empty when the lock can be used as it is).
pub(crate) fn differences(lock: &Lock, req: &Request) -> Vec<String> {
    let mut d = Vec::new();
    if lock.base.reference != req.base {
        d.push(format!(
            "base {} (locked: {})",
            req.base, lock.base.reference
        ));
    }
    if lock.jemalloc.url != req.jemalloc_url || lock.jemalloc.sha256 != req.jemalloc_sha256 {
        d.push(format!(
            "jemalloc source {} sha256 {} (locked: {} {})",
            req.jemalloc_url, req.jemalloc_sha256, lock.jemalloc.url, lock.jemalloc.sha256
        ));
    }
    if let Some(m) = req.mirror {
        if m.trim_end_matches('/') != lock.sysroot.mirror.trim_end_matches('/') {
            d.push(format!(
                "Debian mirror {m} (locked: {})",
                lock.sysroot.mirror
            ));
        }
    }
    let locked = lock
        .platform
        .as_deref()
        .unwrap_or(crate::spec::DEFAULT_PLATFORM);
    if locked != req.platform {
        d.push(format!("platform {} (locked: {locked})", req.platform));
    }
    if lock.source_date_epoch != req.source_date_epoch {
        d.push(format!(
            "SOURCE_DATE_EPOCH {} (locked: {})",
            req.source_date_epoch, lock.source_date_epoch
        ));
    }
    d
}

/// `--locked` with no usable lock is an error naming what would change.
pub(crate) fn require(path: &Path, lock: Option<&Lock>, req: &Request) -> Result<()> {
    match lock {
        None => bail!(
            "--locked: {} does not exist; run once without --locked (with network) to create it",
            path.display()
        ),
        Some(l) => {
            let d = differences(l, req);
            if !d.is_empty() {
                bail!(
                    "--locked: {} would change:\n  {}",
                    path.display(),
                    d.join("\n  ")
                );
            }
            Ok(())
        }
    }
}

/// One `.deb` of the tools layer, as the lock records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebPin {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub multi_arch: Option<String>,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// `<mirror> <suite>/<component>` the package came from.
    pub repository: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> Lock {
        Lock {
            version: 1,
            flink: "1.10.1".into(),
            platform: None,
            source_date_epoch: 0,
            base: BaseLock {
                reference: "docker.io/library/flink:1.10.1-scala_2.12".into(),
                index_digest: None,
                manifest_digest: format!("sha256:{}", "a".repeat(64)),
                os: "debian".into(),
                suite: "buster".into(),
                libc6: "2.28-10".into(),
            },
            jemalloc: JemallocLock {
                url: "https://x/jemalloc-5.2.1.tar.bz2".into(),
                sha256: "b".repeat(64),
            },
            sysroot: SysrootLock {
                mirror: "http://archive.debian.org/debian".into(),
                packages: vec![Pinned {
                    name: "libc6".into(),
                    version: "2.28-10".into(),
                    filename: "pool/main/g/glibc/libc6_2.28-10_amd64.deb".into(),
                    size: 1,
                    sha256: "c".repeat(64),
                }],
            },
            tools: vec![],
        }
    }

    #[test]
    fn round_trips_and_reports_drift() {
        let l = lock();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flink-1.10.1.lock");
        assert_eq!(Lock::read(&path).unwrap(), None);
        l.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Written by"), "{text}");
        assert_eq!(Lock::read(&path).unwrap(), Some(l.clone()));
        let sha = "b".repeat(64);
        let mut req = Request {
            base: &l.base.reference,
            jemalloc_url: &l.jemalloc.url,
            jemalloc_sha256: &sha,
            mirror: None,
            source_date_epoch: 0,
            platform: "linux/amd64",
        };
        assert!(differences(&l, &req).is_empty());
        require(&path, Some(&l), &req).unwrap();
        req.platform = "linux/arm64";
        let d = differences(&l, &req);
        assert_eq!(d, ["platform linux/arm64 (locked: linux/amd64)"], "{d:?}");
        req.platform = "linux/amd64";
        req.base = "docker.io/library/flink:1.10.2-scala_2.12";
        req.mirror = Some("http://deb.debian.org/debian");
        let err = require(&path, Some(&l), &req).unwrap_err().to_string();
        assert!(
            err.contains("would change") && err.contains("1.10.2") && err.contains("mirror"),
            "{err}"
        );
        assert!(require(&path, None, &req)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
