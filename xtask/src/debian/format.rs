//! Debian repository formats: `Release` checksums, `Packages` paragraphs, and the data
//! archive inside a `.deb`. The parsing is pure, with no I/O beyond the reader handed in.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;

use crate::digest::Sha256Hex;

/// One deb822 paragraph: field names as written, values with continuation lines joined
/// by `\n`.
type Paragraph = BTreeMap<String, String>;

/// Splits deb822 text (a `Packages` index, a `Release` file, a dpkg status) into paragraphs.
pub(crate) fn paragraphs(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut cur = Paragraph::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A binary package as a `Packages` index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Path below the mirror root, e.g. `pool/main/g/glibc/libc6_2.31-13_amd64.deb`.
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256Hex,
    /// Relationship fields as written (empty when absent).
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
    pub multi_arch: Option<String>,
}

/// Parses a `Packages` index. Paragraphs without a filename or sha256 are an error: every
/// package this tool downloads is verified against the index.
pub(crate) fn parse_packages(text: &str) -> Result<Vec<PackageRecord>> {
    paragraphs(text)
        .into_iter()
        .map(|p| {
            let field = |k: &str| {
                p.get(k).cloned().with_context(|| {
                    format!(
                        "Packages paragraph for `{}` lacks `{k}`",
                        p.get("Package").map(String::as_str).unwrap_or("?")
                    )
                })
            };
            Ok(PackageRecord {
                name: field("Package")?,
                version: field("Version")?,
                arch: field("Architecture")?,
                filename: field("Filename")?,
                size: field("Size")?
                    .parse()
                    .context("Packages: `Size` is not a number")?,
                sha256: Sha256Hex::parse(&field("SHA256")?)?,
                depends: p.get("Depends").cloned().unwrap_or_default(),
                pre_depends: p.get("Pre-Depends").cloned().unwrap_or_default(),
                provides: p.get("Provides").cloned().unwrap_or_default(),
                multi_arch: p.get("Multi-Arch").cloned(),
            })
        })
        .collect()
}

/// One file listed in a `Release` file's `SHA256:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReleaseEntry {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Parses the `SHA256:` section of a `Release` file, by path relative to `dists/<suite>/`.
pub(crate) fn parse_release(text: &str) -> Result<BTreeMap<String, ReleaseEntry>> {
    let para = paragraphs(text)
        .into_iter()
        .next()
        .context("empty Release file")?;
    let Some(section) = para.get("SHA256") else {
        bail!("Release file has no SHA256 section");
    };
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [digest, size, path] = parts[..] else {
            bail!("malformed Release SHA256 line `{line}`");
        };
        out.insert(
            path.to_string(),
            ReleaseEntry {
                sha256: Sha256Hex::parse(digest)?,
                size: size
                    .parse()
                    .with_context(|| format!("Release size in `{line}`"))?,
            },
        );
    }
    Ok(out)
}

/// Returns the `data.tar*` member of a `.deb` (an `ar` archive), decompressed.
pub(crate) fn data_archive(deb: impl Read) -> Result<Box<dyn Read>> {
    member(deb, "data.tar")
}

/// Returns the `control` and `md5sums` files of a `.deb`'s `control.tar*` member.
pub(crate) fn control_files(deb: impl Read) -> Result<(String, String)> {
    let mut ar = tar::Archive::new(member(deb, "control.tar")?);
    let (mut control, mut md5sums) = (None, String::new());
    for e in ar.entries()? {
        let mut e = e?;
        let name = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut text = String::new();
        if name == "control" {
            e.read_to_string(&mut text)?;
            control = Some(text);
        } else if name == "md5sums" {
            e.read_to_string(&mut md5sums)?;
        }
    }
    Ok((control.context("the .deb has no control file")?, md5sums))
}

fn member(deb: impl Read, prefix: &str) -> Result<Box<dyn Read>> {
    let mut ar = ar::Archive::new(deb);
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.context("reading the .deb's ar archive")?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if name.starts_with(prefix) {
            let mut buf = Vec::with_capacity(entry.header().size() as usize);
            entry
                .read_to_end(&mut buf)
                .context("reading data.tar from the .deb")?;
            return crate::unpack::decompressed(std::io::Cursor::new(buf));
        }
    }
    bail!("no {prefix}* member in the .deb")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "\
Package: libc6
Source: glibc
Version: 2.31-13+deb11u5
Architecture: amd64
Depends: libgcc-s1, libcrypt1
Filename: pool/main/g/glibc/libc6_2.31-13+deb11u5_amd64.deb
Size: 2825132
SHA256: 9f4c3c3fa4d4e3b9cb6e4e3d5c0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: libgcc-s1
Version: 10.2.1-6
Architecture: amd64
Filename: pool/main/g/gcc-10/libgcc-s1_10.2.1-6_amd64.deb
Size: 41412
SHA256: 0000000000000000000000000000000000000000000000000000000000000001
";

    #[test]
    fn packages_index_parses_with_continuations() {
        let pkgs = parse_packages(PACKAGES).unwrap();
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].name, "libc6");
        assert_eq!(pkgs[0].version, "2.31-13+deb11u5");
        assert_eq!(pkgs[0].size, 2825132);
        assert_eq!(
            pkgs[1].filename,
            "pool/main/g/gcc-10/libgcc-s1_10.2.1-6_amd64.deb"
        );
        let p = &paragraphs(PACKAGES)[0];
        assert!(p["Description"].ends_with("\nthe system."));
    }

    #[test]
    fn package_without_digest_is_an_error() {
        let err =
            parse_packages("Package: x\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1\n")
                .unwrap_err();
        assert!(err.to_string().contains("SHA256"), "{err}");
    }

    #[test]
    fn release_sha256_section() {
        let text = "Origin: Debian\nSuite: bullseye\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\nSHA256:\n \
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\n \
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 20 main/binary-amd64/Packages.xz\n";
        let r = parse_release(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r["main/binary-amd64/Packages.xz"].size, 20);
        assert!(parse_release("Origin: x\n").is_err());
    }
}
