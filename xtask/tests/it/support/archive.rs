//! Files for the tests: tarballs built entry by entry, sha256 in hex, and what a run left
//! below a directory.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Every regular file below `dir` (recursively), for "nothing was left behind" checks.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A `.tar.bz2` built entry by entry, with raw names (so tests can write unsafe ones).
pub struct TarBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }
}

impl TarBuilder {
    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, data.len() as u64, 0o644);
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        let mut h = Self::header(name, tar::EntryType::Directory, 0, 0o755);
        h.set_cksum();
        self.tar.append(&h, &[][..]).unwrap();
        self
    }

    /// A symlink, hard link, device or FIFO entry; `link` is written raw.
    pub fn special(mut self, name: &str, kind: tar::EntryType, link: &str) -> Self {
        let mut h = Self::header(name, kind, 0, 0o644);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.tar.append(&h, &[][..]).unwrap();
        self
    }

    pub fn bz2(self) -> Vec<u8> {
        let raw = self.tar.into_inner().unwrap();
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        enc.write_all(&raw).unwrap();
        enc.finish().unwrap()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
