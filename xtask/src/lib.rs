//! flink-jemalloc's `cargo xtask`: a profiled jemalloc for Flink images, reproducibly.
//!
//! `main.rs` only parses flags. Each subcommand is a module named for it (`fetch`, `build`,
//! `image`, `e2e`, `deploy`, `analyze`, `collect`, `publish`, `bench`, `job`), with its parts in
//! a folder of the same name once it has parts (`build/sysroot.rs`, `e2e/driver/kind.rs`).
//! The rest is shared by several of them: HTTP downloads into the cache (`download`) and the
//! registry client (`registry`), archives (`unpack`), OCI images (`oci`), Debian formats
//! (`debian`), digests, progress, the project's layout and specs, the engines' CLIs
//! (`docker`, `kubectl`), work in an unpacked image (`bundle`, `rootless`), heap dumps
//! (`heap_profile`), growth with its error bars (`fit`), what made a measurement
//! (`provenance`), and interruptions (`teardown`). ARCHITECTURE.md maps every module.

// The subcommands.
pub mod analyze;
pub mod bench;
pub mod build;
pub mod collect;
pub mod deploy;
pub mod e2e;
pub mod fetch;
pub mod image;
pub mod job;
pub mod leaks;
pub mod publish;

// Shared by several subcommands.
pub mod bundle;
pub mod catalogue;
pub mod debian;
pub mod digest;
pub mod docker;
pub mod download;
pub mod fit;
pub mod flink_version;
pub mod heap_profile;
pub mod kubectl;
pub mod oci;
pub mod plot;
pub mod progress;
pub mod project;
pub mod provenance;
pub mod registry;
pub mod rootless;
pub mod spec;
pub mod teardown;
pub mod timeline;
pub mod unpack;
