//! Safe tar extraction. Every entry is checked before anything is written: no absolute
//! paths, no `..`, no links that resolve outside the tree, no device nodes or FIFOs, and no
//! writing through a symlink that an earlier entry created. Archives are unpacked into a
//! temporary directory and renamed into place only when complete.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// What to do with a symlink whose target is absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsoluteLinks {
    /// Source archives: an absolute link is an escape attempt.
    Refuse,
    /// Debian data archives unpacked as a sysroot: `/lib/x/libm.so.6` becomes a link
    /// relative to the sysroot, so tools that follow it never leave the tree.
    MakeRelative,
    /// Trees that become image layers: `/` is the image's root, so an absolute target is
    /// kept as written (it must still not climb above that root).
    Keep,
}

/// Decompresses a tar stream according to its magic bytes (bzip2, gzip, xz, zstd or none).
pub fn decompressed(reader: impl Read + 'static) -> Result<Box<dyn Read>> {
    let mut r = BufReader::new(reader);
    let magic = r.fill_buf().context("reading archive header")?.to_vec();
    Ok(if magic.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(r))
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(r))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // ruzstd: a pure-Rust decoder (no C library to build on a user's first run).
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| anyhow::anyhow!("reading a zstd stream: {e}"))?,
        )
    } else {
        Box::new(r)
    })
}

/// Returns the normalised relative path of an archive member, or an error for an unsafe one.
/// `./a/./b` is `a/b`; the archive root (`./`) is `None`.
fn member_path(raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("refusing absolute path `{}`", raw.display())
            }
            Component::ParentDir => bail!("refusing path with `..`: `{}`", raw.display()),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Checks a symlink at `link` (relative to the tree root) pointing at `target`, and returns
/// the target to write. Relative targets must stay inside the tree once resolved from the
/// link's directory; absolute ones are refused or rewritten relative, per `policy`.
fn link_target(link: &Path, target: &Path, policy: AbsoluteLinks) -> Result<PathBuf> {
    let parent = link.parent().unwrap_or(Path::new(""));
    if target.has_root() {
        if policy == AbsoluteLinks::Refuse {
            bail!(
                "refusing symlink `{}` -> `{}`: absolute target",
                link.display(),
                target.display()
            );
        }
        let inside = resolve_inside(Path::new(""), target)
            .with_context(|| format!("symlink `{}` -> `{}`", link.display(), target.display()))?;
        // From the link's directory, climb to the root, then descend to the target.
        let mut rel = PathBuf::new();
        for _ in parent.components() {
            rel.push("..");
        }
        rel.push(&inside);
        if rel.as_os_str().is_empty() {
            rel.push(".");
        }
        return Ok(rel);
    }
    resolve_inside(parent, target).with_context(|| {
        format!(
            "refusing symlink `{}` -> `{}`: it points outside the tree",
            link.display(),
            target.display()
        )
    })?;
    Ok(target.to_path_buf())
}

/// Lexically resolves `rel` from directory `base` (both relative to the root), failing if
/// `..` would climb above the root.
fn resolve_inside(base: &Path, rel: &Path) -> Result<PathBuf> {
    let mut stack: Vec<&std::ffi::OsStr> = base
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    for c in rel.components() {
        match c {
            Component::Normal(p) => stack.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    bail!("`{}` climbs above the root", rel.display());
                }
            }
        }
    }
    Ok(stack.iter().collect())
}

/// Counts of what an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files: usize,
    pub dirs: usize,
    pub links: usize,
}

/// Unpacks the tar stream `archive` into the existing directory `dest`.
pub(crate) fn unpack_into(archive: impl Read, dest: &Path, policy: AbsoluteLinks) -> Result<Stats> {
    let mut ar = tar::Archive::new(archive);
    ar.set_preserve_permissions(false);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    let mut stats = Stats::default();
    for entry in ar.entries().context("reading tar archive")? {
        let mut entry = entry.context("reading tar entry")?;
        let raw = entry
            .path()
            .context("tar entry with an unreadable path")?
            .into_owned();
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            continue;
        }
        let Some(rel) = member_path(&raw)? else {
            continue;
        };
        refuse_symlink_ancestors(dest, &rel)?;
        let path = dest.join(&rel);
        match kind {
            T::Directory => {
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                stats.dirs += 1;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                prepare_parent(&path)?;
                remove_non_dir(&path)?;
                entry
                    .unpack(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                stats.files += 1;
            }
            T::Symlink => {
                let target = entry
                    .link_name()?
                    .with_context(|| format!("symlink `{}` without a target", raw.display()))?
                    .into_owned();
                let target = link_target(&rel, &target, policy)?;
                prepare_parent(&path)?;
                remove_non_dir(&path)?;
                std::os::unix::fs::symlink(&target, &path)
                    .with_context(|| format!("creating symlink {}", path.display()))?;
                stats.links += 1;
            }
            T::Link => {
                let target = entry
                    .link_name()?
                    .with_context(|| format!("hard link `{}` without a target", raw.display()))?;
                let Some(target) = member_path(&target)
                    .with_context(|| format!("refusing hard link `{}`", raw.display()))?
                else {
                    bail!("refusing hard link `{}` to the archive root", raw.display());
                };
                refuse_symlink_ancestors(dest, &target)?;
                let source = dest.join(&target);
                let meta = std::fs::symlink_metadata(&source).with_context(|| {
                    format!(
                        "refusing hard link `{}`: its target `{}` is not in the tree",
                        raw.display(),
                        target.display()
                    )
                })?;
                if !meta.is_file() {
                    bail!(
                        "refusing hard link `{}` to `{}`, which is not a regular file",
                        raw.display(),
                        target.display()
                    );
                }
                prepare_parent(&path)?;
                remove_non_dir(&path)?;
                std::fs::hard_link(&source, &path)
                    .with_context(|| format!("creating hard link {}", path.display()))?;
                stats.links += 1;
            }
            T::Char | T::Block => bail!("refusing device node `{}`", raw.display()),
            T::Fifo => bail!("refusing FIFO `{}`", raw.display()),
            other => bail!(
                "refusing `{}`: unsupported entry type {}",
                raw.display(),
                char::from(other.as_byte())
            ),
        }
    }
    Ok(stats)
}

/// Unpacks into a fresh `dest` atomically: a temporary sibling directory is filled and then
/// renamed. On error nothing is left at `dest`.
pub fn unpack_fresh(archive: impl Read, dest: &Path, policy: AbsoluteLinks) -> Result<Stats> {
    let parent = dest.parent().context("destination without a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let stats = unpack_into(archive, tmp.path(), policy)?;
    replace_dir(tmp.keep(), dest)?;
    Ok(stats)
}

/// Moves the directory `from` to `to`, replacing whatever `to` held.
pub fn replace_dir(from: PathBuf, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("removing old {}", to.display()))?;
    }
    std::fs::rename(&from, to).with_context(|| {
        let _ = std::fs::remove_dir_all(&from);
        format!("renaming {} to {}", from.display(), to.display())
    })
}

fn refuse_symlink_ancestors(dest: &Path, rel: &Path) -> Result<()> {
    let mut p = dest.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        if comps.peek().is_none() {
            break;
        }
        p.push(c);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "refusing `{}`: it would be written through the symlink `{}`",
                rel.display(),
                p.strip_prefix(dest).unwrap_or(&p).display()
            );
        }
    }
    Ok(())
}

fn prepare_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("member paths have a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

fn remove_non_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => bail!("`{}` is a directory in the tree already", path.display()),
        Ok(_) => {
            std::fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))
        }
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ubuntu's `.deb`s carry zstd data archives: one made by the `zstd` tool reads back.
    #[test]
    fn zstd_streams_are_read() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "a/b.txt", &b"hello\n"[..]).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut child = std::process::Command::new("zstd")
            .args(["-q", "-c", "-19"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("zstd (ci/install-deps.sh installs it)");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &raw).unwrap();
        drop(child.stdin.take());
        let zst = child.wait_with_output().unwrap().stdout;
        assert!(zst.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        let mut out = Vec::new();
        decompressed(std::io::Cursor::new(zst))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn member_paths_are_normalised_or_refused() {
        assert_eq!(
            member_path(Path::new("./a/./b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(member_path(Path::new("./")).unwrap(), None);
        assert!(member_path(Path::new("/etc/passwd")).is_err());
        assert!(member_path(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn relative_links_must_stay_inside() {
        let p = AbsoluteLinks::Refuse;
        assert_eq!(
            link_target(Path::new("a/b/l"), Path::new("../c"), p).unwrap(),
            PathBuf::from("../c")
        );
        assert!(link_target(Path::new("a/l"), Path::new("../../x"), p).is_err());
        assert!(link_target(Path::new("l"), Path::new("/etc"), p).is_err());
    }

    #[test]
    fn absolute_links_become_relative_to_the_root() {
        let p = AbsoluteLinks::MakeRelative;
        assert_eq!(
            link_target(
                Path::new("usr/lib/x86_64-linux-gnu/libm.so"),
                Path::new("/lib/x86_64-linux-gnu/libm.so.6"),
                p
            )
            .unwrap(),
            PathBuf::from("../../../lib/x86_64-linux-gnu/libm.so.6")
        );
        assert_eq!(
            link_target(Path::new("lib64/ld.so"), Path::new("/lib/ld-2.31.so"), p).unwrap(),
            PathBuf::from("../lib/ld-2.31.so")
        );
        assert!(link_target(Path::new("l"), Path::new("/../../etc"), p).is_err());
    }
}
