//! Debian: its formats (`format`: `Release` checksums, `Packages` paragraphs, the data
//! archive inside a `.deb`) and a repository read over HTTP (`repo`).

pub(crate) mod format;
pub mod repo;

pub(crate) use format::{control_files, data_archive, paragraphs, PackageRecord};
