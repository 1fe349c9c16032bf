//! Facts kept as data under `images/`: the jemalloc release and the Debian sysroots.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::digest::Sha256Hex;

/// `images/jemalloc.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JemallocSpec {
    pub version: String,
    pub url: String,
    pub sha256: String,
    pub prefix: String,
    pub configure_flags: Vec<String>,
    /// Patch directory, relative to the project root.
    pub patches: PathBuf,
}

impl JemallocSpec {
    pub fn load(root: &Path) -> Result<JemallocSpec> {
        let spec: JemallocSpec = load_toml(&root.join("images/jemalloc.toml"))?;
        Sha256Hex::parse(&spec.sha256).context("images/jemalloc.toml: field `sha256`")?;
        Ok(spec)
    }

    /// The patch files, in the order they are applied (file name order).
    pub fn patch_files(&self, root: &Path) -> Result<Vec<PathBuf>> {
        let dir = root.join(&self.patches);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("reading patch directory {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "patch") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// `images/debian.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSpec {
    pub arch: String,
    #[serde(default)]
    pub dev_links: Vec<DevLink>,
    pub suites: BTreeMap<String, SuiteSpec>,
}

/// A linker-name symlink created inside a sysroot when its target exists there.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DevLink {
    pub link: PathBuf,
    pub target: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteSpec {
    pub mirror: String,
    /// An end-of-life suite moved to the archive host: its `mirror` wins over the apt
    /// sources a base image still names (they no longer serve it).
    #[serde(default)]
    pub archived: bool,
    pub component: String,
    pub packages: Vec<String>,
}

impl DebianSpec {
    pub fn load(root: &Path) -> Result<DebianSpec> {
        load_toml(&root.join("images/debian.toml"))
    }

    pub fn suite(&self, name: &str) -> Result<&SuiteSpec> {
        match self.suites.get(name) {
            Some(s) => Ok(s),
            None => bail!(
                "unknown Debian suite `{name}`; images/debian.toml knows: {}",
                self.suites.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// `images/flink-<version>.toml`: one Flink image line to build on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlinkSpec {
    pub flink: String,
    pub base: String,
    pub scala: String,
    pub java: String,
    pub java_home: String,
    pub flink_home: String,
    pub user: String,
    pub uid: u32,
    pub distribution: String,
}

impl FlinkSpec {
    pub fn path(root: &Path, version: &str) -> PathBuf {
        root.join("images").join(format!("flink-{version}.toml"))
    }

    /// The spec for `version`, or an error listing the known ones.
    pub fn load(root: &Path, version: &str) -> Result<FlinkSpec> {
        let path = FlinkSpec::path(root, version);
        if !path.is_file() {
            let known: Vec<String> = FlinkSpec::all(root)?.into_iter().map(|s| s.flink).collect();
            bail!(
                "no image spec for Flink {version} ({}); known versions: {}",
                path.display(),
                known.join(", ")
            );
        }
        let spec: FlinkSpec = load_toml(&path)?;
        if spec.flink != version {
            bail!("{} says flink = \"{}\"", path.display(), spec.flink);
        }
        Ok(spec)
    }

    /// All specs under `images/`, sorted by version.
    pub fn all(root: &Path) -> Result<Vec<FlinkSpec>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(root.join("images"))? {
            let p = e?.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("flink-") && name.ends_with(".toml") {
                out.push(load_toml::<FlinkSpec>(&p)?);
            }
        }
        out.sort_by_key(|s| {
            s.flink
                .split('.')
                .map(|p| p.parse::<u32>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        Ok(out)
    }
}

fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_specs_load() {
        let root = crate::project::root();
        let j = JemallocSpec::load(&root).unwrap();
        assert_eq!(j.version, "5.2.1");
        assert_eq!(
            j.configure_flags,
            [
                "--enable-prof",
                "--enable-stats",
                "--enable-debug",
                "--enable-fill"
            ]
        );
        assert!(j.patch_files(&root).unwrap().len() >= 2);
        let d = DebianSpec::load(&root).unwrap();
        assert!(d
            .suite("bullseye")
            .unwrap()
            .packages
            .contains(&"libgcc-s1".to_string()));
        let err = d.suite("sid").unwrap_err().to_string();
        assert!(err.contains("bullseye") && err.contains("buster"), "{err}");
        assert!(d.suite("buster").unwrap().archived && !d.suite("bullseye").unwrap().archived);
        let f = FlinkSpec::load(&root, "1.10.1").unwrap();
        assert_eq!(f.base, "docker.io/library/flink:1.10.1-scala_2.12");
        assert_eq!((f.uid, f.flink_home.as_str()), (9999, "/opt/flink"));
        let err = FlinkSpec::load(&root, "0.9").unwrap_err().to_string();
        assert!(err.contains("known versions: 1.10.1, 1.10.3"), "{err}");
    }
}
