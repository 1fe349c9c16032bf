//! flink-jemalloc's `cargo xtask`: a profiled jemalloc for Flink images, reproducibly.
//!
//! `main.rs` only parses flags; each subcommand lives in its own module (`fetch`,
//! `build`), and the logic they share sits in small modules with pure functions
//! (`debian`, `elf`, `gates`, `unpack`) and thin I/O edges (`download`, `sysroot`).

pub mod analyze;
pub mod bench;
pub mod build;
pub mod bundle;
pub mod cluster;
pub mod collect;
pub mod credentials;
pub mod debian;
pub mod deps;
pub mod digest;
pub mod docker;
pub mod docker_cluster;
pub mod download;
pub mod e2e;
pub mod elf;
pub mod fetch;
pub mod fixtures;
pub mod flink_job;
pub mod flink_rest;
pub mod gates;
pub mod heap_profile;
pub mod image;
pub mod inspect;
pub mod kind_cluster;
pub mod kube;
pub mod kubectl;
pub mod lock;
pub mod oci;
pub mod plot;
pub mod progress;
pub mod project;
pub mod publish;
pub mod registry;
pub mod repo;
pub mod retry;
pub mod rootless;
pub mod runc_cluster;
pub mod sbom;
pub mod spec;
pub mod sysroot;
pub mod teardown;
pub mod tools_layer;
pub mod unpack;
