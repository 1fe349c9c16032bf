//! A sysroot made from a Debian suite's libc packages: the host compiler links against it
//! so the result needs only what the target distribution provides.
//!
//! The `Packages` index is verified against the suite's `Release` file when the mirror has
//! one, every `.deb` against the index (size and sha256), and each data archive is unpacked
//! with absolute symlinks made relative. Sysroots are cached by the exact package set.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::debian::repo;
use crate::debian::{self, PackageRecord};
use crate::digest::key_of;
use crate::download::Downloader;
use crate::progress::{self, Step};
use crate::project::Cache;
use crate::spec::{DevLink, PlatformSpec};
use crate::unpack::{self, AbsoluteLinks};

/// What to make a sysroot from.
#[derive(Debug, Clone)]
pub struct Request {
    pub mirror: String,
    pub suite: String,
    pub component: String,
    /// The target platform: its architecture's packages, library directories and loader.
    pub platform: PlatformSpec,
    pub packages: Vec<String>,
    /// Exact packages from a lock file: no index is read, and a cached sysroot made of
    /// them is reused without touching the network.
    pub pins: Option<Vec<Pinned>>,
    /// OpenPGP keyring that must have signed the suite's Release file (none leaves it
    /// unchecked).
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pinned {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// A ready sysroot and what it was made of (`sysroot.json` inside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sysroot {
    #[serde(skip)]
    pub dir: PathBuf,
    pub mirror: String,
    pub suite: String,
    pub key: String,
    pub packages: Vec<Pinned>,
    /// The GNU triplet of its architecture (`x86_64-linux-gnu`).
    #[serde(default = "amd64_triplet")]
    pub triplet: String,
    /// Its dynamic loader, relative to it.
    #[serde(default = "amd64_loader")]
    pub loader: String,
}

fn amd64_triplet() -> String {
    "x86_64-linux-gnu".into()
}

fn amd64_loader() -> String {
    "lib64/ld-linux-x86-64.so.2".into()
}

impl Sysroot {
    /// Returns the directories searched for shared libraries, in the order the target's
    /// loader uses: `lib/<triplet>`, `usr/lib/<triplet>`, `lib64`, `lib`, `usr/lib`.
    pub(crate) fn lib_dirs(&self) -> Vec<String> {
        let t = &self.triplet;
        vec![
            format!("lib/{t}"),
            format!("usr/lib/{t}"),
            "lib64".into(),
            "lib".into(),
            "usr/lib".into(),
        ]
    }

    /// Finds a shared library by file name in the sysroot's library directories.
    pub(crate) fn find_lib(&self, name: &str) -> Option<PathBuf> {
        self.lib_dirs()
            .iter()
            .map(|d| self.dir.join(d).join(name))
            .find(|p| p.exists())
    }

    /// Returns the target's own dynamic loader (`lib64/ld-linux-x86-64.so.2`).
    pub(crate) fn loader(&self) -> PathBuf {
        self.dir.join(&self.loader)
    }

    /// Returns the flags that make gcc compile and link against the sysroot only. Debian's
    /// gcc is not configured `--with-sysroot`, so `--sysroot` alone still puts the host's
    /// `/usr/lib/x86_64-linux-gnu` (crt files, libc, libgcc_s) ahead of the sysroot's and the
    /// result needs the host's glibc (a cross gcc likewise puts its own
    /// `/usr/aarch64-linux-gnu/lib` first); `-B` and `-L` put the sysroot's first.
    pub fn compiler_flags(&self) -> Vec<String> {
        let (d, t) = (self.dir.display(), &self.triplet);
        vec![
            format!("--sysroot={d}"),
            format!("-B{d}/usr/lib/{t}/"),
            format!("-L{d}/lib/{t}"),
            format!("-L{d}/usr/lib/{t}"),
        ]
    }

    pub(crate) fn library_path(&self) -> String {
        self.lib_dirs()
            .iter()
            .map(|d| self.dir.join(d).display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    pub(crate) fn package_version(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}

/// Adds the linker names runtime-only packages lack (`libstdc++.so`) as relative links
/// inside the sysroot at `root`, where their targets exist.
fn add_dev_links(root: &Path, links: &[DevLink]) -> Result<()> {
    for dev in links {
        let link = root.join(&dev.link);
        let target = link
            .parent()
            .expect("dev links have a parent")
            .join(&dev.target);
        if target.exists() && std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&dev.target, &link)
                .with_context(|| format!("creating {}", link.display()))?;
        }
    }
    Ok(())
}

pub fn prepare(dl: &Downloader, cache: &Cache, req: &Request) -> Result<Sysroot> {
    let pinned: Vec<Pinned> = match &req.pins {
        Some(pins) => pins.clone(),
        None => resolve(dl, cache, req)?,
    };
    progress::note(format!(
        "sysroot packages: {}",
        pinned
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let key = key_of(
        pinned
            .iter()
            .map(|p| format!("{} {} {}", p.name, p.version, p.sha256))
            .chain(
                req.platform
                    .dev_links
                    .iter()
                    .map(|d| format!("{} -> {}", d.link.display(), d.target.display())),
            ),
    );
    let dir = cache.sysroot_dir(&req.suite, key.as_str());
    let sysroot = Sysroot {
        dir: dir.clone(),
        mirror: req.mirror.clone(),
        suite: req.suite.clone(),
        key: key.to_string(),
        packages: pinned,
        triplet: req.platform.triplet.clone(),
        loader: req.platform.loader.clone(),
    };
    let _lock = cache.lock("sysroot", &format!("{}-{}", req.suite, key.as_str()))?;
    if dir.join("sysroot.json").is_file() {
        progress::note(format!("sysroot (cached): {}", dir.display()));
        return Ok(sysroot);
    }

    let step = Step::start(format!("making the {} sysroot", req.suite));
    let parent = dir.parent().expect("sysroot dirs have a parent");
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".sysroot-")
        .tempdir_in(parent)?;
    for pkg in &sysroot.packages {
        let url = format!("{}/{}", req.mirror.trim_end_matches('/'), pkg.filename);
        let sha = crate::digest::Sha256Hex::parse(&pkg.sha256)?;
        let deb = dl.fetch(cache, &url, &sha).with_context(|| {
            format!(
                "downloading {} {} (verified against the Packages index)",
                pkg.name, pkg.version
            )
        })?;
        let size = std::fs::metadata(&deb)?.len();
        if size != pkg.size {
            bail!(
                "{url}: {size} bytes, but the Packages index says {}",
                pkg.size
            );
        }
        let file = std::fs::File::open(&deb)?;
        unpack::unpack_into(
            debian::data_archive(file)?,
            tmp.path(),
            AbsoluteLinks::MakeRelative,
        )
        .with_context(|| format!("unpacking {} ({})", pkg.name, deb.display()))?;
    }
    add_dev_links(tmp.path(), &req.platform.dev_links)?;
    let manifest = serde_json::to_string_pretty(&sysroot)? + "\n";
    std::fs::write(tmp.path().join("sysroot.json"), manifest)?;
    unpack::replace_dir(tmp.keep(), &dir)?;
    step.done(dir.display().to_string());
    Ok(sysroot)
}

/// Resolves the requested packages in the suite's index (verified as `repo` does).
pub(crate) fn resolve(dl: &Downloader, cache: &Cache, req: &Request) -> Result<Vec<Pinned>> {
    let step = Step::start(format!(
        "resolving {} from {} {} ({})",
        req.packages.join(" "),
        req.mirror,
        req.suite,
        req.platform.arch
    ));
    let index = repo::fetch_index(
        dl,
        cache,
        &repo::Repo {
            mirror: &req.mirror,
            suite: &req.suite,
            component: &req.component,
            arch: &req.platform.arch,
            keyring: req.keyring.as_deref(),
        },
    )?;
    let chosen = select(&index, &req.packages, &req.platform.arch).with_context(|| {
        format!(
            "resolving the sysroot packages in {} {}",
            req.mirror, req.suite
        )
    })?;
    step.done("");
    Ok(chosen
        .iter()
        .map(|p| Pinned {
            name: p.name.clone(),
            version: p.version.clone(),
            filename: p.filename.clone(),
            size: p.size,
            sha256: p.sha256.to_string(),
        })
        .collect())
}

/// Picks each requested package for `arch` (or `all`); when an index lists several
/// versions, the last one listed wins (indexes list one version per suite).
pub(crate) fn select<'a>(
    index: &'a [PackageRecord],
    names: &[String],
    arch: &str,
) -> Result<Vec<&'a PackageRecord>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match index
            .iter()
            .rev()
            .find(|p| p.name == *name && (p.arch == arch || p.arch == "all"))
        {
            Some(p) => out.push(p),
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "package(s) {} not found for {arch} (names differ by suite: buster has libgcc1 and no libcrypt-dev)",
            missing.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Hex;

    fn rec(name: &str, arch: &str, version: &str) -> PackageRecord {
        PackageRecord {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            filename: format!("pool/{name}_{version}_{arch}.deb"),
            size: 1,
            sha256: Sha256Hex::of_bytes(name.as_bytes()),
            depends: String::new(),
            pre_depends: String::new(),
            provides: String::new(),
            multi_arch: None,
        }
    }

    #[test]
    fn select_matches_arch_and_names_missing() {
        let index = vec![
            rec("libc6", "i386", "1"),
            rec("libc6", "amd64", "2"),
            rec("linux-libc-dev", "amd64", "3"),
        ];
        let got = select(&index, &["libc6".into(), "linux-libc-dev".into()], "amd64").unwrap();
        assert_eq!(got[0].version, "2");
        let err = select(
            &index,
            &["libgcc-s1".into(), "libcrypt-dev".into()],
            "amd64",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("libgcc-s1, libcrypt-dev"), "{err}");
    }
}
