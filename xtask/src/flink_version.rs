//! A Flink release's version, as its flink-dist jar names it: what the e2e job is compiled
//! for, what a scenario and a catalogued leak apply to.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// A Flink release, as the flink-dist jar names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlinkVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for FlinkVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for FlinkVersion {
    type Err = anyhow::Error;

    /// Parses `2.2.1`, or `2.2` (patch 0).
    fn from_str(s: &str) -> Result<FlinkVersion> {
        let parts: Vec<u32> = s
            .split('.')
            .map(|p| p.parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("`{s}` is not a Flink version (like 2.2.1)"))?;
        match parts[..] {
            [major, minor] => Ok(FlinkVersion {
                major,
                minor,
                patch: 0,
            }),
            [major, minor, patch] => Ok(FlinkVersion {
                major,
                minor,
                patch,
            }),
            _ => bail!("`{s}` is not a Flink version (like 2.2.1)"),
        }
    }
}

/// Returns the version in a flink-dist jar's name: `flink-dist_2.12-1.10.3.jar` (Scala
/// suffix, up to 1.14), `flink-dist-1.18.1.jar`, `flink-dist-2.2.1.jar`.
pub fn flink_version(flink_dist: &Path) -> Result<FlinkVersion> {
    let name = flink_dist
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".jar")
        .and_then(|s| s.rsplit_once('-'))
        .map(|(_, v)| v)
        .context("no version")
        .and_then(str::parse)
        .with_context(|| format!("the Flink version of {name} (flink-dist-<version>.jar)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_jar_names() {
        let v = |n: &str| flink_version(Path::new(n)).unwrap().to_string();
        assert_eq!(v("/opt/flink/lib/flink-dist_2.12-1.10.3.jar"), "1.10.3");
        assert_eq!(v("flink-dist-1.18.1.jar"), "1.18.1");
        assert_eq!(v("flink-dist-2.2.1.jar"), "2.2.1");
        assert!(flink_version(Path::new("flink-dist.jar")).is_err());
        assert!("2.2.1".parse::<FlinkVersion>().unwrap() < "2.10".parse().unwrap());
    }
}
