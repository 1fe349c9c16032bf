//! `cargo xtask`: parse flags, dispatch to the subcommand's module.

use clap::{Parser, Subcommand};
use xtask::publish;
use xtask::{analyze, bench, build, collect, deploy, e2e, fetch, image, job, leaks};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Profiled jemalloc for Flink images",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download jemalloc, verify its pinned sha256, unpack it safely; prints the source tree.
    Fetch(fetch::FetchArgs),
    /// Build jemalloc with profiling against a target Debian suite's glibc; prints the
    /// installed tree (bin/, lib/, include/).
    Build(build::BuildArgs),
    /// Layer the profiling jemalloc onto an official Flink image, reproducibly and without a
    /// Docker daemon; prints the image digest.
    Image(image::ImageArgs),
    /// Resolve an image's inputs afresh (base digest, sysroot and jeprof tool packages) and
    /// write its lock file, building nothing; prints the lock's path.
    Lock(image::ImageArgs),
    /// Run the RocksDB restart scenario on a profiled image and report the native-memory
    /// growth with jeprof's view of it.
    E2e(e2e::E2eArgs),
    /// Print what makes your Flink deployment's TaskManagers run on a profiled image with
    /// profiling on (a FlinkDeployment patch, a native Kubernetes pod template, a standalone
    /// Deployment patch or a Docker Compose override), or write it with --out.
    Deploy(deploy::DeployArgs),
    /// Compile the e2e scenarios' RocksDB job (a failure every --fail-every-ms) for a
    /// profiled image's Flink, to try deploy, collect and analyze on a cluster of your own;
    /// prints the jar's path.
    Job(job::JobArgs),
    /// Read heap dumps (a `collect` or `e2e` dump directory) with the image's own jeprof,
    /// inside the unpacked image: top sites, difference from the first dump, call graph.
    Analyze(analyze::AnalyzeArgs),
    /// List the known Flink native-memory leaks (releases affected and fixed, trigger,
    /// workaround, growth measured); with --flink and --conf, say which of them a release and
    /// its configuration are exposed to.
    Leaks(leaks::LeaksArgs),
    /// Copy the heap dumps and the libraries they map under /tmp (RocksDB's JNI library)
    /// out of a running TaskManager pod; prints the output directory.
    Collect(collect::CollectArgs),
    /// Build every spec, push each image by digest to the configured registry, tag it
    /// `<tag>-jemalloc-<v>-prof`, and push its SPDX SBOM next to it; prints the digests.
    Publish(publish::PublishArgs),
    /// Measure what profiling costs a TaskManager with RocksDB per allocator configuration
    /// (`--profiling-cost`), or re-cut a recorded report (`--recut`).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    xtask::teardown::install_handler();
    let result = match cli.command {
        Command::Fetch(args) => fetch::run(args),
        Command::Build(args) => build::run(args),
        Command::Image(args) => image::run(args),
        Command::Lock(args) => image::run(image::ImageArgs {
            lock_only: true,
            ..args
        }),
        Command::E2e(args) => e2e::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Job(args) => job::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Leaks(args) => leaks::run(args),
        Command::Collect(args) => collect::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Bench(args) => bench::run(args),
    };
    xtask::teardown::exit_code(result)
}
