//! Facts kept as data under `images/`: the jemalloc release and the Debian sysroots.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::digest::Sha256Hex;

/// `images/jemalloc.toml`: the releases, the default one, and what every build shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JemallocFile {
    default: String,
    prefix: String,
    configure_flags: Vec<String>,
    release: BTreeMap<String, JemallocRelease>,
}

/// One release of `images/jemalloc.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JemallocRelease {
    url: String,
    sha256: String,
    patches: PathBuf,
}

/// The jemalloc release a run builds, resolved from `images/jemalloc.toml`.
#[derive(Debug, Clone)]
pub(crate) struct JemallocSpec {
    pub version: String,
    pub url: String,
    pub sha256: String,
    pub prefix: String,
    pub configure_flags: Vec<String>,
    /// Patch directory, relative to the project root.
    pub patches: PathBuf,
    /// Whether it is the default release (whose lock and output paths carry no version).
    pub default: bool,
}

impl JemallocSpec {
    /// Returns `version` (`--jemalloc`), or the default release.
    pub(crate) fn load_release(root: &Path, version: Option<&str>) -> Result<JemallocSpec> {
        let path = root.join("images/jemalloc.toml");
        let file: JemallocFile = load_toml(&path)?;
        let version = version.unwrap_or(&file.default);
        let r = file.release.get(version).with_context(|| {
            format!(
                "no jemalloc {version} in {}: the releases are {}",
                path.display(),
                file.release.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        Sha256Hex::parse(&r.sha256)
            .with_context(|| format!("{}: release {version}: field `sha256`", path.display()))?;
        Ok(JemallocSpec {
            version: version.to_string(),
            url: r.url.clone(),
            sha256: r.sha256.clone(),
            prefix: file.prefix,
            configure_flags: file.configure_flags,
            patches: r.patches.clone(),
            default: version == file.default,
        })
    }

    /// Returns every release, the default first.
    pub(crate) fn all(root: &Path) -> Result<Vec<JemallocSpec>> {
        let file: JemallocFile = load_toml(&root.join("images/jemalloc.toml"))?;
        let mut out = vec![JemallocSpec::load_release(root, Some(&file.default))?];
        for v in file.release.keys().filter(|v| **v != file.default) {
            out.push(JemallocSpec::load_release(root, Some(v))?);
        }
        Ok(out)
    }

    /// Returns what a file or directory named for this release ends with: nothing for the
    /// default release, `-jemalloc-<version>` for the others (a lock, an output layout).
    pub(crate) fn name_suffix(&self) -> String {
        if self.default {
            String::new()
        } else {
            format!("-jemalloc-{}", self.version)
        }
    }

    /// Returns the patch files, in the order they are applied (file name order).
    pub(crate) fn patch_files(&self, root: &Path) -> Result<Vec<PathBuf>> {
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
    pub platforms: BTreeMap<String, PlatformSpec>,
    pub suites: BTreeMap<String, SuiteSpec>,
}

/// The baseline platform: its locks, outputs and build keys carry no platform in their names
/// (`flink-<v>.lock`; `flink-<v>-arm64.lock` for arm64), and a lock without `platform` is
/// for it.
pub const DEFAULT_PLATFORM: &str = "linux/amd64";

/// Returns the platform `build` and `image` make when none is named: this machine's
/// (linux/arm64 on an aarch64 machine, natively; linux/amd64 elsewhere), as `docker build`
/// does.
pub(crate) fn native_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => DEFAULT_PLATFORM,
    }
}

/// A target platform of `images/debian.toml` (`--platform linux/arm64`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlatformSpec {
    /// Debian's architecture (`arm64`).
    pub arch: String,
    /// The GNU triplet (`aarch64-linux-gnu`): library directories, cross compiler prefix.
    pub triplet: String,
    /// The dynamic loader, relative to the sysroot (`lib/ld-linux-aarch64.so.1`).
    pub loader: String,
    /// What configure gets on top of the release's flags (`--with-lg-page=16`).
    #[serde(default)]
    pub configure_flags: Vec<String>,
    #[serde(default)]
    pub dev_links: Vec<DevLink>,
}

impl PlatformSpec {
    /// Returns the machine's GNU triplet (`x86_64-linux-gnu`): a platform with another one
    /// is cross-built.
    pub(crate) fn host_triplet() -> String {
        format!("{}-linux-gnu", std::env::consts::ARCH)
    }

    /// Returns whether building for this platform here is a cross build.
    pub(crate) fn is_cross(&self) -> bool {
        self.triplet != PlatformSpec::host_triplet()
    }

    /// Returns the CPU of the triplet (`aarch64`), as qemu names it.
    pub fn cpu(&self) -> &str {
        self.triplet.split('-').next().unwrap_or(&self.triplet)
    }
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
    /// The os-release `ID` of bases of this suite.
    #[serde(default = "debian")]
    pub os: String,
    pub mirror: String,
    /// Mirrors of platforms `mirror` does not carry (Ubuntu's arm64 is on ports.ubuntu.com).
    #[serde(default)]
    pub platform_mirrors: BTreeMap<String, String>,
    /// An end-of-life suite moved to the archive host: its `mirror` wins over the apt
    /// sources a base image still names (they no longer serve it).
    #[serde(default)]
    pub archived: bool,
    pub component: String,
    pub packages: Vec<String>,
    /// The distribution's archive keyrings the suite's Release is signed with (binary
    /// OpenPGP keyrings, concatenated for `gpgv`): what `--archive-keyring` checks against.
    #[serde(default)]
    pub keyrings: Vec<String>,
    /// The package that installs [`SuiteSpec::keyrings`], for the error when they are missing.
    #[serde(default)]
    pub keyring_package: Option<String>,
}

fn debian() -> String {
    "debian".into()
}

impl SuiteSpec {
    /// Returns the suite's mirror for `platform` (`linux/arm64`).
    pub fn mirror_for(&self, platform: &str) -> &str {
        self.platform_mirrors
            .get(platform)
            .map_or(&self.mirror, String::as_str)
    }

    /// Returns the suite's archive keyrings as one keyring file in `dir` (named by their
    /// digest); an error names the package to install when one is missing.
    pub(crate) fn archive_keyring(&self, suite: &str, dir: &Path) -> Result<std::path::PathBuf> {
        if self.keyrings.is_empty() {
            anyhow::bail!("images/debian.toml names no archive keyring for {suite}");
        }
        let mut all = Vec::new();
        for k in &self.keyrings {
            let bytes =
                std::fs::read(k).with_context(|| {
                    format!(
                    "--archive-keyring: {k} (the {suite} archive keyring) is missing; install {}",
                    self.keyring_package.as_deref().unwrap_or("the distribution's keyring package")
                )
                })?;
            all.extend(bytes);
        }
        let hex = crate::digest::Sha256Hex::of_bytes(&all);
        let path = dir.join(format!(
            "archive-keyring-{suite}-{}.gpg",
            &hex.as_str()[..16]
        ));
        if !path.is_file() {
            std::fs::create_dir_all(dir)?;
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::fs::write(tmp.path(), &all)?;
            tmp.persist(&path)?;
        }
        Ok(path)
    }
}

impl DebianSpec {
    pub fn load(root: &Path) -> Result<DebianSpec> {
        load_toml(&root.join("images/debian.toml"))
    }

    pub fn suite(&self, name: &str) -> Result<&SuiteSpec> {
        match self.suites.get(name) {
            Some(s) => Ok(s),
            None => bail!(
                "unknown suite `{name}`; images/debian.toml knows: {}",
                self.suites.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Returns `name` (`linux/arm64`), or an error listing the platforms.
    pub fn platform(&self, name: &str) -> Result<&PlatformSpec> {
        self.platforms.get(name).with_context(|| {
            format!(
                "no platform {name} in images/debian.toml: the platforms are {}",
                self.platforms
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// `images/flink-<name>.toml`: one official Flink image to build on. `name` is the file
/// stem (`--flink <name>`), usually the Flink version.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlinkSpec {
    #[serde(skip_deserializing)]
    pub name: String,
    pub flink: String,
    /// The official image's tag; the profiled image is tagged `<tag>-jemalloc-<v>-prof`.
    pub tag: String,
    pub base: String,
    pub scala: String,
    pub java: String,
    pub java_home: String,
    pub flink_home: String,
    pub user: String,
    pub uid: u32,
    /// `<os-release ID> <VERSION_CODENAME>` of the base, as documented upstream.
    pub distribution: String,
    /// Extra `NAME=value` environment of the profiled image (e.g. `DISABLE_JEMALLOC=true`
    /// where the official entrypoint would preload the distribution's own jemalloc).
    #[serde(default)]
    pub env: Vec<String>,
    /// The platforms the official image's index has (`publish` builds these of its own):
    /// linux/amd64 when absent.
    #[serde(default = "amd64_only")]
    pub platforms: Vec<String>,
}

fn amd64_only() -> Vec<String> {
    vec![DEFAULT_PLATFORM.to_string()]
}

impl FlinkSpec {
    /// Returns the default spec directory: `images/`.
    pub(crate) fn default_dir(root: &Path) -> PathBuf {
        root.join("images")
    }

    /// Returns the spec directory a command uses: its `--specs`, else `images/`.
    pub(crate) fn dir_or_default(specs: Option<&Path>) -> PathBuf {
        specs.map_or_else(
            || FlinkSpec::default_dir(&crate::project::root()),
            Path::to_path_buf,
        )
    }

    fn path_in(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("flink-{name}.toml"))
    }

    /// Returns the spec `name` in `dir`, or an error listing the known ones.
    pub(crate) fn load_in(dir: &Path, name: &str) -> Result<FlinkSpec> {
        let path = FlinkSpec::path_in(dir, name);
        if !path.is_file() {
            let known: Vec<String> = FlinkSpec::all_in(dir)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            bail!(
                "no image spec `{name}` ({}); known: {}",
                path.display(),
                known.join(", ")
            );
        }
        let mut spec: FlinkSpec = load_toml(&path)?;
        spec.name = name.to_string();
        for e in &spec.env {
            if !e.contains('=') {
                bail!("{}: env entry `{e}` is not NAME=value", path.display());
            }
        }
        Ok(spec)
    }

    /// Returns all specs in `dir`, by Flink version, then name.
    pub(crate) fn all_in(dir: &Path) -> Result<Vec<FlinkSpec>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            let file = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(name) = file
                .strip_prefix("flink-")
                .and_then(|f| f.strip_suffix(".toml"))
            {
                out.push(FlinkSpec::load_in(dir, name)?);
            }
        }
        out.sort_by_key(|s| {
            (
                s.flink
                    .split('.')
                    .map(|p| p.parse::<u32>().unwrap_or(0))
                    .collect::<Vec<_>>(),
                s.name.clone(),
            )
        });
        Ok(out)
    }

    /// Returns the profiled image's tag.
    pub(crate) fn output_tag(&self, jemalloc_version: &str) -> String {
        format!("{}-jemalloc-{jemalloc_version}-prof", self.tag)
    }
}

/// Reads `path`, a TOML file of this checkout (`what` says which, for a read error); a parse
/// error names its line and says how to restore the file.
pub(crate) fn read_checked_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|r| text[..r.start.min(text.len())].lines().count().max(1));
        let name = path
            .strip_prefix(crate::project::root())
            .unwrap_or(path)
            .display()
            .to_string();
        anyhow::anyhow!(
            "{}{}: {}: fix the file (`git checkout {name}` restores it)",
            path.display(),
            line.map(|l| format!(" line {l}")).unwrap_or_default(),
            e.message()
        )
    })
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
    fn archive_keyrings_are_named_and_combined() {
        let d = DebianSpec::load(&crate::project::root()).unwrap();
        for (name, suite) in &d.suites {
            assert!(
                !suite.keyrings.is_empty(),
                "{name} names no archive keyring"
            );
            assert!(suite.keyring_package.is_some(), "{name}");
        }
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a.gpg"), t.path().join("b.gpg"));
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"second").unwrap();
        let mut suite = d.suite("buster").unwrap().clone();
        suite.keyrings = vec![a.display().to_string(), b.display().to_string()];
        let k = suite
            .archive_keyring("buster", &t.path().join("k"))
            .unwrap();
        assert_eq!(std::fs::read(&k).unwrap(), b"firstsecond");
        assert_eq!(
            suite
                .archive_keyring("buster", &t.path().join("k"))
                .unwrap(),
            k
        );
        suite.keyrings.push("/nonexistent/keyring.gpg".into());
        let e = suite.archive_keyring("buster", t.path()).unwrap_err();
        assert!(
            format!("{e:#}").contains("install debian-archive-keyring"),
            "{e:#}"
        );
    }

    #[test]
    fn every_spec_names_known_platforms_amd64_first() {
        let root = crate::project::root();
        let debian = DebianSpec::load(&root).unwrap();
        for s in FlinkSpec::all_in(&FlinkSpec::default_dir(&root)).unwrap() {
            assert_eq!(s.platforms[0], DEFAULT_PLATFORM, "{}", s.name);
            for p in &s.platforms {
                debian.platform(p).unwrap();
            }
            // apache/flink-docker: arm64v8 from 1.14.3 on.
            let arm64 = s.platforms.iter().any(|p| p == "linux/arm64");
            let old = ["1.10.", "1.11.", "1.12.", "1.13."]
                .iter()
                .any(|v| s.flink.starts_with(v));
            assert_eq!(arm64, !old, "{}", s.name);
        }
    }

    #[test]
    fn committed_specs_load() {
        let root = crate::project::root();
        let j = JemallocSpec::load_release(&root, None).unwrap();
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
        assert!(j.default && j.name_suffix().is_empty());
        let n = JemallocSpec::load_release(&root, Some("5.3.0")).unwrap();
        assert_eq!(n.configure_flags, j.configure_flags);
        assert_eq!(n.name_suffix(), "-jemalloc-5.3.0");
        // 5.3.0 has jeprof --collapsed upstream: its patch is not carried.
        let names: Vec<String> = n
            .patch_files(&root)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|p| !p.contains("collapsed")), "{names:?}");
        assert!(!names.is_empty());
        let all: Vec<String> = JemallocSpec::all(&root)
            .unwrap()
            .into_iter()
            .map(|s| s.version)
            .collect();
        assert_eq!(all, ["5.2.1", "5.3.0"]);
        let err = JemallocSpec::load_release(&root, Some("5.1.0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the releases are 5.2.1, 5.3.0"), "{err}");
        let d = DebianSpec::load(&root).unwrap();
        assert!(d
            .suite("bullseye")
            .unwrap()
            .packages
            .contains(&"libgcc-s1".to_string()));
        let noble = d.suite("noble").unwrap();
        assert_eq!(
            noble.mirror_for("linux/arm64"),
            "http://ports.ubuntu.com/ubuntu-ports"
        );
        assert_eq!(noble.mirror_for(DEFAULT_PLATFORM), noble.mirror);
        assert_eq!(
            d.suite("bookworm").unwrap().mirror_for("linux/arm64"),
            "http://deb.debian.org/debian"
        );
        let arm = d.platform("linux/arm64").unwrap();
        assert_eq!(
            (arm.arch.as_str(), arm.triplet.as_str(), arm.cpu()),
            ("arm64", "aarch64-linux-gnu", "aarch64")
        );
        assert_eq!(arm.configure_flags, ["--with-lg-page=16"]);
        assert_eq!(d.platform(DEFAULT_PLATFORM).unwrap().arch, "amd64");
        // What is built when no platform is named: this machine's, which is not cross.
        assert!(!d.platform(native_platform()).unwrap().is_cross());
        let err = d.platform("linux/s390x").unwrap_err().to_string();
        assert!(
            err.contains("the platforms are linux/amd64, linux/arm64"),
            "{err}"
        );
        let err = d.suite("sid").unwrap_err().to_string();
        assert!(err.contains("bullseye") && err.contains("buster"), "{err}");
        assert!(d.suite("buster").unwrap().archived && !d.suite("bullseye").unwrap().archived);
        let f = FlinkSpec::load_in(&FlinkSpec::default_dir(&root), "1.10.1").unwrap();
        assert_eq!(f.base, "docker.io/library/flink:1.10.1-scala_2.12");
        assert_eq!((f.uid, f.flink_home.as_str()), (9999, "/opt/flink"));
        assert_eq!(
            f.output_tag("5.2.1"),
            "1.10.1-scala_2.12-jemalloc-5.2.1-prof"
        );
        let err = FlinkSpec::load_in(&FlinkSpec::default_dir(&root), "0.9")
            .unwrap_err()
            .to_string();
        assert!(err.contains("known: 1.10.1, 1.10.3"), "{err}");
        for s in FlinkSpec::all_in(&FlinkSpec::default_dir(&root)).unwrap() {
            assert!(
                s.base.ends_with(&format!(":{}", s.tag)),
                "{}: the tag is the base's tag",
                s.name
            );
            assert!(s.tag.starts_with(&s.flink), "{}", s.name);
        }
    }
}
