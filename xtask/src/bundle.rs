//! A profiled image's OCI layout unpacked into a runtime bundle (`umoci unpack`): the rootfs
//! and the `config.json` whose environment names JAVA_HOME and JEMALLOC_PATH.

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::progress::Step;

pub struct Bundle {
    pub dir: PathBuf,
    /// `layout:tag` as umoci names it.
    pub image: String,
    pub env: Vec<String>,
}

impl Bundle {
    /// Unpacks the layout's (first) tagged image into `dest` (which must not exist).
    pub fn unpack(layout: &Path, dest: &Path) -> Result<Bundle> {
        let tag = crate::oci::layout_ref(layout)?.ref_name;
        let image = format!("{}:{tag}", layout.display());
        let step = Step::start(format!("unpacking {image}"));
        crate::rootless::umoci_unpack(&image, dest)?;
        step.done("");
        let env = Bundle::env_of(dest)?;
        Ok(Bundle {
            dir: dest.to_path_buf(),
            image,
            env,
        })
    }

    /// Returns the `process.env` of a bundle's `config.json`.
    pub(crate) fn env_of(dir: &Path) -> Result<Vec<String>> {
        let path = dir.join("config.json");
        let cfg: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        Ok(config_env(&cfg))
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub(crate) fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
    }

    /// Returns the JVM binary jeprof is given as the program (JAVA_HOME's, else
    /// /usr/bin/java).
    pub(crate) fn java(&self) -> String {
        self.env_var("JAVA_HOME")
            .map(|j| format!("{j}/bin/java"))
            .unwrap_or_else(|| "/usr/bin/java".into())
    }

    /// Returns the image's flink-dist jar, on the host; an image without one is not a Flink
    /// image.
    pub fn flink_dist(&self) -> Result<PathBuf> {
        let home = self.env_var("FLINK_HOME").unwrap_or("/opt/flink");
        let lib = self.rootfs().join(home.trim_start_matches('/')).join("lib");
        std::fs::read_dir(&lib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("flink-dist"))
            })
            .with_context(|| {
                format!(
                    "{} is not a Flink image: no flink-dist jar in {home}/lib; pass a profiled \
                     Flink image (`cargo xtask image --flink <version> --output DIR`)",
                    self.image
                )
            })
    }
}

/// Returns the `process.env` of a runtime config (`config.json`).
pub(crate) fn config_env(config: &Value) -> Vec<String> {
    config["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}
