//! The layer with jeprof's tools (binutils, graphviz, perl, file) from the base's own distribution:
//! the tools are resolved against the base's dpkg status and pinned in the lock, every `.deb` is
//! checked against its sha256, and the data archives are unpacked into one tree. dpkg learns about
//! them (the base's status with the new paragraphs appended, `info/<pkg>.list` and `.md5sums`).
//! Maintainer scripts are not run; the two that matter are redone in a chroot of the merged image
//! (base unpacked by `umoci`, tools on top): `ldconfig` and graphviz's `dot -c`, whose outputs
//! (`/etc/ld.so.cache`, `config6a`) go into the layer.

use anyhow::{bail, Context, Result};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use super::base::{Base, Target};
use super::cache::{cached_layer, CacheBlobs};
use super::context::RunContext;
use super::inspect::{excluded, BaseFacts, PathFilter};
use super::lock::DebPin;
use crate::oci::{self, Blob};

use crate::debian;
use crate::debian::repo::{self, Repo};
use crate::digest::Sha256Hex;
use crate::download::Downloader;
use crate::image::deps::{self, Installed};
use crate::kubectl::find_on_path;
use crate::progress::{self, Step};
use crate::project::Cache;
use crate::rootless;
use crate::spec::PlatformSpec;
use crate::unpack::{self, AbsoluteLinks};

/// The jeprof tools layer and the packages in it.
pub(crate) struct Tools {
    pub pins: Vec<DebPin>,
    pub layer: oci::LayerRef,
}

/// Resolves the tools against the repository's index and the base's dpkg status.
pub(crate) fn resolve(
    dl: &Downloader,
    cache: &Cache,
    repo: &Repo,
    status: &str,
) -> Result<Vec<DebPin>> {
    let step = Step::start(format!(
        "resolving {} against the base",
        deps::JEPROF_TOOLS.join(" ")
    ));
    let index = repo::fetch_index(dl, cache, repo)?;
    let installed = Installed::from_status(status)?;
    let chosen = deps::resolve(&index, &installed, deps::JEPROF_TOOLS, repo.arch)?;
    let pins = pins(&chosen, repo);
    step.done(format!(
        "{} packages ({} MB)",
        pins.len(),
        pins.iter().map(|p| p.size).sum::<u64>() / 1_000_000
    ));
    Ok(pins)
}

/// Returns the lock entries for resolved packages from `repo`.
pub fn pins(chosen: &[&debian::PackageRecord], repo: &Repo) -> Vec<DebPin> {
    chosen
        .iter()
        .map(|r| DebPin {
            name: r.name.clone(),
            version: r.version.clone(),
            arch: r.arch.clone(),
            multi_arch: r.multi_arch.clone(),
            filename: r.filename.clone(),
            size: r.size,
            sha256: r.sha256.to_string(),
            repository: format!(
                "{} {}/{}",
                repo.mirror.trim_end_matches('/'),
                repo.suite,
                repo.component
            ),
        })
        .collect()
}

/// Returns dpkg's name for a package's info files: `name` or `name:arch` for
/// Multi-Arch: same.
fn info_name(p: &DebPin) -> String {
    if p.multi_arch.as_deref() == Some("same") {
        format!("{}:{}", p.name, p.arch)
    } else {
        p.name.clone()
    }
}

/// Returns a control paragraph as dpkg's status records it: `Status` after `Package`.
fn status_paragraph(control: &str) -> String {
    let mut out = String::new();
    for line in control.trim_end().lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out
}

/// Fills `tree` with the packages (downloaded from `mirror`, verified) and dpkg's records
/// of them, `base_status` being the base's `/var/lib/dpkg/status`.
pub fn fill_tree(
    dl: &Downloader,
    cache: &Cache,
    mirror: &str,
    pins: &[DebPin],
    base: &BaseFacts,
    tree: &Path,
) -> Result<()> {
    let base_status = &base.dpkg_status;
    let info = tree.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info)?;
    let mut status = base_status.trim_end().to_string();
    for p in pins {
        let url = format!("{}/{}", mirror.trim_end_matches('/'), p.filename);
        let deb = dl
            .fetch(
                cache,
                &url,
                &Sha256Hex::parse(&p.sha256)
                    .with_context(|| format!("the lock's sha256 of {} is not a digest", p.name))?,
            )
            .with_context(|| format!("{} {} (sha256 pinned in the lock)", p.name, p.version))?;
        let size = std::fs::metadata(&deb)?.len();
        if size != p.size {
            bail!("{url}: {size} bytes, the lock says {}", p.size);
        }
        let before = list_files(tree);
        unpack::unpack_into(
            debian::data_archive(std::fs::File::open(&deb)?)?,
            tree,
            AbsoluteLinks::Keep,
        )
        .with_context(|| format!("unpacking {}", deb.display()))?;
        let after = list_files(tree);
        let (control, md5sums) = debian::control_files(std::fs::File::open(&deb)?)?;
        status.push_str("\n\n");
        status.push_str(status_paragraph(&control).trim_end());
        let mut list = String::new();
        let new: Vec<&String> = after.difference(&before).collect();
        for f in &new {
            writeln!(list, "/{f}")?;
        }
        // What the base's dpkg configuration leaves out stays listed, as dpkg lists it.
        drop_excluded(tree, &new, &base.dpkg_filters)?;
        std::fs::write(info.join(format!("{}.list", info_name(p))), list)?;
        std::fs::write(info.join(format!("{}.md5sums", info_name(p))), md5sums)?;
    }
    status.push('\n');
    std::fs::write(tree.join("var/lib/dpkg/status"), status)?;
    Ok(())
}

/// Removes the `paths` (relative to `tree`) that dpkg's `path-exclude` filters leave out:
/// files and links, then directories that are left empty, deepest first.
fn drop_excluded(tree: &Path, paths: &[&String], filters: &[PathFilter]) -> Result<()> {
    if filters.is_empty() {
        return Ok(());
    }
    let mut dirs = Vec::new();
    for p in paths {
        if !excluded(filters, &format!("/{p}")) {
            continue;
        }
        let full = tree.join(p);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => dirs.push(full),
            Ok(_) => std::fs::remove_file(&full)
                .with_context(|| format!("leaving out {}", full.display()))?,
            Err(_) => {}
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        // A directory goes only when empty: an included file below keeps it.
        let _ = std::fs::remove_dir(&d);
    }
    Ok(())
}

fn list_files(tree: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(tree) {
                out.insert(rel.display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

/// Does the maintainer-script work that matters, in a chroot of the base (an OCI layout
/// `base_layout:tag`) with `tree` on top, and copies the results into `tree`.
///
/// For a platform of another CPU the image's programs run under qemu's user-mode emulator,
/// copied into the chroot for the run (see [`rootless::run_in_emulated`]).
fn finish_in_chroot(
    base_layout: &Path,
    tag: &str,
    tree: &Path,
    work: &Path,
    platform: &PlatformSpec,
) -> Result<()> {
    let emulator = platform
        .is_cross()
        .then(|| {
            let qemu = format!("qemu-{}-static", platform.cpu());
            let path = std::env::var_os("PATH").unwrap_or_default();
            find_on_path(&qemu, &path).with_context(|| {
                format!(
                    "an image for {} runs its ldconfig and `dot -c` under {qemu}: apt-get install qemu-user-static",
                    platform.arch
                )
            })
        })
        .transpose()?;
    let step = Step::start("ldconfig and `dot -c` in a chroot of the merged image");
    let sh = Shell::new()?;
    let bundle = work.join("bundle");
    let image = format!("{}:{tag}", base_layout.display());
    rootless::umoci_unpack(&image, &bundle).context("unpacking the base")?;
    let rootfs = bundle.join("rootfs");
    let from = format!("{}/.", tree.display());
    cmd!(sh, "cp -a {from} {rootfs}").quiet().run()?;
    // Ubuntu's /sbin/ldconfig is a script that execs ldconfig.real, which an emulated run
    // cannot follow: the binary is called itself there.
    let ldconfig = if emulator.is_some() && rootfs.join("sbin/ldconfig.real").is_file() {
        "/sbin/ldconfig.real"
    } else {
        "/sbin/ldconfig"
    };
    rootless::run_in_emulated(
        &rootfs,
        &[ldconfig],
        "ldconfig in a chroot of the merged image",
        emulator.as_deref(),
    )?;
    std::fs::create_dir_all(tree.join("etc"))?;
    std::fs::copy(rootfs.join("etc/ld.so.cache"), tree.join("etc/ld.so.cache"))?;
    let config6a = format!("usr/lib/{}/graphviz/config6a", platform.triplet);
    let config6a = config6a.as_str();
    if rootfs.join("usr/bin/dot").exists() {
        rootless::run_in_emulated(
            &rootfs,
            &["/usr/bin/dot", "-c"],
            "`dot -c` (graphviz's plugin registry) in a chroot of the merged image",
            emulator.as_deref(),
        )?;
        std::fs::copy(rootfs.join(config6a), tree.join(config6a))
            .with_context(|| format!("copying {config6a} out of the chroot"))?;
    }
    step.done("");
    Ok(())
}

/// Stage 4: takes jeprof's tools for this base (pinned by the lock, or resolved against the base's
/// suite and dpkg status), unpacks them, finishes them in a chroot of the merged image, and writes
/// them as a layer; the tree is cached by the pins and the base.
pub(crate) fn stage(run: &RunContext, base: &Base, target: &Target) -> Result<Tools> {
    let repo = target.repo(&run.platform.arch);
    let pins = match &run.usable {
        Some(l) => l.tools.clone(),
        None => resolve(&run.dl, &run.cache, &repo, &target.facts.dpkg_status)?,
    };
    let (tree, key) = tools_tree(run, base, target, &pins)?;
    let step = Step::start("the jeprof tools layer");
    let key = crate::digest::key_of([
        key.to_string(),
        run.req.source_date_epoch.to_string(),
        oci::LAYER_FORMAT.to_string(),
    ]);
    let (layer, cached) = cached_layer(&run.cache, "tools", &key, || {
        Ok(oci::layer(oci::layer_tar(
            &tree,
            "",
            run.req.source_date_epoch,
        )?))
    })?;
    step.done(format!(
        "{} ({} bytes compressed, {} packages{})",
        layer.digest,
        layer.size,
        pins.len(),
        if cached { ", cached" } else { "" }
    ));
    Ok(Tools { pins, layer })
}

/// Returns the tools tree for these pins on this base, cached by both (a warm rebuild reuses
/// it without downloads or chroot work).
fn tools_tree(
    run: &RunContext,
    base: &Base,
    target: &Target,
    pins: &[DebPin],
) -> Result<(PathBuf, Sha256Hex)> {
    let cache = &run.cache;
    // The tree's recipe version: dpkg's path filters of the base are applied (v2).
    let key = crate::digest::key_of(
        ["tools-tree-v2".to_string(), base.digest.to_string()]
            .into_iter()
            .chain(
                pins.iter()
                    .map(|p| format!("{} {} {}", p.name, p.version, p.sha256)),
            ),
    );
    let dir = cache.dir.join("tools").join(&key.as_str()[..16]);
    let _lock = cache.lock("tools", key.as_str())?;
    if dir.join("var/lib/dpkg/status").is_file() {
        progress::note(format!("jeprof tools tree (cached): {}", dir.display()));
        return Ok((dir, key));
    }
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent)?;
    let work = tempfile::Builder::new()
        .prefix(".tools-")
        .tempdir_in(parent)?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    let step = Step::start(format!("unpacking {} packages for jeprof", pins.len()));
    fill_tree(&run.dl, cache, &target.mirror, pins, &target.facts, &tree)?;
    step.done("");
    // Write the base as an OCI layout (OCI media types, as umoci wants) for the chroot.
    let config = Blob::new(
        oci::OCI_CONFIG,
        std::fs::read(cache.blob(oci::hex_of(&base.config_digest)))?,
    );
    let layers = base.oci_layers();
    let manifest = Blob::new(
        crate::oci::OCI_MANIFEST,
        oci::canonical(&oci::manifest(&config, &layers, &[])),
    );
    let mut blobs = vec![config.digest.clone()];
    blobs.extend(
        layers
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_string)),
    );
    let layout = work.path().join("base-layout");
    oci::write_layout(&layout, &manifest, &blobs, &CacheBlobs(cache), "base")?;
    finish_in_chroot(
        &layout,
        "base",
        &tree,
        &work.path().join("chroot"),
        &run.platform,
    )?;
    crate::unpack::replace_dir(tree, &dir)?;
    Ok((dir, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paragraph_inserts_status_after_package() {
        let c = "Package: file\nVersion: 1:5.39-3\nArchitecture: amd64\nDepends: libmagic1 (= 1:5.39-3)\n";
        assert_eq!(
            status_paragraph(c),
            "Package: file\nStatus: install ok installed\nVersion: 1:5.39-3\nArchitecture: amd64\nDepends: libmagic1 (= 1:5.39-3)\n"
        );
    }

    #[test]
    fn multi_arch_same_packages_get_qualified_info_names() {
        let mut p = DebPin {
            name: "libgvc6".into(),
            version: "2.42.2-5".into(),
            arch: "amd64".into(),
            multi_arch: Some("same".into()),
            filename: String::new(),
            size: 0,
            sha256: String::new(),
            repository: String::new(),
        };
        assert_eq!(info_name(&p), "libgvc6:amd64");
        p.multi_arch = Some("foreign".into());
        assert_eq!(info_name(&p), "libgvc6");
    }
}
