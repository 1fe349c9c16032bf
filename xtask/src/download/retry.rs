//! Transient faults are retried: every HTTP GET the tool makes (jemalloc, registry manifests, blobs
//! and tokens, Debian `Release`/`Packages`/`.deb`) goes through [`run`] or [`get_into`]. These are
//! retried: 408, 429 (its `Retry-After` honoured, capped), 5xx, connections refused or reset,
//! timeouts, and bodies shorter than their `Content-Length`; a body that broke off is resumed with
//! `Range` from where it stopped (or started over when the server ignores `Range`). Delays grow
//! exponentially with jitter (backon's schedule), within a bounded number of attempts and a bounded
//! total time; each retry is a progress line that says what, why, and which attempt. Other 4xx
//! answers are not retried.

use anyhow::{bail, Context, Result};
use backon::BackoffBuilder;
use reqwest::blocking::Response;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use crate::digest::Sha256Hex;
use crate::progress;

/// Attempts of one request, the first included.
const ATTEMPTS: usize = 6;
/// The longest all retries of one request may wait in total.
const TOTAL: Duration = Duration::from_secs(180);
/// The longest a `Retry-After` is waited for.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt: `why` for the progress line, `after` a server's `Retry-After`.
    Transient {
        why: String,
        after: Option<Duration>,
    },
    /// Not worth another attempt.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        // A transport error found under an anyhow chain is as transient as it was.
        match e.downcast_ref::<reqwest::Error>() {
            Some(re) if transient_error(re) => Failure::Transient {
                why: short(re),
                after: None,
            },
            _ => Failure::Fatal(e),
        }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        if transient_error(&e) {
            Failure::Transient {
                why: short(&e),
                after: None,
            }
        } else {
            Failure::Fatal(e.into())
        }
    }
}

/// Returns whether `e` is a transport error that another attempt may not meet: refused,
/// reset, timed out.
fn transient_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// Returns reqwest's error with its innermost cause (`connection refused`, `reset by peer`).
fn short(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "connection error"
    };
    format!("{kind}: {cause}")
}

/// Returns whether an answer with `status` is worth another attempt: 408, 429 and 5xx.
pub(crate) fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date, capped at
/// [`RETRY_AFTER_CAP`].
fn retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822)
                .ok()?;
            let now = time::OffsetDateTime::now_utc();
            Duration::try_from(at - now).unwrap_or_default()
        }
    };
    Some(d.min(RETRY_AFTER_CAP))
}

/// Returns the failure an answer's status means: transient (with its `Retry-After`) or
/// fatal.
pub(crate) fn status_failure(what: &str, resp: &Response) -> Failure {
    let status = resp.status();
    if transient_status(status) {
        Failure::Transient {
            why: format!("answered {status}"),
            after: resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after),
        }
    } else {
        Failure::Fatal(anyhow::anyhow!("{what} answered {status}"))
    }
}

/// Returns the delays between attempts: exponential from 0.25 s, at most 10 s each, with
/// jitter.
fn schedule() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(ATTEMPTS - 1)
        .with_jitter()
        .build()
}

/// Runs `attempt` (given its number, from 1) until it succeeds, fails fatally, or the
/// attempts or the total time are spent; `what` names it in progress lines and errors.
pub(crate) fn run<T>(
    what: &str,
    mut attempt: impl FnMut(usize) -> Result<T, Failure>,
) -> Result<T> {
    let started = Instant::now();
    let mut delays = schedule();
    let mut n = 1;
    loop {
        let (why, after) = match attempt(n) {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient { why, after }) => (why, after),
        };
        let delay = match delays.next() {
            Some(d) => after.unwrap_or(d),
            None => bail!("{what}: {why}; gave up after {n} attempts"),
        };
        if started.elapsed() + delay > TOTAL {
            bail!(
                "{what}: {why}; gave up after {n} attempts in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        progress::note(format!(
            "{what}: {why}; retrying in {:.1} s (attempt {} of {ATTEMPTS})",
            delay.as_secs_f64(),
            n + 1
        ));
        std::thread::sleep(delay);
        n += 1;
    }
}

/// Where a download goes: written in order, and started over when a server cannot resume.
pub(crate) trait Sink: Write {
    fn restart(&mut self) -> std::io::Result<()>;
}

impl Sink for std::fs::File {
    fn restart(&mut self) -> std::io::Result<()> {
        self.set_len(0)?;
        self.rewind()
    }
}

impl Sink for Vec<u8> {
    fn restart(&mut self) -> std::io::Result<()> {
        self.clear();
        Ok(())
    }
}

/// Returns the total length a `206` answer's `Content-Range: bytes a-b/total` names.
fn content_range_total(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

/// GETs a body into `out` with retries: `send(from)` sends the request, asking for the
/// bytes from `from` on when it is Some (a `Range`). A body that broke off or came short
/// is resumed where it stopped. Returns the body's sha256 and length.
pub(crate) fn get_into(
    what: &str,
    send: impl Fn(Option<u64>) -> Result<Response>,
    out: &mut dyn Sink,
) -> Result<(Sha256Hex, u64)> {
    let bar = progress::bytes(None, what);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut total: Option<u64> = None;
    let result = run(what, |_| {
        let resp = send((written > 0).then_some(written))?;
        let status = resp.status();
        if status == StatusCode::PARTIAL_CONTENT && written > 0 {
            total = content_range_total(&resp).or(total);
        } else if status.is_success() {
            if written > 0 {
                // The server ignored the Range: start over.
                out.restart().context("starting the download over")?;
                hasher = Sha256::new();
                written = 0;
            }
            total = resp.content_length();
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
            out.restart().context("starting the download over")?;
            hasher = Sha256::new();
            written = 0;
            return Err(Failure::Transient {
                why: "answered 416 to a resumed download".into(),
                after: Some(Duration::ZERO),
            });
        } else {
            return Err(status_failure(what, &resp));
        }
        if let Some(t) = total {
            bar.set_length(t);
        }
        let mut body = resp;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure::Transient {
                        why: format!("body truncated: connection lost after {written} bytes ({e})"),
                        after: None,
                    })
                }
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .context("writing the download")
                .map_err(Failure::Fatal)?;
            written += n as u64;
            bar.set_position(written);
        }
        match total {
            Some(t) if written < t => Err(Failure::Transient {
                why: format!("body truncated at {written} of {t} bytes"),
                after: None,
            }),
            _ => Ok(()),
        }
    });
    bar.finish_and_clear();
    result?;
    Ok((Sha256Hex::from_hasher(hasher.clone()), written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 410] {
            assert!(!transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn retry_after_is_read_and_capped() {
        assert_eq!(retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(" 3600 "), Some(RETRY_AFTER_CAP));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: at once"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn attempts_are_bounded_and_fatal_stops_at_once() {
        let mut calls = 0;
        let e = run("GET x", |_| -> Result<(), Failure> {
            calls += 1;
            Err(Failure::Transient {
                why: "answered 503 Service Unavailable".into(),
                after: Some(Duration::ZERO),
            })
        })
        .unwrap_err();
        assert_eq!(calls, ATTEMPTS);
        assert!(
            format!("{e:#}").contains(&format!("gave up after {ATTEMPTS} attempts")),
            "{e:#}"
        );
        let mut calls = 0;
        let e = run("GET y", |_| -> Result<(), Failure> {
            calls += 1;
            Err(Failure::Fatal(anyhow::anyhow!(
                "GET y answered 404 Not Found"
            )))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(e.to_string().contains("404"));
        let mut calls = 0;
        let v = run("GET z", |n| {
            calls += 1;
            if n < 3 {
                Err(Failure::Transient {
                    why: "reset".into(),
                    after: Some(Duration::ZERO),
                })
            } else {
                Ok(n)
            }
        })
        .unwrap();
        assert_eq!((v, calls), (3, 3));
    }
}
