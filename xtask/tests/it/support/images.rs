//! The profiled fixture images the heavy tests share, built once per `xtask` binary into
//! the fixtures cache, and the inputs they are built from, served on loopback.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::archive::sha256_hex;
use super::cli::{stderr, xtask};
use super::http::Server;

/// The profiled image of the tests: built by this `xtask` binary from the fixture Flink base
/// (pushed into a loopback registry) with the loopback Debian and jemalloc fixtures, as an
/// OCI layout. Built once per binary into the fixtures cache (`profiled-<sha256 of the
/// binary>/`, under a file lock) and shared by every test and test binary, with the lock,
/// cache and arguments of its build so that [`rebuild_profiled_image`] can run `image` again
/// warm and offline.
pub fn profiled_image() -> PathBuf {
    profiled_dir(Base::Flink1).join("layout")
}

/// [`profiled_image`] for Flink 2.2.1: the bookworm/OpenJDK 17 stand-in with the bookworm
/// fixture repository, cached the same way.
pub fn profiled_image_flink2() -> PathBuf {
    profiled_dir(Base::Flink2).join("layout")
}

/// The fixture base a profiled image is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Flink 1.10.3 on bullseye (OpenJDK 11, gosu).
    Flink1,
    /// Flink 2.2.1 on bookworm (OpenJDK 17, USER flink).
    Flink2,
}

impl Base {
    fn cache_prefix(self) -> &'static str {
        match self {
            Base::Flink1 => "profiled-",
            Base::Flink2 => "profiled2-",
        }
    }
}

fn profiled_dir(base: Base) -> PathBuf {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_xtask")).expect("reading the xtask binary");
    let fixtures = harness::fixtures::fixtures_dir();
    std::fs::create_dir_all(&fixtures).unwrap();
    let prefix = base.cache_prefix();
    let dir = fixtures.join(format!("{prefix}{}", &sha256_hex(&bin)[..16]));
    let lock = std::fs::File::create(fixtures.join(format!(".{prefix}lock"))).unwrap();
    lock.lock().unwrap();
    if dir.join("args.json").is_file() {
        return dir;
    }
    // Images of other binaries, unused for a day.
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in std::fs::read_dir(&fixtures).unwrap().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > day);
        if e.file_name().to_string_lossy().starts_with(prefix) && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{prefix}"))
        .tempdir_in(&fixtures)
        .unwrap();
    let args = build_profiled_image(base, &dir, tmp.path());
    std::fs::write(
        tmp.path().join("args.json"),
        serde_json::to_string(&args).unwrap(),
    )
    .unwrap();
    std::fs::rename(tmp.keep(), &dir).unwrap();
    dir
}

/// `cargo xtask image` again with the arguments of [`profiled_image`]'s build plus `extra`,
/// `--locked`, on its warm cache: no network, no compile.
pub fn rebuild_profiled_image(extra: &[&str]) -> Output {
    let dir = profiled_dir(Base::Flink1);
    let args: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("args.json")).unwrap()).unwrap();
    let mut all: Vec<String> = args;
    all.push("--locked".into());
    // A flag of `extra` the build had (`--output`, `--lock-file`) takes the new value; a
    // flag the build had not is added, as often as `extra` gives it.
    let built = all.len();
    let mut rest = extra.iter();
    while let Some(&flag) = rest.next() {
        match all[..built].iter().position(|a| a == flag) {
            Some(i) if flag.starts_with("--") && i + 1 < all.len() => {
                all[i + 1] = rest.next().expect("a value for the flag").to_string();
            }
            _ => all.push(flag.to_string()),
        }
    }
    xtask(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

/// What `cargo xtask image` builds the test image from, served on loopback while this lives:
/// the fixture Flink base in a real registry, the signed Debian fixture repository and the
/// jemalloc stand-in; `args` are the `image` arguments naming them (no paths of a run).
pub struct ImageInputs {
    /// Kept for its life: the registry serving the base stops when it drops.
    _registry: harness::fixtures::registry::Registry,
    /// Kept for its life: the server of the repository and the stand-in.
    _files: Server,
    pub args: Vec<String>,
}

impl ImageInputs {
    pub fn start() -> ImageInputs {
        ImageInputs::start_for(Base::Flink1)
    }

    pub fn start_for(base: Base) -> ImageInputs {
        ImageInputs::start_with(base, "5.2.1")
    }

    /// The inputs with jemalloc `version`'s stand-in (`--jemalloc <version>` when it is not
    /// the default).
    pub fn start_with(base: Base, version: &str) -> ImageInputs {
        let (suite, flink) = match base {
            Base::Flink1 => ("bullseye", "1.10.3"),
            Base::Flink2 => ("bookworm", harness::fixtures::flink2_base::FLINK_VERSION),
        };
        let repo =
            harness::fixtures::debian_repo_with_tools(suite).expect("fixture Debian repository");
        let standin =
            harness::fixtures::jemalloc_standin_for(version).expect("fixture jemalloc source");
        let registry = harness::fixtures::registry::Registry::start().expect("a loopback registry");
        let addr = registry.url().trim_start_matches("http://").to_string();
        let repo_tag = format!("fixtures/flink:{flink}");
        match base {
            Base::Flink1 => harness::fixtures::flink_base::push_flink_base(&addr, &repo_tag),
            Base::Flink2 => harness::fixtures::flink2_base::push_flink2_base(&addr, &repo_tag),
        }
        .expect("pushing the fixture base");
        let files = Server::serve(vec![
            ("/debian", repo.dir.clone()),
            ("/jemalloc.tar.bz2", standin.tarball.clone()),
        ]);
        let mut args = [
            "image".to_string(),
            "--flink".into(),
            flink.into(),
            "--base".into(),
            format!("{addr}/{repo_tag}"),
            "--plain-http".into(),
            "--mirror".into(),
            files.url("debian"),
            "--keyring".into(),
            repo.keyring.display().to_string(),
            "--url".into(),
            files.url("jemalloc.tar.bz2"),
            "--sha256".into(),
            standin.sha256.as_str().to_string(),
        ]
        .to_vec();
        if version != "5.2.1" {
            args.extend(["--jemalloc".to_string(), version.to_string()]);
        }
        ImageInputs {
            _registry: registry,
            _files: files,
            args,
        }
    }

    /// The arguments with a run's lock file, cache and output under `dir`.
    pub fn args_in(&self, dir: &Path) -> Vec<String> {
        let mut a = self.args.clone();
        for (flag, name) in [
            ("--lock-file", "flink.lock"),
            ("--cache-dir", "cache"),
            ("--output", "layout"),
        ] {
            a.push(flag.into());
            a.push(dir.join(name).display().to_string());
        }
        a
    }
}

/// Builds the profiled image with paths under `work` and returns the `image` arguments
/// with those paths under `dest` (where `work` will be renamed to).
fn build_profiled_image(base: Base, dest: &Path, work: &Path) -> Vec<String> {
    let inputs = ImageInputs::start_for(base);
    let build = inputs.args_in(work);
    let out = xtask(&build.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "image failed: {}", stderr(&out));
    inputs.args_in(dest)
}
