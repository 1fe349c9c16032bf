//! What a base image is, read from its layers with whiteouts applied: the distribution
//! (`/etc/os-release`), the installed `libc6` (dpkg status), and the apt sources. The
//! overlay logic is a pure function over tar entries; only the files of interest keep their
//! contents.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::debian;
use crate::unpack;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    /// A regular file; its contents are kept only for the paths `wanted` selects.
    File(Option<Vec<u8>>),
    Symlink(PathBuf),
    Other,
}

/// The merged filesystem of the layers applied so far.
#[derive(Debug, Default)]
pub(crate) struct RootfsView {
    nodes: BTreeMap<PathBuf, Node>,
}

/// Returns whether `p` is a path whose contents inspection reads.
pub(crate) fn wanted(p: &Path) -> bool {
    let s = p.to_string_lossy();
    matches!(
        s.as_ref(),
        "etc/os-release" | "usr/lib/os-release" | "var/lib/dpkg/status" | "etc/apt/sources.list"
    ) || s.starts_with("etc/apt/sources.list.d/")
        || s.starts_with("var/lib/dpkg/status.d/")
        || s == "etc/dpkg/dpkg.cfg"
        || s.starts_with("etc/dpkg/dpkg.cfg.d/")
}

fn normalise(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

impl RootfsView {
    fn remove_tree(&mut self, p: &Path) {
        self.nodes.remove(p);
        self.remove_children(p);
    }

    fn remove_children(&mut self, p: &Path) {
        let doomed: Vec<PathBuf> = self
            .nodes
            .range(p.to_path_buf()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(p))
            .filter(|k| k.as_path() != p)
            .cloned()
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Applies one layer (an uncompressed or compressed tar stream), honouring whiteouts:
    /// `.wh.NAME` deletes NAME and what is below it; `.wh..wh..opq` empties its directory.
    fn apply_layer(&mut self, layer: impl Read) -> Result<()> {
        let mut ar = tar::Archive::new(layer);
        for entry in ar.entries().context("reading layer")? {
            let mut entry = entry.context("reading layer entry")?;
            let Some(path) = normalise(&entry.path()?) else {
                continue;
            };
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == ".wh..wh..opq" {
                self.remove_children(&parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                self.remove_tree(&parent.join(hidden));
                continue;
            }
            use tar::EntryType as T;
            let node = match entry.header().entry_type() {
                T::Directory => Node::Dir,
                T::Regular | T::Continuous => {
                    if wanted(&path) {
                        let mut buf = Vec::new();
                        entry.read_to_end(&mut buf)?;
                        Node::File(Some(buf))
                    } else {
                        Node::File(None)
                    }
                }
                T::Symlink => Node::Symlink(entry.link_name()?.unwrap_or_default().into_owned()),
                T::Link => {
                    let target = entry.link_name()?.and_then(|t| normalise(&t));
                    target
                        .and_then(|t| self.nodes.get(&t).cloned())
                        .unwrap_or(Node::File(None))
                }
                _ => Node::Other,
            };
            if node != Node::Dir {
                self.remove_children(&path);
            }
            self.nodes.insert(path, node);
        }
        Ok(())
    }

    #[cfg(test)]
    fn node(&self, p: &str) -> Option<&Node> {
        self.nodes.get(Path::new(p))
    }

    /// Reads a file, following symlinks (absolute ones relative to the image root).
    pub(crate) fn read(&self, p: &str) -> Option<&[u8]> {
        let mut path = PathBuf::from(p);
        for _ in 0..16 {
            match self.nodes.get(&path)? {
                Node::File(Some(data)) => return Some(data),
                Node::Symlink(target) => {
                    let base = if target.has_root() {
                        PathBuf::new()
                    } else {
                        path.parent()?.to_path_buf()
                    };
                    path = normalise(&base.join(target))?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Returns the paths of existing entries directly below `dir`.
    pub(crate) fn list(&self, dir: &str) -> Vec<PathBuf> {
        let d = Path::new(dir);
        self.nodes
            .keys()
            .filter(|k| k.parent() == Some(d))
            .cloned()
            .collect()
    }
}

/// One apt source (a `deb` line or a deb822 stanza with one suite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

/// What inspection found in a base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFacts {
    pub os_id: String,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
    pub libc6_version: Option<String>,
    pub apt_sources: Vec<AptSource>,
    /// The merged dpkg status (`status` plus any `status.d/*`).
    pub dpkg_status: String,
    /// dpkg's `path-exclude`/`path-include` options, in the order dpkg reads them.
    #[serde(default)]
    pub dpkg_filters: Vec<PathFilter>,
}

/// A `path-exclude` or `path-include` option of dpkg's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFilter {
    pub include: bool,
    /// An fnmatch(3) pattern over absolute paths (`*` also matches `/`).
    pub glob: String,
}

/// Parses the path filters of dpkg configuration text (`path-exclude=GLOB`,
/// `path-exclude GLOB`, optionally with the leading `--` of the command line; `#` comments).
fn parse_dpkg_filters(text: &str) -> Vec<PathFilter> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.trim_start_matches("--");
            let (key, value) = l.split_once(['=', ' ', '\t'])?;
            let include = match key {
                "path-include" => true,
                "path-exclude" => false,
                _ => return None,
            };
            Some(PathFilter {
                include,
                glob: value.trim().to_string(),
            })
        })
        .collect()
}

/// Returns whether dpkg leaves `path` (absolute) out: the last filter that matches decides,
/// and a path no filter matches is installed.
pub(crate) fn excluded(filters: &[PathFilter], path: &str) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    filters
        .iter()
        .rev()
        .find(|f| glob::Pattern::new(&f.glob).is_ok_and(|p| p.matches_with(path, options)))
        .is_some_and(|f| !f.include)
}

/// Parses the `KEY=value` / `KEY="value"` lines of os-release.
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

/// Parses one-line `deb [opts] uri suite comp…` sources; `deb-src` and comments are skipped.
fn parse_sources_list(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim();
        if rest.starts_with('[') {
            rest = rest.split_once(']').map(|(_, r)| r.trim()).unwrap_or("");
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() >= 2 {
            out.push(AptSource {
                uri: words[0].trim_end_matches('/').to_string(),
                suite: words[1].to_string(),
                components: words[2..].iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    out
}

/// Parses deb822 `.sources` stanzas (`Types: deb`, `URIs`, `Suites`, `Components`).
fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for p in debian::paragraphs(text) {
        if !p
            .get("Types")
            .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
        {
            continue;
        }
        if p.get("Enabled")
            .is_some_and(|e| e.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let list = |k: &str| {
            p.get(k)
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        for uri in list("URIs") {
            for suite in list("Suites") {
                out.push(AptSource {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite,
                    components: list("Components"),
                });
            }
        }
    }
    out
}

/// Returns the installed version of `package` in a dpkg status file.
fn installed_version(status: &str, package: &str) -> Option<String> {
    debian::paragraphs(status)
        .into_iter()
        .find(|p| {
            p.get("Package").map(String::as_str) == Some(package)
                && p.get("Status").is_some_and(|s| s.ends_with("installed"))
        })
        .and_then(|p| p.get("Version").cloned())
}

/// Reads the facts from a merged view.
pub(crate) fn facts(view: &RootfsView) -> Result<BaseFacts> {
    let os = view
        .read("etc/os-release")
        .or_else(|| view.read("usr/lib/os-release"))
        .context("the base image has no /etc/os-release: cannot tell its distribution")?;
    let os = parse_os_release(&String::from_utf8_lossy(os));
    let mut status = view
        .read("var/lib/dpkg/status")
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    for p in view.list("var/lib/dpkg/status.d") {
        if let Some(d) = view.read(&p.to_string_lossy()) {
            status.push_str("\n\n");
            status.push_str(&String::from_utf8_lossy(d));
        }
    }
    let mut sources = view
        .read("etc/apt/sources.list")
        .map(|t| parse_sources_list(&String::from_utf8_lossy(t)))
        .unwrap_or_default();
    for p in view.list("etc/apt/sources.list.d") {
        let name = p.to_string_lossy().into_owned();
        if let Some(t) = view.read(&name) {
            let t = String::from_utf8_lossy(t);
            if name.ends_with(".list") {
                sources.extend(parse_sources_list(&t));
            } else if name.ends_with(".sources") {
                sources.extend(parse_deb822_sources(&t));
            }
        }
    }
    // dpkg reads its fragments in name order, then the main file.
    let mut dpkg_filters = Vec::new();
    for p in view.list("etc/dpkg/dpkg.cfg.d") {
        if let Some(t) = view.read(&p.to_string_lossy()) {
            dpkg_filters.extend(parse_dpkg_filters(&String::from_utf8_lossy(t)));
        }
    }
    if let Some(t) = view.read("etc/dpkg/dpkg.cfg") {
        dpkg_filters.extend(parse_dpkg_filters(&String::from_utf8_lossy(t)));
    }
    Ok(BaseFacts {
        os_id: os.get("ID").cloned().unwrap_or_default(),
        version_codename: os
            .get("VERSION_CODENAME")
            .cloned()
            .filter(|s| !s.is_empty()),
        pretty_name: os.get("PRETTY_NAME").cloned(),
        libc6_version: installed_version(&status, "libc6"),
        apt_sources: sources,
        dpkg_status: status,
        dpkg_filters,
    })
}

/// Applies compressed layer files in order and reads the facts.
pub(crate) fn inspect_layers(layers: &[PathBuf]) -> Result<BaseFacts> {
    let mut view = RootfsView::default();
    for l in layers {
        let f = std::fs::File::open(l).with_context(|| format!("opening layer {}", l.display()))?;
        view.apply_layer(unpack::decompressed(f)?)
            .with_context(|| format!("reading layer {}", l.display()))?;
    }
    facts(&view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_filters_last_match_wins() {
        let f = parse_dpkg_filters(
            "# minimized image\npath-exclude=/usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n\
             --path-exclude=/usr/share/man/*\nforce-unsafe-io\n",
        );
        assert_eq!(f.len(), 3);
        assert!(excluded(&f, "/usr/share/doc/perl/changelog.gz"));
        assert!(excluded(&f, "/usr/share/doc/perl"), "the directory too");
        assert!(!excluded(&f, "/usr/share/doc/perl/copyright"));
        assert!(excluded(&f, "/usr/share/man/man1/perl.1.gz"));
        assert!(!excluded(&f, "/usr/bin/perl"));
        assert!(!excluded(&[], "/usr/share/doc/x"));
    }

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(c) if c.starts_with("->") => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_link(&mut h, name, c.trim_start_matches("->"))
                        .unwrap();
                }
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, name, c.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let mut v = RootfsView::default();
        v.apply_layer(
            &layer(&[
                ("etc/", None),
                (
                    "etc/apt/sources.list",
                    Some("deb http://deb.debian.org/debian buster main\n"),
                ),
                ("etc/apt/sources.list.d/", None),
                (
                    "etc/apt/sources.list.d/old.list",
                    Some("deb http://old.example/debian buster main\n"),
                ),
                ("opt/flink/lib/a.jar", Some("x")),
            ])[..],
        )
        .unwrap();
        v.apply_layer(
            &layer(&[
                ("etc/apt/sources.list.d/.wh..wh..opq", Some("")),
                (
                    "etc/apt/sources.list.d/new.list",
                    Some("deb http://new.example/debian bullseye main\n"),
                ),
                ("opt/.wh.flink", Some("")),
            ])[..],
        )
        .unwrap();
        assert!(
            v.node("opt/flink/lib/a.jar").is_none(),
            "whiteout removes the subtree"
        );
        assert!(v.node("opt/flink").is_none());
        assert!(
            v.node("etc/apt/sources.list.d/old.list").is_none(),
            "opaque dir hides lower entries"
        );
        assert!(
            v.node("etc/apt/sources.list.d").is_some(),
            "the opaque dir itself stays"
        );
        assert!(v.read("etc/apt/sources.list.d/new.list").is_some());
    }

    #[test]
    fn facts_follow_os_release_symlink_and_dpkg_status() {
        let mut v = RootfsView::default();
        v.apply_layer(&layer(&[
            ("usr/lib/os-release", Some("PRETTY_NAME=\"Debian GNU/Linux 10 (buster)\"\nID=debian\nVERSION_CODENAME=buster\n")),
            ("etc/os-release", Some("->../usr/lib/os-release")),
            ("var/lib/dpkg/status", Some("Package: libc6\nStatus: install ok installed\nVersion: 2.28-10\n\nPackage: libc6-dev\nStatus: deinstall ok config-files\nVersion: 2.28-9\n")),
            ("etc/apt/sources.list", Some("# comment\ndeb http://deb.debian.org/debian buster main\ndeb-src http://x buster main\ndeb [arch=amd64] http://security.debian.org/debian-security buster/updates main\n")),
        ])[..])
        .unwrap();
        let f = facts(&v).unwrap();
        assert_eq!(f.os_id, "debian");
        assert_eq!(f.version_codename.as_deref(), Some("buster"));
        assert_eq!(f.libc6_version.as_deref(), Some("2.28-10"));
        assert_eq!(f.apt_sources.len(), 2);
        assert_eq!(f.apt_sources[1].suite, "buster/updates");
    }

    #[test]
    fn deb822_sources() {
        let s = parse_deb822_sources("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://x\nSuites: y\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].suite, "bookworm-updates");
        assert_eq!(s[0].components, vec!["main"]);
    }

    #[test]
    fn ubuntu_noble_base_with_deb822_sources() {
        let mut v = RootfsView::default();
        v.apply_layer(&layer(&[
            ("usr/lib/os-release", Some("PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n")),
            ("etc/os-release", Some("->../usr/lib/os-release")),
            ("var/lib/dpkg/status", Some("Package: libc6\nStatus: install ok installed\nVersion: 2.39-0ubuntu8.7\n")),
            ("etc/apt/sources.list", Some("# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n")),
            ("etc/apt/sources.list.d/", None),
            ("etc/apt/sources.list.d/ubuntu.sources", Some("Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: noble noble-updates noble-backports\nComponents: main restricted universe multiverse\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n\nTypes: deb\nURIs: http://security.ubuntu.com/ubuntu/\nSuites: noble-security\nComponents: main restricted universe multiverse\n")),
        ])[..])
        .unwrap();
        let f = facts(&v).unwrap();
        assert_eq!(f.os_id, "ubuntu");
        assert_eq!(f.version_codename.as_deref(), Some("noble"));
        assert_eq!(f.libc6_version.as_deref(), Some("2.39-0ubuntu8.7"));
        assert_eq!(
            crate::image::base::mirror_for(&f, "noble").as_deref(),
            Some("http://archive.ubuntu.com/ubuntu")
        );
        // images/debian.toml knows the suite as Ubuntu's, with graphviz's component.
        let d = crate::spec::DebianSpec::load(&crate::project::root()).unwrap();
        let noble = d.suite("noble").unwrap();
        assert_eq!(noble.os, "ubuntu");
        assert_eq!(
            noble.component.split_whitespace().collect::<Vec<_>>(),
            ["main", "universe"]
        );
        assert_eq!(d.suite("bookworm").unwrap().os, "debian");
    }
}
