//! The first two stages of `image`: the base is pulled (manifest, config and layers, from the cache
//! when the lock pins them) and inspected from its layers (suite, libc6, apt sources, dpkg status),
//! which decides the sysroot, the mirror and the keyring of everything after.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;

use super::cache::{cache_blob, read_cached};
use super::context::RunContext;
use super::inspect::{self, BaseFacts};
use crate::debian::repo::Repo;
use crate::oci;
use crate::progress::{self, Step};
use crate::spec::SuiteSpec;

/// The base image as pulled.
pub(crate) struct Base {
    /// Its manifest's digest (the platform's image's) and, when it came from an index,
    /// the index's.
    pub digest: String,
    pub index_digest: Option<String>,
    pub config_digest: String,
    pub config: Value,
    /// The manifest's layer descriptors, and each layer's cached file.
    pub layers: Vec<Value>,
    pub layer_paths: Vec<PathBuf>,
}

/// What the base is, and what that decides.
pub(crate) struct Target {
    pub facts: BaseFacts,
    pub suite: String,
    pub libc6: String,
    pub suite_spec: SuiteSpec,
    pub mirror: String,
    pub keyring: Option<PathBuf>,
}

impl Base {
    /// Returns the layer descriptors with OCI media types (what umoci and an OCI manifest
    /// want).
    pub(crate) fn oci_layers(&self) -> Vec<Value> {
        self.layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": oci::oci_layer_type(l["mediaType"].as_str().unwrap_or(oci::OCI_LAYER_GZIP)),
                    "digest": l["digest"],
                    "size": l["size"],
                })
            })
            .collect()
    }
}

impl Target {
    /// Returns the Debian repository of the base's suite, for packages of `arch`.
    pub(crate) fn repo<'a>(&'a self, arch: &'a str) -> Repo<'a> {
        Repo {
            mirror: &self.mirror,
            suite: &self.suite,
            component: &self.suite_spec.component,
            arch,
            keyring: self.keyring.as_deref(),
        }
    }
}

/// Stage 1: pulls the base's manifest, config and layers, verified and cached; it uses the
/// network only for what the cache does not hold.
pub(crate) fn pull(run: &RunContext) -> Result<Base> {
    let base_ref = &run.base_ref;
    let step = Step::start(format!("base image {base_ref}"));
    let mut network = false;
    let pinned = run.usable.as_ref().map(|l| &l.base);
    let (manifest_bytes, digest, index_digest) =
        match pinned.and_then(|b| read_cached(&run.cache, &b.manifest_digest).map(|m| (m, b))) {
            Some((bytes, b)) => (bytes, b.manifest_digest.clone(), b.index_digest.clone()),
            None => {
                network = true;
                let wanted = pinned.map(|b| base_ref.with_digest(&b.manifest_digest));
                let (m, index) = run
                    .client
                    .image_manifest_for(wanted.as_ref().unwrap_or(base_ref), &run.platform.arch)
                    .map_err(|e| platform_hint(run, e))?;
                if !oci::is_manifest_type(&m.media_type) {
                    bail!("{base_ref}: unsupported manifest type {}", m.media_type);
                }
                cache_blob(&run.cache, &m.media_type, m.bytes.clone())?;
                let index_digest = index
                    .map(|i| i.digest)
                    .or(pinned.and_then(|b| b.index_digest.clone()));
                (m.bytes, m.digest, index_digest)
            }
        };
    let manifest: Value = serde_json::from_slice(&manifest_bytes)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("base manifest without config")?
        .to_string();
    let layers = manifest["layers"]
        .as_array()
        .context("base manifest without layers")?
        .clone();
    let config_path = match read_cached(&run.cache, &config_digest) {
        Some(_) => run.cache.blob(oci::hex_of(&config_digest)),
        None => {
            network = true;
            run.client.blob(base_ref, &config_digest, &run.cache)?
        }
    };
    let config: Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    check_architecture(run, &config)?;
    let mut layer_paths = Vec::new();
    for l in &layers {
        let d = l["digest"].as_str().context("layer without digest")?;
        let p = run.cache.blob(oci::hex_of(d));
        layer_paths.push(if p.is_file() {
            p
        } else {
            network = true;
            run.client.blob(base_ref, d, &run.cache)?
        });
    }
    step.done(format!(
        "{digest}, {} layers{}",
        layers.len(),
        if network {
            ""
        } else {
            ", from the cache (no network)"
        }
    ));
    Ok(Base {
        digest,
        index_digest,
        config_digest,
        config,
        layers,
        layer_paths,
    })
}

/// Adds to an index's "no such platform" error what to give instead.
fn platform_hint(run: &RunContext, e: anyhow::Error) -> anyhow::Error {
    let hint = e.downcast_ref::<crate::registry::NoPlatform>().map(|none| {
        format!(
            "the base {} has no {} image: give --platform with one it has ({})",
            run.base_ref,
            run.platform_name,
            none.have.join(", ")
        )
    });
    match hint {
        Some(h) => e.context(h),
        None => e,
    }
}

/// Requires the base's config to be for the run's platform: a single-platform base of
/// another CPU (or a wrong `--base`) is refused before anything is built on it.
fn check_architecture(run: &RunContext, config: &Value) -> Result<()> {
    let arch = config["architecture"].as_str().unwrap_or("?");
    if arch != run.platform.arch {
        let none = crate::registry::NoPlatform {
            wanted: run.platform_name.clone(),
            have: vec![format!("linux/{arch}")],
        };
        return Err(anyhow::Error::new(none).context(format!(
            "the base {} is one linux/{arch} image: give --platform linux/{arch}, or a --base \
             whose index has a {} image",
            run.base_ref, run.platform_name
        )));
    }
    Ok(())
}

/// Stage 2: reads what the base is from its cached layers (no network). The suite and libc6 pick
/// the sysroot; the base's apt source for that suite picks the mirror (`--mirror`, the lock, or an
/// archived suite's archive host win over it); the keyring is `--keyring` or, with
/// `--archive-keyring`, the distribution's.
pub(crate) fn inspect(run: &RunContext, base: &Base) -> Result<Target> {
    let base_ref = &run.base_ref;
    let step = Step::start("inspecting the base's layers");
    let facts = base_facts(run, base)?;
    let suite = facts.version_codename.clone().with_context(|| {
        format!(
            "{base_ref}: /etc/os-release names no VERSION_CODENAME ({})",
            facts
                .pretty_name
                .as_deref()
                .unwrap_or("no PRETTY_NAME either")
        )
    })?;
    let suite_spec = run.debian.suite(&suite).cloned().with_context(|| {
        format!(
            "the base {base_ref} is {} {suite}: add the suite to images/debian.toml",
            facts.os_id
        )
    })?;
    if suite_spec.os != facts.os_id {
        bail!(
            "{base_ref} is {} {suite}, but images/debian.toml lists {suite} as {}",
            facts.os_id,
            suite_spec.os
        );
    }
    let libc6 = facts
        .libc6_version
        .clone()
        .with_context(|| format!("{base_ref}: no installed libc6 in the dpkg status"))?;
    step.done(format!(
        "{}; libc6 {libc6}; apt sources: {}",
        facts.pretty_name.clone().unwrap_or(suite.clone()),
        facts
            .apt_sources
            .iter()
            .map(|s| format!("{} {}", s.uri, s.suite))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if run.spec.distribution != format!("{} {suite}", facts.os_id) {
        progress::note(format!(
            "note: the spec expects {}, the base is {} {suite}",
            run.spec.distribution, facts.os_id
        ));
    }
    if let Some(l) = &run.usable {
        if (l.base.suite.as_str(), l.base.libc6.as_str()) != (suite.as_str(), libc6.as_str()) {
            bail!(
                "{}: the locked base {} is {} libc6 {}, but its layers say {suite} libc6 {libc6}",
                run.lock_path.display(),
                l.base.manifest_digest,
                l.base.suite,
                l.base.libc6
            );
        }
    }
    let mirror = mirror(run, &facts, &suite, &suite_spec);
    let keyring = match (&run.req.keyring, run.req.archive_keyring) {
        (Some(k), _) => Some(k.clone()),
        (None, true) => Some(suite_spec.archive_keyring(&suite, &run.cache.dir.join("keyrings"))?),
        (None, false) => None,
    };
    Ok(Target {
        facts,
        suite,
        libc6,
        suite_spec,
        mirror,
        keyring,
    })
}

/// Returns the base's facts, cached by its manifest digest: they are read from its layers
/// once.
fn base_facts(run: &RunContext, base: &Base) -> Result<BaseFacts> {
    // v2: dpkg's path filters are part of the facts.
    let path = run.cache.dir.join("facts").join(format!(
        "v2-{}.json",
        &oci::hex_of(&base.digest)[..16.min(oci::hex_of(&base.digest).len())]
    ));
    if let Some(f) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        return Ok(f);
    }
    let facts = inspect::inspect_layers(&base.layer_paths)?;
    std::fs::create_dir_all(path.parent().expect("a file path"))?;
    let tmp = tempfile::NamedTempFile::new_in(path.parent().expect("a file path"))?;
    std::fs::write(tmp.path(), serde_json::to_vec(&facts)?)?;
    tmp.persist(&path)?;
    Ok(facts)
}

/// Returns `--mirror`, else the lock's, else the base's own apt source for the suite (not for an
/// archived suite: its sources no longer serve it), else the suite's in images/debian.toml for
/// the platform (Ubuntu's arm64 is on ports.ubuntu.com).
fn mirror(run: &RunContext, facts: &BaseFacts, suite: &str, suite_spec: &SuiteSpec) -> String {
    run.req
        .mirror
        .clone()
        .or(run.usable.as_ref().map(|l| l.sysroot.mirror.clone()))
        .or_else(|| {
            (!suite_spec.archived)
                .then(|| mirror_for(facts, suite))
                .flatten()
        })
        .unwrap_or_else(|| suite_spec.mirror_for(&run.platform_name).to_string())
}

/// Returns the mirror for `suite` among the base's apt sources.
pub(crate) fn mirror_for(facts: &BaseFacts, suite: &str) -> Option<String> {
    facts
        .apt_sources
        .iter()
        .find(|s| s.suite == suite)
        .map(|s| s.uri.clone())
}
