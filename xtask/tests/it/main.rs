//! The integration tests, one binary: a module per area, with `support` (loopback
//! servers, the `xtask` binary's runs, the profiled fixture images, workflow scripts).
//!
//! The tests that run Flink, Docker, runc, builds or images take [`support::serial`]: they
//! share the machine's two cores and the host network's ports, so they run one at a time,
//! while the light ones run beside them.

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
mod publish;
mod registry;
mod reliability;
mod runc_cluster;
mod runner;
mod support;
mod tidy;
mod workflows;
