//! Test fixtures, fetched by ordinary clients (`apt-get`, `cargo`) into a cache outside the
//! repository and reused: a local Debian repository for a suite's sysroot packages, and a
//! jemalloc 5.2.1 source tarball made from the `tikv-jemalloc-sys` crate. Tests serve them
//! over loopback; nothing here is used by the product commands.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::digest::Sha256Hex;
use crate::progress::Step;
use crate::project;
use crate::spec::DebianSpec;
use crate::unpack;

/// The crate whose `jemalloc/` tree and generated `configure` stand in for the release.
pub const STANDIN_CRATE: &str = "tikv-jemalloc-sys";
pub const STANDIN_VERSION: &str = "=0.4.3";

#[derive(Debug, Clone, clap::Args)]
pub struct FixturesArgs {
    /// Debian suites to mirror locally (their sysroot packages from images/debian.toml).
    #[arg(long, default_value = "bullseye", value_delimiter = ',')]
    pub suite: Vec<String>,
}

pub fn run(args: FixturesArgs) -> Result<()> {
    for suite in &args.suite {
        println!("debian-repo {suite}: {}", debian_repo(suite)?.display());
    }
    let s = jemalloc_standin()?;
    println!(
        "jemalloc stand-in: {} sha256 {}",
        s.tarball.display(),
        s.sha256
    );
    Ok(())
}

/// `$FLINK_JEMALLOC_FIXTURES`, or `~/.cache/flink-jemalloc/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLINK_JEMALLOC_FIXTURES").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/flink-jemalloc/fixtures")
}

/// Holds an exclusive lock on the fixtures directory (tests run in parallel).
fn lock() -> Result<std::fs::File> {
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = std::fs::File::create(dir.join(".lock"))?;
    f.lock().context("locking the fixtures directory")?;
    Ok(f)
}

/// A local Debian repository (`dists/<suite>/…`, `pool/main/…`, a `Release` with SHA256
/// sums) holding the suite's sysroot packages, downloaded with `apt-get download` through a
/// private apt configuration and indexed with `dpkg-scanpackages`.
pub fn debian_repo(suite: &str) -> Result<PathBuf> {
    let _lock = lock()?;
    let dir = fixtures_dir().join(format!("debian-{suite}"));
    if dir.join("dists").join(suite).join("Release").is_file() {
        return Ok(dir);
    }
    let debian = DebianSpec::load(&project::root())?;
    let spec = debian.suite(suite)?;
    let step = Step::start(format!(
        "fixture: local Debian {suite} repository (apt-get download)"
    ));
    let parent = fixtures_dir();
    let tmp = tempfile::Builder::new()
        .prefix(".repo-")
        .tempdir_in(&parent)?;
    let t = tmp.path();
    let apt = t.join("apt");
    for d in ["state/lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    std::fs::write(apt.join("status"), "")?;
    std::fs::write(
        apt.join("sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {suite} {}\n",
            spec.mirror, spec.component
        ),
    )?;
    let a = |k: &str, v: &Path| format!("-oDir::{k}={}", v.display());
    let opts = [
        a("Etc::SourceList", &apt.join("sources.list")),
        "-oDir::Etc::SourceParts=/dev/null".to_string(),
        a("State", &apt.join("state")),
        a("Cache", &apt.join("cache")),
        a("State::status", &apt.join("status")),
        "-oAPT::Sandbox::User=root".to_string(),
        "-oAcquire::Languages=none".to_string(),
    ];
    let sh = Shell::new()?;
    let o = &opts;
    cmd!(sh, "apt-get -q {o...} update")
        .quiet()
        .ignore_stdout()
        .run()
        .context("apt-get update for the fixture repository (is apt-get available?)")?;
    let pool = t.join("repo/pool/main");
    std::fs::create_dir_all(&pool)?;
    {
        let _d = sh.push_dir(&pool);
        let pkgs = &spec.packages;
        cmd!(sh, "apt-get -q {o...} download {pkgs...}")
            .quiet()
            .ignore_stdout()
            .run()
            .context("apt-get download of the sysroot packages")?;
    }
    // apt-get names files with a URL-escaped epoch (`1%3a4.4`); drop it so URLs stay plain.
    for e in std::fs::read_dir(&pool)? {
        let p = e?.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(i) = name.find("%3a") {
            let start = name[..i].rfind('_').map_or(0, |u| u + 1);
            let plain = format!("{}{}", &name[..start], &name[i + 3..]);
            std::fs::rename(&p, pool.join(plain))?;
        }
    }
    let repo = t.join("repo");
    let bin = format!("{}/binary-{}", spec.component, debian.arch);
    let index_dir = repo.join("dists").join(suite).join(&bin);
    std::fs::create_dir_all(&index_dir)?;
    let packages = {
        let _d = sh.push_dir(&repo);
        let arch = &debian.arch;
        cmd!(sh, "dpkg-scanpackages --arch {arch} pool /dev/null")
            .quiet()
            .ignore_stderr()
            .read()
            .context("dpkg-scanpackages (apt-get install dpkg-dev)")?
            + "\n"
    };
    std::fs::write(index_dir.join("Packages"), &packages)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, packages.as_bytes())?;
    let packages_gz = gz.finish()?;
    std::fs::write(index_dir.join("Packages.gz"), &packages_gz)?;
    let mut release = format!(
        "Origin: flink-jemalloc fixture\nSuite: {suite}\nArchitectures: {}\nComponents: {}\nSHA256:\n",
        debian.arch, spec.component
    );
    for (name, data) in [
        ("Packages", packages.as_bytes()),
        ("Packages.gz", &packages_gz[..]),
    ] {
        writeln!(
            release,
            " {} {} {bin}/{name}",
            Sha256Hex::of_bytes(data),
            data.len()
        )?;
    }
    std::fs::write(repo.join("dists").join(suite).join("Release"), release)?;
    unpack::replace_dir(repo, &dir)?;
    step.done(dir.display().to_string());
    Ok(dir)
}

/// A jemalloc 5.2.1 source tarball assembled from the `tikv-jemalloc-sys` crate.
#[derive(Debug, Clone)]
pub struct Standin {
    pub tarball: PathBuf,
    pub sha256: Sha256Hex,
}

/// Fetches `tikv-jemalloc-sys =0.4.3` with `cargo fetch` and repacks it deterministically
/// as `jemalloc-5.2.1/` (the crate's `jemalloc/` tree, plus `configure` and `VERSION` from
/// its `configure/` directory) in a `.tar.bz2`, like the release tarball.
pub fn jemalloc_standin() -> Result<Standin> {
    let _lock = lock()?;
    let tarball = fixtures_dir().join("jemalloc-5.2.1-standin.tar.bz2");
    if !tarball.is_file() {
        let step = Step::start(format!(
            "fixture: jemalloc source from {STANDIN_CRATE} {STANDIN_VERSION} (cargo fetch)"
        ));
        let krate = fetch_crate()?;
        let tmp = tempfile::Builder::new()
            .prefix(".standin-")
            .tempfile_in(fixtures_dir())?;
        repack_standin(&krate, tmp.as_file())?;
        tmp.persist(&tarball)?;
        step.done(tarball.display().to_string());
    }
    let sha256 = Sha256Hex::of_file(&tarball)?;
    Ok(Standin { tarball, sha256 })
}

fn fetch_crate() -> Result<PathBuf> {
    let proj = fixtures_dir().join("standin-crate");
    std::fs::create_dir_all(proj.join("src"))?;
    std::fs::write(
        proj.join("Cargo.toml"),
        format!(
            "[package]\nname = \"standin\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n\n\
             [dependencies]\n{STANDIN_CRATE} = \"{STANDIN_VERSION}\"\n"
        ),
    )?;
    std::fs::write(proj.join("src/lib.rs"), "")?;
    let sh = Shell::new()?;
    let manifest = proj.join("Cargo.toml");
    cmd!(sh, "cargo fetch --manifest-path {manifest}")
        .quiet()
        .run()
        .context("cargo fetch of the jemalloc stand-in crate")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    let cache = cargo_home.join("registry/cache");
    for index in
        std::fs::read_dir(&cache).with_context(|| format!("reading {}", cache.display()))?
    {
        for f in std::fs::read_dir(index?.path())? {
            let p = f?.path();
            let n = p.file_name().unwrap().to_string_lossy();
            if n.starts_with("tikv-jemalloc-sys-0.4.3") && n.ends_with(".crate") {
                return Ok(p);
            }
        }
    }
    bail!(
        "cargo fetch did not leave {STANDIN_CRATE} 0.4.3 in {}",
        cache.display()
    )
}

fn repack_standin(krate: &Path, out: &std::fs::File) -> Result<()> {
    let mut entries: Vec<(String, u32, Vec<u8>)> = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(krate)?));
    for e in ar.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path()?.to_string_lossy().into_owned();
        let Some((_, rest)) = path.split_once('/') else {
            continue;
        };
        let name = if let Some(r) = rest.strip_prefix("jemalloc/") {
            r.to_string()
        } else if rest == "configure/configure" || rest == "configure/VERSION" {
            rest["configure/".len()..].to_string()
        } else {
            continue;
        };
        let mode = if name == "configure" {
            0o755
        } else {
            e.header().mode()?
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        entries.push((format!("jemalloc-5.2.1/{name}"), mode, data));
    }
    if !entries
        .iter()
        .any(|(n, _, _)| n == "jemalloc-5.2.1/configure")
    {
        bail!("{} has no configure/configure", krate.display());
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let bz = bzip2::write::BzEncoder::new(out, bzip2::Compression::best());
    let mut tar = tar::Builder::new(bz);
    for (name, mode, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &name, &data[..])?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}
