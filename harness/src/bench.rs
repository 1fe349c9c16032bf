//! `cargo harness bench`: the speed and size numbers the README quotes, measured on the test
//! fixtures (jemalloc stand-in source, local bullseye repository, fixture Flink base in a
//! loopback registry), so it runs without the internet.
//!
//! - bare build: `./configure && make -j && make install` of the same source, no sysroot,
//!   no patches, no gates;
//! - cold `build`: fresh cache (sysroot, patches, configure, make, install, gates, smoke);
//! - cold and warm `image`: pull, inspect, build, resolve and unpack jeprof's tools, layers,
//!   write an OCI layout; warm = lock and cache present;
//! - layer write throughput (tar + gzip of the installed tree) and the layer's size;
//! - the jeprof tools layer's size;
//! - with a Docker engine, the usual Dockerfile recipe on the same base and the same
//!   jemalloc source (`docker build`, cold with `--no-cache` and warm), and what its
//!   `apt-get install --no-install-recommends` of the tools adds;
//! - with `--first-run`, a cold `cargo build -p xtask` in a fresh target directory: what a
//!   new user's first `cargo xtask …` waits for.
//!
//!
//! `cargo xtask bench --profiling-cost` measures something else: what profiling costs.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use xshell::{cmd, Shell};

use crate::fixtures;
use xtask::build::{self, BuildArgs};
use xtask::fetch::SourceArgs;
use xtask::image;
use xtask::oci;
use xtask::unpack::{self, AbsoluteLinks};

/// `cargo harness bench`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Layer writes to average over.
    #[arg(long, default_value_t = 5)]
    pub layer_rounds: u32,
    /// Also time a cold `cargo build -p xtask` in a fresh target directory (minutes).
    #[arg(long)]
    pub first_run: bool,
}

/// The rows of the README's table, as they are measured.
type Rows = Vec<(String, String)>;

/// Runs every measurement, then prints the table.
pub fn run(args: BenchArgs) -> Result<()> {
    let repo = fixtures::debian_repo_with_tools("bullseye")?;
    let standin = fixtures::jemalloc_standin()?;
    let work = tempfile::tempdir()?;
    let w = work.path();
    let mirror = format!("file://{}", repo.dir.display());
    let source = SourceArgs {
        jemalloc: None,
        url: Some(format!("file://{}", standin.tarball.display())),
        sha256: Some(standin.sha256.to_string()),
    };
    let mut rows: Rows = Vec::new();
    let bare_secs = bare_build(w, &standin, &mut rows)?;
    let tree = builds(w, &repo, &source, &mirror, bare_secs, &mut rows)?;
    layer_write(&tree, args.layer_rounds, &mut rows)?;
    let cold_image = images(w, &repo, source, &mirror, &mut rows)?;
    if xtask::docker::engine_answers() {
        dockerfile_recipe(w, &standin, cold_image, &mut rows)?;
    } else {
        xtask::progress::note("no Docker engine answers: the Dockerfile recipe is not measured");
    }
    if args.first_run {
        first_run(w, &mut rows)?;
    }
    println!("| measurement | result |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    Ok(())
}

/// Runs `./configure && make -j && make install` of the same source by hand: the baseline.
fn bare_build(w: &Path, standin: &fixtures::Standin, rows: &mut Rows) -> Result<f64> {
    let bare = w.join("bare");
    let file = std::fs::File::open(&standin.tarball)?;
    unpack::unpack_fresh(unpack::decompressed(file)?, &bare, AbsoluteLinks::Refuse)?;
    let src = bare.join("jemalloc-5.2.1");
    let sh = Shell::new()?;
    let jobs = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let destdir = format!("DESTDIR={}", w.join("bare-install").display());
    let t = Instant::now();
    {
        let _d = sh.push_dir(&src);
        cmd!(sh, "./configure --prefix=/opt/jemalloc --enable-prof --enable-stats --enable-debug --enable-fill")
            .quiet()
            .ignore_stdout()
            .run()
            .context("bare configure")?;
        cmd!(sh, "make -j{jobs}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .context("bare make")?;
        cmd!(
            sh,
            "make install_bin install_include install_lib_shared install_lib_pc {destdir}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .context("bare make install")?;
    }
    let bare_secs = t.elapsed().as_secs_f64();
    rows.push((
        "bare `./configure && make -j && make install`".into(),
        format!("{bare_secs:.1} s"),
    ));

    Ok(bare_secs)
}

/// Runs `cargo xtask build`, cold with a fresh cache and warm; returns the installed tree.
fn builds(
    w: &Path,
    repo: &fixtures::ToolsRepo,
    source: &SourceArgs,
    mirror: &str,
    bare_secs: f64,
    rows: &mut Rows,
) -> Result<PathBuf> {
    let cache = w.join("cache");
    let build_args = BuildArgs {
        keyring: Some(repo.keyring.clone()),
        ..BuildArgs::new(source.clone(), "bullseye", mirror, &cache)
    };
    let t = Instant::now();
    let tree = build::jemalloc(&build_args)?.dir;
    let cold = t.elapsed().as_secs_f64();
    rows.push((
        "cold `cargo xtask build` (sysroot, patches, gates, smoke run)".into(),
        format!("{cold:.1} s"),
    ));
    rows.push((
        "overhead over the bare build".into(),
        format!(
            "{:.1} s ({:+.0}%)",
            cold - bare_secs,
            (cold / bare_secs - 1.0) * 100.0
        ),
    ));
    let t = Instant::now();
    build::jemalloc(&build_args)?;
    rows.push((
        "warm `cargo xtask build` (up to date)".into(),
        format!("{:.2} s", t.elapsed().as_secs_f64()),
    ));

    Ok(tree)
}

/// Measures tar + gzip of the installed tree, `rounds` times: throughput and size.
fn layer_write(tree: &Path, rounds: u32, rows: &mut Rows) -> Result<()> {
    let t = Instant::now();
    let mut layer = None;
    for _ in 0..rounds {
        layer = Some(oci::layer(oci::layer_tar(tree, "/opt/jemalloc", 0)?));
    }
    let per = t.elapsed().as_secs_f64() / rounds as f64;
    let layer = layer.expect("at least one round");
    let tar_len = oci::layer_tar(tree, "/opt/jemalloc", 0)?.len() as f64;
    rows.push((
        "layer write (tar + gzip of /opt/jemalloc)".into(),
        format!(
            "{:.0} ms, {:.1} MB/s uncompressed",
            per * 1000.0,
            tar_len / per / 1e6
        ),
    ));
    rows.push((
        "jemalloc layer size".into(),
        format!(
            "{:.2} MB compressed, {:.2} MB uncompressed",
            layer.blob.data.len() as f64 / 1e6,
            tar_len / 1e6
        ),
    ));

    Ok(())
}

/// Measures `cargo xtask image`, cold and warm, against the fixture base in a loopback
/// registry, and the tools layer's size.
fn images(
    w: &Path,
    repo: &fixtures::ToolsRepo,
    source: SourceArgs,
    mirror: &str,
    rows: &mut Rows,
) -> Result<f64> {
    let registry = fixtures::registry::Registry::start()?;
    let addr = registry.url().trim_start_matches("http://").to_string();
    fixtures::flink_base::push_flink_base(&addr, "bench/flink:1.10.3")?;
    let request = image::Request {
        base: Some(format!("{addr}/bench/flink:1.10.3")),
        plain_http: true,
        mirror: Some(mirror.to_string()),
        output: Some(w.join("layout")),
        lock_file: Some(w.join("flink.lock")),
        source,
        cache_dir: Some(w.join("image-cache")),
        keyring: Some(repo.keyring.clone()),
        specs: None,
        source_date_epoch: 0,
        ..image::Request::new("1.10.3")?
    };
    let t = Instant::now();
    image::make(&request)?;
    let cold = t.elapsed().as_secs_f64();
    rows.push((
        "cold `cargo xtask image` (pull 250 MB base, build, layer, write)".into(),
        format!("{cold:.1} s"),
    ));
    tools_layer_size(&w.join("layout"), rows)?;
    let t = Instant::now();
    image::make(&image::Request {
        locked: true,
        output: Some(w.join("layout-warm")),
        ..request
    })?;
    let warm = t.elapsed().as_secs_f64();
    rows.push((
        "warm `cargo xtask image --locked` (no network, no compile)".into(),
        format!("{warm:.2} s"),
    ));
    Ok(cold)
}

/// Measures the size of the jeprof tools layer: the last layer of the image in `layout`.
fn tools_layer_size(layout: &Path, rows: &mut Rows) -> Result<()> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .context("index without manifest")?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
        layout.join("blobs/sha256").join(oci::hex_of(mdigest)),
    )?)?;
    let tools = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .context("manifest without layers")?;
    let blob = layout
        .join("blobs/sha256")
        .join(oci::hex_of(tools["digest"].as_str().unwrap_or_default()));
    let mut raw = 0u64;
    let mut dec = flate2::read::GzDecoder::new(std::fs::File::open(&blob)?);
    raw += std::io::copy(&mut dec, &mut std::io::sink())?;
    rows.push((
        "jeprof tools layer size (binutils, graphviz, perl, file + deps)".into(),
        format!(
            "{:.1} MB compressed, {:.1} MB uncompressed",
            std::fs::metadata(&blob)?.len() as f64 / 1e6,
            raw as f64 / 1e6
        ),
    ));
    Ok(())
}

/// The usual recipe, on the same base and source: a multi-stage Dockerfile that builds
/// jemalloc in a builder stage and installs jeprof's tools with apt in the final one.
const DOCKERFILE: &str = r#"FROM localhost/flink-jemalloc-bench-base:1.10.3 AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ make bzip2 \
 && rm -rf /var/lib/apt/lists/*
COPY jemalloc-5.2.1.tar.bz2 /tmp/
RUN cd /tmp && tar xjf jemalloc-5.2.1.tar.bz2 && cd jemalloc-5.2.1 \
 && ./configure --prefix=/opt/jemalloc --enable-prof --enable-stats --enable-debug --enable-fill \
 && make -j"$(nproc)" && make install_bin install_include install_lib_shared

FROM localhost/flink-jemalloc-bench-base:1.10.3
RUN apt-get update && apt-get install -y --no-install-recommends binutils graphviz perl file \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/jemalloc /opt/jemalloc
ENV JEMALLOC_PATH=/opt/jemalloc/lib/libjemalloc.so.2
"#;

/// Measures `docker build` of [`DOCKERFILE`], cold (`--no-cache`) and warm, and the size of
/// its apt layer; the images are removed afterwards.
fn dockerfile_recipe(
    w: &Path,
    standin: &fixtures::Standin,
    cold_image: f64,
    rows: &mut Rows,
) -> Result<()> {
    let base = "localhost/flink-jemalloc-bench-base:1.10.3";
    let archive = w.join("base.docker.tar");
    oci::layout_to_docker_archive(&fixtures::flink_base::flink_base_oci()?, &archive, base, 0)?;
    xtask::docker::load(&archive)?;
    let ctx = w.join("docker-context");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
    std::fs::copy(&standin.tarball, ctx.join("jemalloc-5.2.1.tar.bz2"))?;
    let tag = "localhost/flink-jemalloc-bench-recipe:1.10.3";
    let c = ctx.display().to_string();
    let build = |extra: &[&str]| -> Result<f64> {
        let mut args = vec!["build", "--network", "host", "--tag", tag];
        args.extend(extra);
        args.push(&c);
        let t = Instant::now();
        xtask::docker::docker(&args).context("docker build of the Dockerfile recipe")?;
        Ok(t.elapsed().as_secs_f64())
    };
    let cold = build(&["--no-cache"]);
    let warm = match &cold {
        Ok(_) => build(&[]),
        Err(_) => Ok(0.0),
    };
    let history = xtask::docker::docker_text(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}\t{{.Size}}",
        tag,
    ]);
    let _ = xtask::docker::docker(&["image", "rm", "--force", tag, base]);
    let (cold, warm) = (cold?, warm?);
    rows.push((
        "Dockerfile recipe, cold `docker build --no-cache` (same base and source)".into(),
        format!("{cold:.1} s (ours cold: {cold_image:.1} s)"),
    ));
    rows.push((
        "Dockerfile recipe, warm `docker build` (its cache)".into(),
        format!("{warm:.2} s"),
    ));
    let apt = history?
        .lines()
        .find(|l| l.contains("graphviz"))
        .and_then(|l| l.rsplit('\t').next())
        .unwrap_or("?")
        .to_string();
    rows.push((
        "what `apt-get install --no-install-recommends binutils graphviz perl file` adds".into(),
        apt,
    ));
    Ok(())
}

/// Times a cold `cargo build -p xtask` in a fresh target directory (crates already
/// downloaded).
fn first_run(w: &Path, rows: &mut Rows) -> Result<()> {
    let sh = Shell::new()?;
    let target = w.join("first-run-target");
    let _dir = sh.push_dir(xtask::project::root());
    let t = Instant::now();
    cmd!(sh, "cargo build -p xtask --target-dir {target}")
        .quiet()
        .ignore_stderr()
        .run()
        .context("cargo build -p xtask")?;
    rows.push((
        "first run: cold `cargo build -p xtask` (what a first `cargo xtask` waits for)".into(),
        format!("{:.0} s", t.elapsed().as_secs_f64()),
    ));
    Ok(())
}
