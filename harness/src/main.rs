//! `cargo harness`: prepare the test fixtures, or measure the README's speed figures on them.

use clap::{Parser, Subcommand};
use harness::{bench, fixtures};

#[derive(Parser)]
#[command(
    name = "cargo harness",
    about = "The test fixtures of flink-jemalloc, and the speed bench on them",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prepare the cached test fixtures (local Debian repository, jemalloc stand-in tarball,
    /// Flink base images).
    Fixtures(fixtures::FixturesArgs),
    /// Measure build, image and layer speed and sizes on the test fixtures (see README).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    xtask::teardown::install_handler();
    let result = match cli.command {
        Command::Fixtures(args) => fixtures::run(args),
        Command::Bench(args) => bench::run(args),
    };
    xtask::teardown::exit_code(result)
}
