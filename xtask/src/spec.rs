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
    }
}
