//! Registry credentials per host, read the way users keep them: Docker's `config.json`
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths` per host, and the
//! `credHelpers`/`credsStore` helpers `docker login` may have written), plus the one host the
//! command line names with `--registry-user` and `$REGISTRY_PASSWORD`. A registry gets its
//! own host's credentials only (so does the token service its challenge names); every other
//! host is asked anonymously.

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use xshell::{cmd, Shell};

use crate::progress;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Returns the host a registry name or a `config.json` key stands for: lowercased, with the
/// scheme and any path dropped, and with Docker Hub's names (`index.docker.io`,
/// `registry-1.docker.io`, `https://index.docker.io/v1/`) all as `docker.io`.
fn canonical_host(name: &str) -> String {
    let s = name
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Returns the server name a credential helper is asked about for `host`.
fn helper_server(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// Credentials by host, from a Docker config and the command line.
#[derive(Debug, Default)]
pub struct Auths {
    /// Given on the command line; they win over the config.
    explicit: BTreeMap<String, Credentials>,
    /// `auths` of the config.
    stored: BTreeMap<String, Credentials>,
    /// `credHelpers` of the config: host → helper name (`docker-credential-<name>`).
    helpers: BTreeMap<String, String>,
    /// `credsStore` of the config: the helper of every other host.
    store: Option<String>,
    /// Where the config was read from, for messages.
    source: Option<PathBuf>,
    /// What the helpers answered, per host.
    asked: Mutex<BTreeMap<String, Option<Credentials>>>,
}

impl Auths {
    /// Returns no credentials for anyone.
    pub fn anonymous() -> Auths {
        Auths::default()
    }

    /// Returns `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    fn docker_config_path() -> Option<PathBuf> {
        match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(d) => Some(PathBuf::from(d).join("config.json")),
            None => std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".docker/config.json")),
        }
    }

    /// Reads the user's Docker config ([`Auths::docker_config_path`]); none there is no
    /// error.
    pub(crate) fn from_docker_config() -> Result<Auths> {
        match Auths::docker_config_path() {
            Some(p) if p.is_file() => Auths::read(&p),
            _ => Ok(Auths::anonymous()),
        }
    }

    /// Reads a Docker `config.json`.
    pub(crate) fn read(path: &Path) -> Result<Auths> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut a = Auths::parse(&text).with_context(|| {
            format!(
                "{} is not a Docker config (`docker login` writes it); fix or move it",
                path.display()
            )
        })?;
        a.source = Some(path.to_path_buf());
        Ok(a)
    }

    /// Parses the text of a Docker `config.json`.
    pub(crate) fn parse(text: &str) -> Result<Auths> {
        let v: Value = serde_json::from_str(text).context("not JSON")?;
        let mut a = Auths::anonymous();
        for (key, entry) in v["auths"].as_object().into_iter().flatten() {
            let from_auth = entry["auth"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|b| -> Result<Credentials> {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .with_context(|| format!("auths.\"{key}\".auth is not base64"))?;
                    let pair = String::from_utf8(raw)
                        .with_context(|| format!("auths.\"{key}\".auth is not text"))?;
                    let (u, p) = pair
                        .split_once(':')
                        .with_context(|| format!("auths.\"{key}\".auth is not user:password"))?;
                    Ok(Credentials {
                        username: u.to_string(),
                        password: p.to_string(),
                    })
                })
                .transpose()?;
            let plain = match (entry["username"].as_str(), entry["password"].as_str()) {
                (Some(u), Some(p)) => Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }),
                _ => None,
            };
            if let Some(c) = from_auth.or(plain) {
                a.stored.insert(canonical_host(key), c);
            }
        }
        for (key, helper) in v["credHelpers"].as_object().into_iter().flatten() {
            if let Some(h) = helper.as_str() {
                a.helpers.insert(canonical_host(key), h.to_string());
            }
        }
        a.store = v["credsStore"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(a)
    }

    /// Adds `credentials` for `host` (a registry name), over whatever the config says.
    pub fn with(mut self, host: &str, credentials: Credentials) -> Auths {
        self.explicit.insert(canonical_host(host), credentials);
        self
    }

    /// Returns the credentials of `registry`, if any: the command line's, the config's
    /// `auths`, its helper for that host, its `credsStore`. A helper that fails is noted, and
    /// the registry is asked anonymously.
    pub(crate) fn for_registry(&self, registry: &str) -> Option<Credentials> {
        let host = canonical_host(registry);
        if let Some(c) = self.explicit.get(&host).or(self.stored.get(&host)) {
            return Some(c.clone());
        }
        let helper = self.helpers.get(&host).or(self.store.as_ref())?;
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked
            .entry(host.clone())
            .or_insert_with(|| match run_helper(helper, &helper_server(&host)) {
                Ok(c) => c,
                Err(e) => {
                    progress::note(format!(
                        "no credentials for {host} from docker-credential-{helper} (named in {}): {e:#}",
                        self.source
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "the Docker config".into())
                    ));
                    None
                }
            })
            .clone()
    }
}

/// Runs `docker-credential-<helper> get` for `server`: None when it has nothing for it.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let sh = Shell::new()?;
    let program = format!("docker-credential-{helper}");
    let out = cmd!(sh, "{program} get")
        .stdin(server)
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        anyhow::bail!("{program} get: {}", msg.trim());
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("{program} get: not JSON"))?;
    Ok(Some(Credentials {
        username: v["Username"].as_str().unwrap_or_default().to_string(),
        password: v["Secret"].as_str().unwrap_or_default().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_canonical() {
        for hub in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "registry-1.docker.io",
            "docker.io",
        ] {
            assert_eq!(canonical_host(hub), "docker.io", "{hub}");
        }
        assert_eq!(canonical_host("GHCR.io"), "ghcr.io");
        assert_eq!(
            canonical_host("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn each_host_gets_its_own_credentials() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret");
        let config = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{b64}"}},
                 "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}},
                 "empty.example": {{}}}}}}"#
        );
        let a = Auths::parse(&config).unwrap();
        assert_eq!(
            a.for_registry("127.0.0.1:5000"),
            Some(Credentials {
                username: "pusher".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(a.for_registry("docker.io").unwrap().username, "hub");
        assert_eq!(a.for_registry("ghcr.io"), None, "anonymous elsewhere");
        assert_eq!(a.for_registry("empty.example"), None);
        let a = a.with(
            "ghcr.io",
            Credentials {
                username: "flag".into(),
                password: "x".into(),
            },
        );
        assert_eq!(a.for_registry("ghcr.io").unwrap().username, "flag");
        assert_eq!(a.for_registry("127.0.0.1:5000").unwrap().username, "pusher");
        let bad = Auths::parse(r#"{"auths": {"h": {"auth": "!!"}}}"#).unwrap_err();
        assert!(
            format!("{bad:#}").contains("auths.\"h\".auth is not base64"),
            "{bad:#}"
        );
    }

    #[test]
    fn a_missing_helper_means_anonymous() {
        let a = Auths::parse(r#"{"credsStore": "flink-jemalloc-no-such-helper"}"#).unwrap();
        assert_eq!(a.for_registry("docker.io"), None);
    }
}
