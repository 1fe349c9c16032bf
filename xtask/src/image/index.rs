//! `image --platform linux/amd64,linux/arm64`: the stages run once per platform, each with
//! its own base manifest (from the base's index), jemalloc build, tools and lock; then one
//! OCI image index over the images is written (a layout whose `index.json` names the index)
//! and pushed (each image by digest, then the index by tag). A platform the base's index
//! lacks is said and left out; the others are built.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::cache::cache_blob;
use super::config::Assembled;
use super::context::{self, RunContext};
use super::lock::Lock;
use super::locking;
use super::made::{note_requests, stages, Built, Made, PlatformBuilt};
use super::output;
use super::request::{Format, Request};
use crate::oci::{self, Blob};
use crate::progress::{self, Step};
use crate::registry::{NoPlatform, RegistryClient};
use crate::spec::{DebianSpec, FlinkSpec};

/// One platform's image, as its stages made it.
struct PlatformImage {
    platform: String,
    arch: String,
    image: Assembled,
    lock: Lock,
}

/// Runs the stages for every platform, then writes, pushes the index (or, for `lock`,
/// writes each platform's lock).
pub(crate) fn make(req: &Request) -> Result<Built> {
    let requests: Vec<Request> = platform_requests(req)?;
    let before = crate::download::requests();
    // Every platform's spec and lock are resolved before any work (`--locked` fails first).
    let runs = requests
        .iter()
        .map(|r| {
            context::resolve(r).with_context(|| {
                format!(
                    "{}: if the base has no such image, leave it out of --platform",
                    r.platform()
                )
            })
        })
        .collect::<Result<Vec<RunContext>>>()?;
    let mut images = Vec::new();
    let mut compiled = false;
    let mut locked = Vec::new();
    for run in &runs {
        match stages(run) {
            Ok(Made::Image {
                image,
                lock,
                compiled: c,
            }) => {
                compiled |= c;
                images.push((
                    run,
                    PlatformImage {
                        platform: run.platform_name.clone(),
                        arch: run.platform.arch.clone(),
                        image,
                        lock,
                    },
                ));
            }
            Ok(Made::Locked { base_digest, lock }) => locked.push((run, base_digest, lock)),
            Err(e) if e.downcast_ref::<NoPlatform>().is_some() => {
                let none = e.downcast_ref::<NoPlatform>().expect("checked");
                progress::note(format!(
                    "the base {} has {}, no {}: {} the other platforms",
                    run.base_ref,
                    none.have.join(", "),
                    none.wanted,
                    if req.lock_only { "locking" } else { "building" }
                ))
            }
            Err(e) => return Err(e),
        }
    }
    if req.lock_only {
        return lock_only(req, locked);
    }
    let Some((first, _)) = images.first() else {
        bail!(
            "the base has none of the platforms {}: nothing to build",
            req.platforms.join(", ")
        );
    };
    let built = write(req, first, &images)?;
    note_requests(before, compiled);
    Ok(built)
}

/// Returns one request per platform, after checking the flags an index cannot take.
fn platform_requests(req: &Request) -> Result<Vec<Request>> {
    if req.load.is_some() {
        bail!(
            "--load takes one platform (the engine's): give --platform linux/amd64 or \
             --platform linux/arm64 with --load"
        );
    }
    let is_tar = req
        .output
        .as_ref()
        .is_some_and(|p| p.extension().is_some_and(|e| e == "tar"));
    if req.format == Format::DockerArchive && is_tar {
        bail!(
            "--format docker-archive holds one platform: give one --platform, or write an OCI \
             layout or .tar (--format oci) for the index"
        );
    }
    let debian = DebianSpec::load(&crate::project::root())?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &req.platforms {
        if !seen.insert(p.as_str()) {
            bail!("--platform names {p} twice");
        }
        debian.platform(p)?;
    }
    // The official base: the platforms its spec says its index has (no lock is asked of the
    // others). Another `--base` is taken at its word, and what it lacks is said later.
    let dir = FlinkSpec::dir_or_default(req.specs.as_deref());
    let spec = FlinkSpec::load_in(&dir, &req.flink)?;
    let (kept, left): (Vec<&String>, Vec<&String>) = req
        .platforms
        .iter()
        .partition(|p| req.base.is_some() || spec.platforms.contains(p));
    if !left.is_empty() {
        let names = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        if kept.is_empty() {
            bail!(
                "the official image of {} has {}, none of {} (`platforms` in {})",
                req.flink,
                spec.platforms.join(", "),
                names(&left),
                dir.join(format!("flink-{}.toml", req.flink)).display()
            );
        }
        progress::note(format!(
            "the official image of {} has {}: leaving out {}",
            req.flink,
            spec.platforms.join(", "),
            names(&left)
        ));
    }
    Ok(kept.into_iter().map(|p| req.for_platform(p)).collect())
}

/// `lock` of several platforms: each wrote its own; the first is what is returned.
fn lock_only(req: &Request, locked: Vec<(&RunContext, String, Lock)>) -> Result<Built> {
    let images: Vec<PlatformBuilt> = locked
        .iter()
        .map(|(run, digest, lock)| PlatformBuilt {
            platform: run.platform_name.clone(),
            manifest_digest: digest.clone(),
            lock: lock.clone(),
            lock_path: run.lock_path.clone(),
        })
        .collect();
    let Some((run, digest, lock)) = locked.into_iter().next() else {
        bail!(
            "the base has none of the platforms {}: nothing to lock",
            req.platforms.join(", ")
        );
    };
    Ok(Built {
        manifest_digest: digest,
        output: run.lock_path.clone(),
        pushed: None,
        lock,
        images,
    })
}

/// Returns the OCI image index over `images`, in the order of `--platform`.
fn index_json(images: &[(&RunContext, PlatformImage)], annotations: &[(String, String)]) -> Value {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(_, p)| {
            let mut d = p.image.manifest.descriptor();
            d["platform"] = json!({"os": "linux", "architecture": p.arch});
            d
        })
        .collect();
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": manifests,
    });
    if !annotations.is_empty() {
        index["annotations"] = oci::annotations_json(annotations);
    }
    index
}

/// Writes the index's layout (or `.tar`) and pushes it, as `req` (the whole request) asks;
/// `first` is the first platform's run (its cache, client and spec serve every platform's).
fn write(
    req: &Request,
    first: &RunContext,
    images: &[(&RunContext, PlatformImage)],
) -> Result<Built> {
    let index: Blob = cache_blob(
        &first.cache,
        oci::OCI_INDEX,
        oci::canonical(&index_json(images, &req.labels)),
    )?;
    let mut blobs: Vec<String> = Vec::new();
    for (_, p) in images {
        blobs.push(p.image.manifest.digest.clone());
        blobs.extend(p.image.blobs.iter().cloned());
    }
    blobs.dedup();
    let tag = images[0].1.image.tag.clone();
    let path = req
        .output
        .clone()
        .unwrap_or_else(|| output::default_path(first, false));
    output::write_oci(first, &index, &blobs, &tag, &path)?;
    progress::note(format!(
        "index {} ({}) written to {}",
        index.digest,
        images
            .iter()
            .map(|(_, p)| p.platform.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        path.display()
    ));
    let pushed = match &req.push {
        Some(target) => Some(push(req, first, images, &index, &target.parse()?)?),
        None => None,
    };
    // The locks once everything is written and pushed: a failed run leaves them as they were.
    for (run, p) in images {
        locking::keep(run, &p.lock)?;
    }
    let built: Vec<PlatformBuilt> = images
        .iter()
        .map(|(run, p)| PlatformBuilt {
            platform: p.platform.clone(),
            manifest_digest: p.image.manifest.digest.clone(),
            lock: p.lock.clone(),
            lock_path: run.lock_path.clone(),
        })
        .collect();
    Ok(Built {
        manifest_digest: index.digest,
        output: path,
        pushed,
        lock: images[0].1.lock.clone(),
        images: built,
    })
}

/// Pushes each image by digest (its blobs first), then the index as the target's tag;
/// returns `repo@<index digest>`.
fn push(
    req: &Request,
    first: &RunContext,
    images: &[(&RunContext, PlatformImage)],
    index: &Blob,
    target: &crate::registry::Reference,
) -> Result<String> {
    let step = Step::start(format!("pushing the index to {target}"));
    // The push registry's credentials (`--registry-user`), as one image's push gets them;
    // each platform's run has the base registry's only.
    let client = RegistryClient::new(req.plain_http, context::auths(req, &first.base_ref)?);
    let mut uploaded = 0;
    for (_, p) in images {
        let (_, n) = output::push_image(
            &client,
            &first.cache,
            &p.image,
            target,
            &p.image.manifest.digest,
        )?;
        uploaded += n;
    }
    let digest = client.put_manifest(target, target.reference(), &index.data, oci::OCI_INDEX)?;
    step.done(format!(
        "{digest} ({} images); {uploaded} blobs uploaded, the rest were there",
        images.len()
    ));
    Ok(format!(
        "{}/{}@{digest}",
        target.registry, target.repository
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::lock::{BaseLock, JemallocLock, SysrootLock};

    #[test]
    fn the_index_names_each_image_with_its_platform_in_order() {
        let req = Request::new("2.2.1").unwrap();
        let run = context::resolve(&req).unwrap();
        let lock = Lock {
            version: 1,
            flink: "2.2.1".into(),
            platform: None,
            source_date_epoch: 0,
            base: BaseLock {
                reference: "b".into(),
                index_digest: None,
                manifest_digest: "sha256:00".into(),
                os: "ubuntu".into(),
                suite: "noble".into(),
                libc6: "2.39".into(),
            },
            jemalloc: JemallocLock {
                url: "u".into(),
                sha256: "s".into(),
            },
            sysroot: SysrootLock {
                mirror: "m".into(),
                packages: vec![],
            },
            tools: vec![],
        };
        let image = |n: u8| Assembled {
            config: Blob::new(oci::OCI_CONFIG, vec![n]),
            manifest: Blob::new(oci::OCI_MANIFEST, vec![n, n]),
            blobs: vec![],
            tag: "t".into(),
        };
        let images = vec![
            (
                &run,
                PlatformImage {
                    platform: "linux/amd64".into(),
                    arch: "amd64".into(),
                    image: image(1),
                    lock: lock.clone(),
                },
            ),
            (
                &run,
                PlatformImage {
                    platform: "linux/arm64".into(),
                    arch: "arm64".into(),
                    image: image(2),
                    lock,
                },
            ),
        ];
        let v = index_json(&images, &[]);
        assert_eq!(v["mediaType"], oci::OCI_INDEX);
        assert!(v.get("annotations").is_none());
        let m = v["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0]["platform"],
            json!({"os": "linux", "architecture": "amd64"})
        );
        assert_eq!(m[1]["platform"]["architecture"], "arm64");
        assert_eq!(m[1]["digest"], images[1].1.image.manifest.digest.as_str());
        assert_eq!(m[1]["mediaType"], oci::OCI_MANIFEST);
        let labelled = index_json(&images, &[("k".into(), "v".into())]);
        assert_eq!(labelled["annotations"]["k"], "v");
    }

    #[test]
    fn flags_an_index_cannot_take_are_refused_before_any_work() {
        let mut req = Request::new("2.2.1").unwrap();
        req.platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
        req.load = Some(super::super::LoadTarget::Docker);
        let e = platform_requests(&req).unwrap_err().to_string();
        assert!(e.contains("--load takes one platform"), "{e}");
        req.load = None;
        req.format = Format::DockerArchive;
        req.output = Some("/w/i.tar".into());
        let e = platform_requests(&req).unwrap_err().to_string();
        assert!(e.contains("docker-archive holds one platform"), "{e}");
        req.format = Format::Oci;
        req.platforms = vec!["linux/arm64".into(), "linux/arm64".into()];
        let e = platform_requests(&req).unwrap_err().to_string();
        assert!(e.contains("names linux/arm64 twice"), "{e}");
        req.platforms = vec!["linux/amd64".into(), "linux/riscv64".into()];
        let e = platform_requests(&req).unwrap_err().to_string();
        assert!(e.contains("no platform linux/riscv64"), "{e}");
        req.platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
        let each = platform_requests(&req).unwrap();
        assert_eq!(each[1].platforms, ["linux/arm64"]);
        // 1.10's official index is amd64 only: arm64 is left out, and no lock asked of it.
        let mut old = Request::new("1.10.3").unwrap();
        old.platforms = req.platforms.clone();
        let each = platform_requests(&old).unwrap();
        assert_eq!(each.len(), 1);
        assert_eq!(each[0].platforms, ["linux/amd64"]);
        // Another --base is taken at its word.
        old.base = Some("registry.example/flink:1.10.3-multi".into());
        assert_eq!(platform_requests(&old).unwrap().len(), 2);
        old.base = None;
        old.platforms = vec!["linux/arm64".into(), "linux/arm64".into()];
        assert!(platform_requests(&old).is_err());
    }
}
