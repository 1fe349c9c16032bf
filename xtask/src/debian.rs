//! Debian: its formats (`format`: `Release` checksums, `Packages` paragraphs, the data
//! archive inside a `.deb`) and a repository read over HTTP (`repo`).

pub mod format;
pub mod repo;

pub use format::{
    control_files, data_archive, paragraphs, parse_packages, parse_release, PackageRecord,
    Paragraph, ReleaseEntry,
};
