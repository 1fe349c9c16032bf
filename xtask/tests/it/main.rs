//! The integration tests, one binary: a module per area, with `support` (loopback
//! servers, the `xtask` binary's runs, the profiled fixture images, workflow scripts).
//!
//! The tests that run Flink, Docker, runc, builds or images take the machine alone
//! ([`support::serial`]): they share two cores and the host network's ports, and their
//! timings must not depend on what else runs. The light ones share it
//! ([`support::shared`]), beside each other but never beside a heavy one, as separate test
//! binaries used to run.

mod arm64;
mod bad_input;
mod build;
mod compose;
mod deploy;
mod deps;
mod docker;
mod e2e;
mod e2e_modes;
mod fetch;
mod flink_job;
mod image;
mod kube;
mod leak;
mod leaks;
mod publish;
mod registry;
mod reliability;
mod runc_cluster;
mod runner;
mod support;
mod tidy;
mod workflows;
