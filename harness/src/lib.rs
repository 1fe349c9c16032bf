//! The test harness of flink-jemalloc, apart from what users run: the fixtures the tests
//! and the speed bench share (`fixtures`: a local signed Debian repository, the jemalloc
//! stand-in source, Flink base images, a loopback registry, a Docker engine), and the
//! README's speed and size figures measured on them (`bench`).

pub mod bench;
pub mod fixtures;
