//! A blocking client for the OCI Distribution HTTP API: image references, the
//! `WWW-Authenticate` challenge (anonymous, basic, bearer token), manifests of all four media
//! types with platform selection, blobs verified against their digest and cached by it, and
//! push (skip blobs the registry has, upload the rest, put the manifest).

pub(crate) mod credentials;

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::digest::Sha256Hex;
use crate::download;
use crate::download::retry;
use crate::oci::media::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::project::Cache;

/// `registry/repository[:tag][@sha256:…]`. Docker Hub names get their implicit parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Host (and port) as written, e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl std::str::FromStr for Reference {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Reference> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Sha256Hex::parse(d).with_context(|| format!("digest in `{s}`"))?),
            ),
            None => (s, None),
        };
        let (first, remainder) = rest.split_once('/').unwrap_or(("", rest));
        let (registry, path) = if !first.is_empty()
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            (first.to_string(), remainder.to_string())
        } else {
            ("docker.io".to_string(), rest.to_string())
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        if repository.is_empty()
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            bail!("`{s}` is not an image reference (registry/repository[:tag][@sha256:…])");
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest: digest.map(|d| format!("sha256:{d}")),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// Returns the digest if pinned, else the tag.
    pub(crate) fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    pub(crate) fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// Returns the API host: Docker Hub's registry lives at `registry-1.docker.io`.
    fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic {
        realm: String,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(header: &str) -> Result<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .with_context(|| format!("malformed challenge `{header}`"))?;
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q
                .find('"')
                .with_context(|| format!("unterminated quote in `{header}`"))?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Ok(Challenge::Basic {
            realm: map.remove("realm").unwrap_or_default(),
        }),
        "bearer" => Ok(Challenge::Bearer {
            realm: map
                .remove("realm")
                .with_context(|| format!("bearer challenge without realm: `{header}`"))?,
            service: map.remove("service"),
            scope: map.remove("scope"),
        }),
        other => bail!("unsupported authentication scheme `{other}`"),
    }
}

/// Picks the `os/arch` manifest from an image index or Docker manifest list.
fn select_platform(index: &Value, os: &str, arch: &str) -> Result<Value> {
    let manifests = index["manifests"]
        .as_array()
        .context("index without `manifests`")?;
    // arm64's only variant is v8 (the official images name it; a plain `arm64` means it).
    let plain = |v: &str| v.is_empty() || (arch == "arm64" && v == "v8");
    let found = manifests.iter().find(|m| {
        m["platform"]["os"] == os
            && m["platform"]["architecture"] == arch
            && m["platform"]["variant"].as_str().is_none_or(plain)
    });
    match found {
        Some(m) => Ok(m.clone()),
        None => {
            // Attestation manifests (`unknown/unknown`) are not platforms.
            let have: Vec<String> = manifests
                .iter()
                .filter(|m| m["platform"]["os"] != "unknown")
                .map(|m| {
                    format!(
                        "{}/{}",
                        m["platform"]["os"].as_str().unwrap_or("?"),
                        m["platform"]["architecture"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            Err(NoPlatform {
                wanted: format!("{os}/{arch}"),
                have,
            }
            .into())
        }
    }
}

/// An index without the platform asked for: an index run builds the other platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoPlatform {
    pub wanted: String,
    pub have: Vec<String>,
}

impl std::fmt::Display for NoPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no {} image (it has: {})",
            self.wanted,
            self.have.join(", ")
        )
    }
}

impl std::error::Error for NoPlatform {}

/// A manifest as fetched: raw bytes (their sha256 is the digest), media type, parsed JSON.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    pub json: Value,
}

impl Manifest {
    fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX
            || self.media_type == DOCKER_LIST
            || self.json.get("manifests").is_some()
    }
}

pub use credentials::{Auths, Credentials};

pub struct RegistryClient {
    http: Client,
    plain_http: bool,
    /// Credentials per registry host: a registry (and the token service it names) only ever
    /// sees its own host's.
    auths: Auths,
    /// Authorization header values by (registry, scope).
    auth: Mutex<HashMap<(String, String), String>>,
}

impl RegistryClient {
    /// `plain_http` is for loopback registries only; everything else is HTTPS.
    pub fn new(plain_http: bool, auths: Auths) -> RegistryClient {
        let http = Client::builder()
            .user_agent(concat!("flink-jemalloc-xtask/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .expect("building the HTTP client");
        RegistryClient {
            http,
            plain_http,
            auths,
            auth: Mutex::new(HashMap::new()),
        }
    }

    fn url(&self, r: &Reference, path: &str) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{path}", r.api_host(), r.repository)
    }

    /// Sends a request, answering one authentication challenge if the registry asks.
    fn send(
        &self,
        r: &Reference,
        push: bool,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response> {
        let scope = format!(
            "repository:{}:{}",
            r.repository,
            if push { "pull,push" } else { "pull" }
        );
        let key = (r.registry.clone(), scope.clone());
        let cached = self.auth.lock().unwrap().get(&key).cloned();
        download::count_request();
        let mut req = build(&self.http);
        if let Some(h) = &cached {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        let resp = req.send().with_context(|| {
            format!(
                "connecting to {} (is the registry reachable{}?)",
                r.registry,
                if self.plain_http { "" } else { " over HTTPS" }
            )
        })?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let header = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .with_context(|| {
                format!(
                    "{} answered 401 without a WWW-Authenticate challenge",
                    r.registry
                )
            })?
            .to_string();
        let value = self.answer(r, &parse_challenge(&header)?, scope)?;
        self.auth.lock().unwrap().insert(key, value.clone());
        download::count_request();
        let resp = build(&self.http)
            .header(reqwest::header::AUTHORIZATION, &value)
            .send()?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            bail!("{} refused the credentials for {r}", r.registry);
        }
        Ok(resp)
    }

    /// Returns the `Authorization` value that answers `challenge` for `r`: basic with the
    /// host's own credentials, or a bearer token from the realm the challenge names (asked
    /// with the host's credentials, or anonymously).
    fn answer(&self, r: &Reference, challenge: &Challenge, scope: String) -> Result<String> {
        let credentials = self.auths.for_registry(&r.registry);
        Ok(match challenge {
            Challenge::Basic { .. } => {
                let c = credentials.as_ref().with_context(|| {
                    format!(
                        "{} needs credentials: `docker login {}`, or pass --registry-user and \
                         set REGISTRY_PASSWORD",
                        r.registry, r.registry
                    )
                })?;
                use base64::Engine;
                let pair = format!("{}:{}", c.username, c.password);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let (realm, service, asked) = (realm.clone(), service.clone(), asked.clone());
                let mut query = vec![("scope", asked.unwrap_or(scope))];
                if let Some(s) = service {
                    query.push(("service", s));
                }
                let what = format!("GET {realm} (a token for {r})");
                let bytes = retry::run(&what, |_| {
                    download::count_request();
                    let mut token_req = self.http.get(&realm).query(&query);
                    if let Some(c) = &credentials {
                        token_req = token_req.basic_auth(&c.username, Some(&c.password));
                    }
                    let tr = token_req.send()?;
                    let status = tr.status();
                    if retry::transient_status(status) {
                        return Err(retry::status_failure(&what, &tr));
                    }
                    if !status.is_success() {
                        return Err(retry::Failure::Fatal(anyhow::anyhow!(
                            "the token service {realm} answered {status} for {r}"
                        )));
                    }
                    Ok(tr.bytes()?)
                })?;
                let body: Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("token response from {realm}"))?;
                let token = body["token"]
                    .as_str()
                    .or(body["access_token"].as_str())
                    .with_context(|| format!("no token in the answer of {realm}"))?;
                format!("Bearer {token}")
            }
        })
    }

    /// Fetches a manifest by tag or digest, with all four media types accepted, verifying a
    /// requested digest. Transient faults are retried.
    pub fn manifest(&self, r: &Reference, reference: &str) -> Result<Manifest> {
        let url = self.url(r, &format!("manifests/{reference}"));
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let what = format!("GET {url}");
        let (media_type, bytes) = retry::run(&what, |_| {
            let resp = self.send(r, false, |c| {
                c.get(&url).header(reqwest::header::ACCEPT, &accept)
            })?;
            let status = resp.status();
            if retry::transient_status(status) {
                return Err(retry::status_failure(&what, &resp));
            }
            if !status.is_success() {
                return Err(retry::Failure::Fatal(anyhow::anyhow!(
                    "GET {url} answered {status}: does {r} exist?"
                )));
            }
            let media_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            Ok((media_type, resp.bytes()?.to_vec()))
        })?;
        let digest = format!("sha256:{}", Sha256Hex::of_bytes(&bytes));
        if reference.starts_with("sha256:") && reference != digest {
            bail!(
                "manifest digest mismatch for {r}\n  expected: {reference}\n  actual:   {digest}"
            );
        }
        let json: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing the manifest of {r}"))?;
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            json["mediaType"]
                .as_str()
                .unwrap_or(OCI_MANIFEST)
                .to_string()
        } else {
            media_type
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
            json,
        })
    }

    /// Resolves `r` to the linux/amd64 image manifest; returns it and the index it came from.
    pub fn image_manifest(&self, r: &Reference) -> Result<(Manifest, Option<Manifest>)> {
        self.image_manifest_for(r, "amd64")
    }

    /// Resolves `r` to the linux image manifest of Debian architecture `arch` (`arm64`);
    /// returns it and the index it came from. A single manifest is returned as it is: its
    /// config says what it is for.
    pub(crate) fn image_manifest_for(
        &self,
        r: &Reference,
        arch: &str,
    ) -> Result<(Manifest, Option<Manifest>)> {
        let top = self.manifest(r, r.reference())?;
        if !top.is_index() {
            return Ok((top, None));
        }
        let desc =
            select_platform(&top.json, "linux", arch).with_context(|| format!("resolving {r}"))?;
        let digest = desc["digest"]
            .as_str()
            .context("index entry without digest")?;
        let image = self.manifest(r, digest)?;
        Ok((image, Some(top)))
    }

    /// Downloads a blob into the cache (verified against `digest`), unless it is there,
    /// under the blob's cache lock; transient faults are retried and a body that broke off
    /// is resumed with `Range`.
    pub fn blob(&self, r: &Reference, digest: &str, cache: &Cache) -> Result<PathBuf> {
        let hex = Sha256Hex::parse(digest)?;
        let _lock = cache.lock("blob", hex.as_str())?;
        let dest = cache.blob(hex.as_str());
        if dest.is_file() {
            return Ok(dest);
        }
        let url = self.url(r, &format!("blobs/{digest}"));
        download::save_verified(cache, &hex, &url, |out| {
            retry::get_into(
                &format!("GET {url}"),
                |from| {
                    self.send(r, false, |c| {
                        let req = c.get(&url);
                        match from {
                            Some(from) => {
                                req.header(reqwest::header::RANGE, format!("bytes={from}-"))
                            }
                            None => req,
                        }
                    })
                },
                out,
            )
        })
        .with_context(|| format!("blob {digest} of {r}"))
    }

    fn has_blob(&self, r: &Reference, digest: &str) -> Result<bool> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, true, |c| c.head(&url))?;
        Ok(resp.status().is_success())
    }

    /// Uploads a blob unless the registry has it; returns whether it was uploaded.
    pub fn push_blob(&self, r: &Reference, digest: &str, data: &[u8]) -> Result<bool> {
        if self.has_blob(r, digest)? {
            return Ok(false);
        }
        let start = self.url(r, "blobs/uploads/");
        let resp = self.send(r, true, |c| {
            c.post(&start).header(reqwest::header::CONTENT_LENGTH, "0")
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            bail!("POST {start} answered {}", resp.status());
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|h| h.to_str().ok())
            .context("upload session without Location")?;
        let location = if location.starts_with("http") {
            location.to_string()
        } else {
            let scheme = if self.plain_http { "http" } else { "https" };
            format!("{scheme}://{}{location}", r.api_host())
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let body = data.to_vec();
        let resp = self.send(r, true, |c| {
            c.put(&put)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body.clone())
        })?;
        if resp.status() != StatusCode::CREATED {
            bail!("uploading blob {digest} to {r} answered {}", resp.status());
        }
        Ok(true)
    }

    /// Puts a manifest under `reference` (tag or digest); returns its digest.
    pub fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String> {
        let url = self.url(r, &format!("manifests/{reference}"));
        let body = bytes.to_vec();
        let resp = self.send(r, true, |c| {
            c.put(&url)
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(body.clone())
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            bail!("PUT {url} answered {status}: {text}");
        }
        Ok(format!("sha256:{}", Sha256Hex::of_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_docker_hub_defaults() {
        let r: Reference = "flink:1.10.1-scala_2.12".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/flink", Some("1.10.1-scala_2.12"))
        );
        let r: Reference = "127.0.0.1:5000/fixtures/flink:1.10.3".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "fixtures/flink")
        );
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("docker.io/library/flink@{d}").parse().unwrap();
        assert_eq!(
            (r.tag.clone(), r.digest.as_deref(), r.reference()),
            (None, Some(d.as_str()), d.as_str())
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!("Flink:UPPER".parse::<Reference>().is_err());
        assert!(
            "localhost:5000/x"
                .parse::<Reference>()
                .unwrap()
                .tag
                .as_deref()
                == Some("latest")
        );
    }

    #[test]
    fn bearer_and_basic_challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/flink:pull""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/flink:pull".into())
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#).unwrap(),
            Challenge::Basic {
                realm: "Registry Realm".into()
            }
        );
        assert!(parse_challenge("Negotiate abc").is_err());
        assert!(parse_challenge(r#"Bearer service="x""#).is_err());
    }

    #[test]
    fn index_selection_picks_linux_amd64() {
        let index: Value = serde_json::json!({
            "manifests": [
                {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": "sha256:win", "platform": {"os": "windows", "architecture": "amd64"}},
                {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        });
        assert_eq!(
            select_platform(&index, "linux", "amd64").unwrap()["digest"],
            "sha256:amd"
        );
        // The official images' arm64 is `arm64/v8`.
        assert_eq!(
            select_platform(&index, "linux", "arm64").unwrap()["digest"],
            "sha256:arm"
        );
        let err = select_platform(&index, "linux", "s390x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/arm64") && err.contains("windows/amd64"),
            "{err}"
        );
        // Attestations are not platforms; the error is typed for an index run to skip.
        assert!(!err.contains("unknown"), "{err}");
        let e = select_platform(&index, "linux", "s390x").unwrap_err();
        let none = e.downcast_ref::<NoPlatform>().unwrap();
        assert_eq!(none.wanted, "linux/s390x");
        assert_eq!(none.have.len(), 3);
    }
}
