//! sha256 digests: parsing, streaming computation, and the comparison error message.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// A lowercase hex sha256, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub(crate) fn parse(s: &str) -> Result<Sha256Hex> {
        let s = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("`{s}` is not a sha256 digest (64 hex characters)");
        }
        Ok(Sha256Hex(s.to_ascii_lowercase()))
    }

    pub fn of_bytes(data: &[u8]) -> Sha256Hex {
        Sha256Hex(hex::encode(Sha256::digest(data)))
    }

    fn of_reader(mut r: impl Read) -> std::io::Result<Sha256Hex> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Sha256Hex(hex::encode(hasher.finalize())))
    }

    pub fn of_file(path: &Path) -> Result<Sha256Hex> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Sha256Hex::of_reader(std::io::BufReader::new(f))
            .with_context(|| format!("reading {}", path.display()))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Sha256Hex {
        Sha256Hex(hex::encode(h.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Returns a stable key over several strings (cache keys for builds and sysroots).
pub(crate) fn key_of<I, S>(parts: I) -> Sha256Hex
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut h = Sha256::new();
    for p in parts {
        let p = p.as_ref();
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    Sha256Hex::from_hasher(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_prefixed_and_uppercase() {
        let d = "34330E5CE276099E2E8950D9335DB5A875689A4C6A56751EF3B1D8C537F887F6";
        assert_eq!(
            Sha256Hex::parse(&format!("sha256:{d}")).unwrap().as_str(),
            d.to_ascii_lowercase()
        );
        assert!(Sha256Hex::parse("abc").is_err());
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn known_digest_and_key_separation() {
        assert_eq!(
            Sha256Hex::of_bytes(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(key_of(["ab", "c"]), key_of(["a", "bc"]));
    }
}
