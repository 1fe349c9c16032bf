//! Downloads go into a content-addressed cache: each streams to a temporary file beside the cache
//! entry, is hashed while written, and is renamed into place only when the digest matches. A cache
//! entry therefore always holds verified bytes, and a failure leaves nothing behind. Each entry is
//! written under its cache lock (concurrent runs download it once), and every GET is retried as
//! `retry` says.

pub(crate) mod retry;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::digest::Sha256Hex;
use crate::progress;
use crate::project::Cache;
use retry::Sink;

/// HTTP requests this process sent (downloads, registry calls): a warm run's "no network"
/// is this staying at zero.
static REQUESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one HTTP request about to be sent.
pub(crate) fn count_request() {
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Returns how many HTTP requests were sent so far.
pub(crate) fn requests() -> usize {
    REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
}

pub struct Downloader {
    client: reqwest::blocking::Client,
}

impl Default for Downloader {
    fn default() -> Self {
        Downloader::new()
    }
}

impl Downloader {
    pub fn new() -> Downloader {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("flink-jemalloc-xtask/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .expect("building the HTTP client");
        Downloader { client }
    }

    /// Returns the cache path of the blob with digest `expected`, downloading it from `url`
    /// only when the cache does not already hold it.
    pub(crate) fn fetch(&self, cache: &Cache, url: &str, expected: &Sha256Hex) -> Result<PathBuf> {
        let _lock = cache.lock("blob", expected.as_str())?;
        let dest = cache.blob(expected.as_str());
        if dest.is_file() {
            if Sha256Hex::of_file(&dest)? == *expected {
                return Ok(dest);
            }
            // A cache entry that no longer matches its name was damaged on disk.
            std::fs::remove_file(&dest)
                .with_context(|| format!("removing damaged cache entry {}", dest.display()))?;
        }
        save_verified(cache, expected, url, |out| self.stream(url, out))
    }

    /// Downloads `url` into memory (small index files whose digest is not known beforehand).
    pub(crate) fn get(&self, url: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.stream(url, &mut buf)?;
        Ok(buf)
    }

    /// Returns whether `url` answers a HEAD with success (used to probe optional index
    /// files).
    pub(crate) fn exists(&self, url: &str) -> Result<bool> {
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Path::new(path).is_file());
        }
        let what = format!("HEAD {url}");
        retry::run(&what, |_| {
            count_request();
            let resp = self.client.head(url).send()?;
            if retry::transient_status(resp.status()) {
                return Err(retry::status_failure(&what, &resp));
            }
            Ok(resp.status().is_success())
        })
    }

    /// Copies the body of `url` into `out`, returning its sha256 and length, with the
    /// retries and resumption of [`retry::get_into`]. What still fails is an error: a
    /// non-success status, a connection that cannot be made, a body that stays short.
    fn stream(&self, url: &str, out: &mut dyn Sink) -> Result<(Sha256Hex, u64)> {
        if let Some(path) = url.strip_prefix("file://") {
            let f = std::fs::File::open(path).with_context(|| format!("opening {url}"))?;
            let len = f.metadata()?.len();
            return copy_hashing(f, out, Some(len), url);
        }
        retry::get_into(
            &format!("GET {url}"),
            |from| {
                count_request();
                let mut req = self.client.get(url);
                if let Some(from) = from {
                    req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
                }
                Ok(req.send()?)
            },
            out,
        )
        .with_context(|| format!("downloading {url} (is the network or mirror reachable?)"))
    }
}

/// Writes a blob into the cache under its digest: `write` fills a temporary file beside the
/// entry and returns the digest it saw; only a match is renamed into place. The caller holds
/// the blob's [`Cache::lock`].
pub(crate) fn save_verified(
    cache: &Cache,
    expected: &Sha256Hex,
    url: &str,
    write: impl FnOnce(&mut dyn Sink) -> Result<(Sha256Hex, u64)>,
) -> Result<PathBuf> {
    let dest = cache.blob(expected.as_str());
    let dir = dest.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Partial files of this digest left by runs that were killed (we hold its lock).
    let prefix = format!(".partial-{}-", &expected.as_str()[..16]);
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let (actual, len) = write(tmp.as_file_mut())?;
    if actual != *expected {
        bail!(
            "sha256 mismatch for {url}\n  expected: {expected}\n  actual:   {actual} ({len} bytes)\n\
             nothing was cached; check the URL, or pass --sha256 if the file is meant to change"
        );
    }
    tmp.as_file().sync_all().ok();
    tmp.persist(&dest)
        .with_context(|| format!("moving the download into {}", dest.display()))?;
    Ok(dest)
}

/// Copies `body` into `out` while hashing; a body shorter than `len` is an error.
pub(crate) fn copy_hashing(
    mut body: impl Read,
    out: &mut dyn Write,
    len: Option<u64>,
    url: &str,
) -> Result<(Sha256Hex, u64)> {
    let bar = progress::bytes(len, url);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(e).with_context(|| {
                    format!("reading the body of {url} after {total} bytes (connection lost?)")
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).context("writing the download")?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    if let Some(expected) = len {
        if total != expected {
            bail!("{url}: body truncated: got {total} of {expected} bytes");
        }
    }
    Ok((Sha256Hex::from_hasher(hasher), total))
}
