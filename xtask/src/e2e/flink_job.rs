//! The e2e scenario's Flink job: keyed RocksDB state and injected failures, one source
//! tree per API generation (`e2e/job/src` for Flink 1.x, `e2e/job2/src` for 2.x, which
//! removed `RestartStrategies` and `setStateBackend`). It is compiled with the host JDK
//! against the `flink-dist` jar taken from the image under test, so API and runtime always
//! match, with `--release` set to the image's Java (8 for the 1.x job).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::flink_version::{flink_version, FlinkVersion};
use crate::project;

pub const MAIN_CLASS: &str = "flinkjemalloc.RocksDbRestartJob";

/// Returns the Java feature release of the JDK or JRE at `java_home` (its `release` file:
/// `JAVA_VERSION="17.0.15"`, `"11.0.2"`, `"1.8.0_312"`).
fn java_major(java_home: &Path) -> Result<u32> {
    let path = java_home.join("release");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (the image's JAVA_HOME)", path.display()))?;
    parse_java_major(&text).with_context(|| format!("no JAVA_VERSION in {}", path.display()))
}

fn parse_java_major(release: &str) -> Option<u32> {
    let v = release
        .lines()
        .find_map(|l| l.strip_prefix("JAVA_VERSION="))?
        .trim()
        .trim_matches('"');
    let mut parts = v.split(['.', '_', '-', '+']);
    match parts.next()?.parse().ok()? {
        1 => parts.next()?.parse().ok(),
        n => Some(n),
    }
}

/// Returns the job's source directory for a Flink version.
pub(crate) fn source_dir(flink: FlinkVersion) -> PathBuf {
    let tree = if flink.major >= 2 { "job2" } else { "job" };
    project::root().join("e2e").join(tree).join("src")
}

/// Returns the job's Java sources for a Flink version, in a stable order.
pub(crate) fn sources(flink: FlinkVersion) -> Result<Vec<PathBuf>> {
    let dir = source_dir(flink).join("flinkjemalloc");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "java"))
        .collect();
    out.sort();
    Ok(out)
}

/// Returns the `javac --release` for an image: its Java for Flink 2.x (at least 11, what 2.x
/// needs), 8 for the 1.x job (it runs on every 1.x image).
pub fn release_for(flink: FlinkVersion, image_java: Option<u32>) -> u32 {
    if flink.major >= 2 {
        image_java.unwrap_or(11).max(11)
    } else {
        8
    }
}

/// Compiles the job for `flink` against `flink_dist` with `javac --release <release>` into
/// `<out_dir>/rocksdb-restart-job.jar`.
pub fn compile(
    flink_dist: &Path,
    flink: FlinkVersion,
    release: u32,
    out_dir: &Path,
) -> Result<PathBuf> {
    let sh = Shell::new()?;
    let classes = out_dir.join("classes");
    if classes.exists() {
        std::fs::remove_dir_all(&classes)?;
    }
    std::fs::create_dir_all(&classes)?;
    let srcs = sources(flink)?;
    let release = release.to_string();
    cmd!(
        sh,
        "javac --release {release} -nowarn -encoding UTF-8 -cp {flink_dist} -d {classes} {srcs...}"
    )
    .quiet()
    .run()
    .with_context(|| {
        format!(
            "compiling the e2e job for Flink {flink} against {} with --release {release} (a JDK \
                 that knows Java {release} is needed: apt-get install openjdk-17-jdk-headless)",
            flink_dist.display()
        )
    })?;
    let jar = out_dir.join("rocksdb-restart-job.jar");
    let _d = sh.push_dir(&classes);
    cmd!(
        sh,
        "jar --create --file {jar} --main-class {MAIN_CLASS} --date 1980-01-01T00:00:02Z ."
    )
    .quiet()
    .run()
    .context("packing the e2e job with `jar`")?;
    Ok(jar)
}

/// The job compiled for an image: its Flink, the `--release` and the jar.
pub(crate) struct Compiled {
    pub flink: FlinkVersion,
    pub release: u32,
    pub jar: PathBuf,
}

/// Compiles the job for the image unpacked in `bundle` (its flink-dist, its Java) into
/// `out_dir`.
pub(crate) fn compile_for(bundle: &crate::bundle::Bundle, out_dir: &Path) -> Result<Compiled> {
    let flink_dist = bundle.flink_dist()?;
    let flink = flink_version(&flink_dist)?;
    let java = bundle
        .env_var("JAVA_HOME")
        .map(|j| bundle.rootfs().join(j.trim_start_matches('/')))
        .and_then(|j| java_major(&j).ok());
    let release = release_for(flink, java);
    let jar = compile(&flink_dist, flink, release, out_dir)?;
    Ok(Compiled {
        flink,
        release,
        jar,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions_from_release_files() {
        assert_eq!(parse_java_major("JAVA_VERSION=\"17.0.15\"\n"), Some(17));
        assert_eq!(
            parse_java_major("IMPLEMENTOR=x\nJAVA_VERSION=\"1.8.0_312\"\n"),
            Some(8)
        );
        assert_eq!(parse_java_major("JAVA_VERSION=\"21\"\n"), Some(21));
        let two: FlinkVersion = "2.2.1".parse().unwrap();
        let one: FlinkVersion = "1.10".parse().unwrap();
        assert_eq!(release_for(two, Some(17)), 17);
        assert_eq!(release_for(two, None), 11);
        assert_eq!(release_for(one, Some(11)), 8);
        assert!(source_dir(two).ends_with("e2e/job2/src"));
        assert!(one < two);
        assert!("2.x".parse::<FlinkVersion>().is_err());
    }
}
