//! The SBOM published next to each profiled image: an SPDX 2.3 JSON document made from the
//! image's lock (base digest, sysroot and jeprof tool packages), the jemalloc build (version,
//! source URL and sha256, configure flags, patches) and the image's digest and tag.
//!
//! It is a pure function of those inputs, written as canonical JSON (keys sorted, arrays sorted,
//! compact): `created` comes from `SOURCE_DATE_EPOCH` and `documentNamespace` from the image
//! digest, so the same image always gets byte-identical SBOMs (and the SBOM artifact the same
//! digest).
//!
//! The shape:
//!
//! - packages: the image (`SPDXRef-Image`, purpose `CONTAINER`, checksum = manifest digest,
//!   purl `pkg:oci/<name>@sha256:…?tag=…`); the base image (`SPDXRef-BaseImage`, with its
//!   manifest digest); jemalloc (`SPDXRef-jemalloc`, download location and sha256 of the source
//!   tarball, configure flags and patches in its `comment` and `sourceInfo`); each patch
//!   (`SPDXRef-Patch-…`, purpose `SOURCE`, sha256); each sysroot package
//!   (`SPDXRef-Sysroot-…`) and each package of the jeprof tools layer (`SPDXRef-Layer-…`) with
//!   name, version, sha256, download location and a `pkg:deb/<os>/<name>@<version>?arch=…&distro=…`
//!   purl;
//! - relationships: the document `DESCRIBES` the image; the image `DESCENDANT_OF` the base
//!   and `CONTAINS` jemalloc and every layered package; each sysroot package is a
//!   `BUILD_DEPENDENCY_OF` jemalloc, each patch `PATCH_APPLIED` to it, and jemalloc
//!   `GENERATED_FROM` its source tarball's download location (as the package itself).
//!
//! It uses `serde_json` rather than `spdx-rs`: that crate models SPDX 2.2.1 (no
//! `primaryPackagePurpose`, no 2.3 relationship types), was last released in 2023, pulls `chrono`,
//! `nom` and `uuid` in, and serialises through its own structs, so the sorted, byte-stable output
//! we want would still be ours to guarantee.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::build::PatchInfo;
use crate::image::lock::Lock;

pub(crate) const SPDX_MEDIA_TYPE: &str = "application/spdx+json";

/// The jemalloc build the image carries.
#[derive(Debug, Clone)]
pub(crate) struct Jemalloc {
    pub version: String,
    pub configure_flags: Vec<String>,
    /// The release's patch directory (`patches/jemalloc-5.2.1`).
    pub patch_dir: String,
    pub patches: Vec<PatchInfo>,
}

/// Everything the SBOM is made from.
#[derive(Debug, Clone)]
pub(crate) struct Input<'a> {
    pub lock: &'a Lock,
    pub jemalloc: &'a Jemalloc,
    /// The image manifest digest (`sha256:…`).
    pub image_digest: &'a str,
    /// The image's name: the last component of its repository (`flink-jemalloc`).
    pub image_name: &'a str,
    /// The image's tag (`1.17.2-scala_2.12-java11-jemalloc-5.2.1-prof`).
    pub tag: &'a str,
    pub source_date_epoch: u64,
}

/// Percent-encodes a purl component: everything but `A-Za-z0-9.-_~`.
fn purl_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b".-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Returns an SPDX identifier part: letters, digits, `.` and `-` only; anything else becomes `-XX`
/// (uppercase hex: `libstdc++6` → `libstdc-2B-2B6`), which cannot collide for Debian package names
/// (lowercase by policy). [`document`] refuses duplicate identifiers anyway.
fn spdx_id_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("-{b:02X}"));
        }
    }
    out
}

/// Returns `pkg:deb/<os>/<name>@<version>?arch=<arch>&distro=<suite>`.
fn deb_purl(os: &str, name: &str, version: &str, arch: &str, suite: &str) -> String {
    format!(
        "pkg:deb/{}/{}@{}?arch={}&distro={}",
        purl_encode(os),
        purl_encode(name),
        purl_encode(version),
        purl_encode(arch),
        purl_encode(suite)
    )
}

/// Returns the architecture in a pool file name (`…_amd64.deb` → `amd64`).
fn arch_of_filename(filename: &str) -> Option<&str> {
    filename
        .strip_suffix(".deb")
        .and_then(|f| f.rsplit_once('_'))
        .map(|(_, a)| a)
}

fn hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("`{digest}` is not a sha256 digest"))
}

fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

fn sha256(hex: &str) -> Value {
    json!([{"algorithm": "SHA256", "checksumValue": hex}])
}

/// Returns the mirror of a tool pin's `repository` (`<mirror> <suite>/<component>`).
fn mirror_of(repository: &str) -> &str {
    repository.split_whitespace().next().unwrap_or(repository)
}

#[allow(clippy::too_many_arguments)]
fn deb_package(
    id: String,
    os: &str,
    suite: &str,
    name: &str,
    version: &str,
    arch: &str,
    location: String,
    sha: &str,
    comment: &str,
) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": version,
        "downloadLocation": location,
        "checksums": sha256(sha),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "primaryPackagePurpose": "LIBRARY",
        "comment": comment,
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": deb_purl(os, name, version, arch, suite),
        }],
    })
}

fn relationship(a: &str, kind: &str, b: &str) -> Value {
    json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b})
}

/// The document's packages and relationships, as they are added.
#[derive(Default)]
struct Parts {
    packages: Vec<Value>,
    relationships: Vec<Value>,
}

impl Parts {
    fn relate(&mut self, a: &str, kind: &str, b: &str) {
        self.relationships.push(relationship(a, kind, b));
    }
}

/// Returns the SPDX 2.3 document as a JSON value (arrays sorted): the image, the base it
/// descends from, jemalloc with its patches and the sysroot it was built against, and every
/// layered package.
pub(crate) fn document(input: &Input) -> Result<Value> {
    let image_hex = hex(input.image_digest)?;
    let created = time::OffsetDateTime::from_unix_timestamp(input.source_date_epoch as i64)
        .context("SOURCE_DATE_EPOCH out of range")?
        .format(&time::format_description::well_known::Rfc3339)?;
    let mut parts = Parts::default();
    parts.relate("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image");
    parts.packages.push(image_package(input, image_hex));
    base_image(input, &mut parts)?;
    jemalloc(input, &mut parts);
    debian_packages(input, &mut parts);
    let Parts {
        mut packages,
        mut relationships,
    } = parts;
    let ids: std::collections::BTreeSet<&str> = packages
        .iter()
        .filter_map(|p| p["SPDXID"].as_str())
        .collect();
    if ids.len() != packages.len() {
        anyhow::bail!("two packages of the SBOM have the same SPDX identifier");
    }
    packages.sort_by(|a, b| a["SPDXID"].as_str().cmp(&b["SPDXID"].as_str()));
    relationships.sort_by_key(|r| {
        (
            r["spdxElementId"].as_str().unwrap_or("").to_string(),
            r["relationshipType"].as_str().unwrap_or("").to_string(),
            r["relatedSpdxElement"].as_str().unwrap_or("").to_string(),
        )
    });
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}:{}", input.image_name, input.tag),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/flink-jemalloc/{}-sha256-{image_hex}",
            spdx_id_part(input.tag)
        ),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: flink-jemalloc-xtask-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages,
        "relationships": relationships,
    }))
}

/// Returns the package of the image itself.
fn image_package(input: &Input, image_hex: &str) -> Value {
    let lock = input.lock;
    json!({
        "SPDXID": "SPDXRef-Image",
        "name": input.image_name,
        "versionInfo": input.tag,
        "downloadLocation": "NOASSERTION",
        "checksums": sha256(image_hex),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "comment": format!(
            "Flink {} ({}) with a profiling jemalloc {} under /opt/jemalloc and jeprof's tools",
            lock.flink, lock.base.reference, input.jemalloc.version
        ),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!(
                "pkg:oci/{}@{}?tag={}",
                purl_encode(input.image_name),
                purl_encode(input.image_digest),
                purl_encode(input.tag)
            ),
        }],
    })
}

/// Adds the base image, which the image descends from.
fn base_image(input: &Input, parts: &mut Parts) -> Result<()> {
    let lock = input.lock;
    let (os, suite) = (lock.base.os.as_str(), lock.base.suite.as_str());
    let base: crate::registry::Reference = lock.base.reference.parse()?;
    let base_name = base.repository.rsplit('/').next().unwrap_or("base");
    let mut base_purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        purl_encode(base_name),
        purl_encode(&lock.base.manifest_digest),
        purl_encode(&format!("{}/{}", base.registry, base.repository))
    );
    if let Some(t) = &base.tag {
        base_purl.push_str(&format!("&tag={}", purl_encode(t)));
    }
    parts.packages.push(json!({
        "SPDXID": "SPDXRef-BaseImage",
        "name": lock.base.reference,
        "versionInfo": lock.base.manifest_digest,
        "downloadLocation": "NOASSERTION",
        "checksums": sha256(hex(&lock.base.manifest_digest)?),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "comment": format!("{os} {suite}, libc6 {}", lock.base.libc6),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": base_purl,
        }],
    }));
    parts.relate("SPDXRef-Image", "DESCENDANT_OF", "SPDXRef-BaseImage");

    Ok(())
}

/// Adds jemalloc, and each patch applied to it.
fn jemalloc(input: &Input, parts: &mut Parts) {
    let (lock, j) = (input.lock, input.jemalloc);
    let (os, suite) = (lock.base.os.as_str(), lock.base.suite.as_str());
    let patches: Vec<String> = j
        .patches
        .iter()
        .map(|p| format!("{} (sha256 {})", p.name, p.sha256))
        .collect();
    parts.packages.push(json!({
        "SPDXID": "SPDXRef-jemalloc",
        "name": "jemalloc",
        "versionInfo": j.version,
        "downloadLocation": lock.jemalloc.url,
        "checksums": sha256(&lock.jemalloc.sha256),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "BSD-2-Clause",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "homepage": "https://jemalloc.net/",
        "primaryPackagePurpose": "LIBRARY",
        "sourceInfo": format!(
            "built from {} against the {os} {suite} sysroot: ./configure {}; patches: {}",
            lock.jemalloc.url,
            j.configure_flags.join(" "),
            if patches.is_empty() { "none".to_string() } else { patches.join(", ") }
        ),
        "comment": format!(
            "configure flags: {}; patches: {}",
            j.configure_flags.join(" "),
            j.patches.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",")
        ),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:github/jemalloc/jemalloc@{}", purl_encode(&j.version)),
        }],
    }));
    parts.relate("SPDXRef-Image", "CONTAINS", "SPDXRef-jemalloc");

    for p in &j.patches {
        let id = format!("SPDXRef-Patch-{}", spdx_id_part(&p.name));
        parts.packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "downloadLocation": "NOASSERTION",
            "checksums": sha256(&p.sha256),
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "SOURCE",
            "comment": format!("{}/{}, applied with patch -p1", j.patch_dir, p.name),
        }));
        parts.relate(&id, "PATCH_APPLIED", "SPDXRef-jemalloc");
    }
}

/// Adds the sysroot's packages (build dependencies of jemalloc, not in the image) and the
/// layered ones.
fn debian_packages(input: &Input, parts: &mut Parts) {
    let lock = input.lock;
    let (os, suite) = (lock.base.os.as_str(), lock.base.suite.as_str());
    for p in &lock.sysroot.packages {
        let id = format!("SPDXRef-Sysroot-{}", spdx_id_part(&p.name));
        let arch = arch_of_filename(&p.filename).unwrap_or("amd64");
        parts.packages.push(deb_package(
            id.clone(),
            os,
            suite,
            &p.name,
            &p.version,
            arch,
            join_url(&lock.sysroot.mirror, &p.filename),
            &p.sha256,
            "in the sysroot jemalloc was compiled and linked against (not in the image)",
        ));
        parts.relate(&id, "BUILD_DEPENDENCY_OF", "SPDXRef-jemalloc");
    }

    for p in &lock.tools {
        let id = format!("SPDXRef-Layer-{}", spdx_id_part(&p.name));
        parts.packages.push(deb_package(
            id.clone(),
            os,
            suite,
            &p.name,
            &p.version,
            &p.arch,
            join_url(mirror_of(&p.repository), &p.filename),
            &p.sha256,
            "layered for jeprof (binutils, graphviz, perl, file and what they depend on)",
        ));
        parts.relate("SPDXRef-Image", "CONTAINS", &id);
    }
}

/// Returns the document as canonical JSON bytes (the SBOM blob).
pub(crate) fn to_bytes(input: &Input) -> Result<Vec<u8>> {
    Ok(crate::oci::canonical(&document(input)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::sysroot::Pinned;
    use crate::image::lock::DebPin;
    use crate::image::lock::{BaseLock, JemallocLock, SysrootLock};

    fn lock(os: &str, suite: &str) -> Lock {
        Lock {
            version: 1,
            flink: "1.17.2".into(),
            platform: None,
            source_date_epoch: 0,
            base: BaseLock {
                reference: "docker.io/library/flink:1.17.2-scala_2.12-java11".into(),
                index_digest: None,
                manifest_digest: format!("sha256:{}", "a".repeat(64)),
                os: os.into(),
                suite: suite.into(),
                libc6: "2.35-0ubuntu3.8".into(),
            },
            jemalloc: JemallocLock {
                url: "https://github.com/jemalloc/jemalloc/releases/download/5.2.1/jemalloc-5.2.1.tar.bz2".into(),
                sha256: "34330e5ce276099e2e8950d9335db5a875689a4c6a56751ef3b1d8c537f887f6".into(),
            },
            sysroot: SysrootLock {
                mirror: "http://archive.ubuntu.com/ubuntu/".into(),
                packages: vec![
                    Pinned {
                        name: "libc6".into(),
                        version: "2.35-0ubuntu3.8".into(),
                        filename: "pool/main/g/glibc/libc6_2.35-0ubuntu3.8_amd64.deb".into(),
                        size: 1,
                        sha256: "c".repeat(64),
                    },
                    Pinned {
                        name: "libstdc++6".into(),
                        version: "12.3.0-1ubuntu1~22.04".into(),
                        filename: "pool/main/g/gcc-12/libstdc++6_12.3.0-1ubuntu1~22.04_amd64.deb"
                            .into(),
                        size: 1,
                        sha256: "d".repeat(64),
                    },
                ],
            },
            tools: vec![
                DebPin {
                    name: "perl".into(),
                    version: "5.34.0-3ubuntu1.3".into(),
                    arch: "amd64".into(),
                    multi_arch: None,
                    filename: "pool/main/p/perl/perl_5.34.0-3ubuntu1.3_amd64.deb".into(),
                    size: 1,
                    sha256: "e".repeat(64),
                    repository: "http://archive.ubuntu.com/ubuntu jammy/main".into(),
                },
                DebPin {
                    name: "libgvc6".into(),
                    version: "2.42.2-6ubuntu0.1".into(),
                    arch: "amd64".into(),
                    multi_arch: Some("same".into()),
                    filename: "pool/universe/g/graphviz/libgvc6_2.42.2-6ubuntu0.1_amd64.deb"
                        .into(),
                    size: 1,
                    sha256: "f".repeat(64),
                    repository: "http://archive.ubuntu.com/ubuntu jammy/universe".into(),
                },
            ],
        }
    }

    fn jemalloc() -> Jemalloc {
        Jemalloc {
            version: "5.2.1".into(),
            configure_flags: vec!["--enable-prof".into(), "--enable-debug".into()],
            patch_dir: "patches/jemalloc-5.2.1".into(),
            patches: vec![PatchInfo {
                name: "0001-jeprof-compare-os-name-as-string.patch".into(),
                sha256: "1".repeat(64),
            }],
        }
    }

    fn input<'a>(lock: &'a Lock, j: &'a Jemalloc, digest: &'a str) -> Input<'a> {
        Input {
            lock,
            jemalloc: j,
            image_digest: digest,
            image_name: "flink-jemalloc",
            tag: "1.17.2-scala_2.12-java11-jemalloc-5.2.1-prof",
            source_date_epoch: 0,
        }
    }

    fn package<'a>(doc: &'a Value, id: &str) -> &'a Value {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["SPDXID"] == id)
            .unwrap_or_else(|| panic!("no package {id}"))
    }

    fn has_rel(doc: &Value, a: &str, kind: &str, b: &str) -> bool {
        doc["relationships"]
            .as_array()
            .unwrap()
            .contains(&relationship(a, kind, b))
    }

    #[test]
    fn names_jemalloc_every_package_and_the_base() {
        let (l, j) = (lock("ubuntu", "jammy"), jemalloc());
        let digest = format!("sha256:{}", "9".repeat(64));
        let doc = document(&input(&l, &j, &digest)).unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["dataLicense"], "CC0-1.0");
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        assert!(doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(&"9".repeat(64)));

        let jm = package(&doc, "SPDXRef-jemalloc");
        assert_eq!(jm["versionInfo"], "5.2.1");
        assert_eq!(jm["downloadLocation"], l.jemalloc.url.as_str());
        assert_eq!(
            jm["checksums"][0]["checksumValue"],
            l.jemalloc.sha256.as_str()
        );
        assert!(jm["comment"]
            .as_str()
            .unwrap()
            .contains("--enable-prof --enable-debug"));
        let image = package(&doc, "SPDXRef-Image");
        assert_eq!(image["checksums"][0]["checksumValue"], "9".repeat(64));
        let base = package(&doc, "SPDXRef-BaseImage");
        assert_eq!(base["versionInfo"], l.base.manifest_digest.as_str());
        assert_eq!(
            base["externalRefs"][0]["referenceLocator"],
            format!(
                "pkg:oci/flink@sha256%3A{}?repository_url=docker.io%2Flibrary%2Fflink&tag=1.17.2-scala_2.12-java11",
                "a".repeat(64)
            )
        );

        let stdcxx = package(&doc, "SPDXRef-Sysroot-libstdc-2B-2B6");
        assert_eq!(
            stdcxx["externalRefs"][0]["referenceLocator"],
            "pkg:deb/ubuntu/libstdc%2B%2B6@12.3.0-1ubuntu1~22.04?arch=amd64&distro=jammy"
        );
        assert_eq!(
            stdcxx["downloadLocation"],
            "http://archive.ubuntu.com/ubuntu/pool/main/g/gcc-12/libstdc++6_12.3.0-1ubuntu1~22.04_amd64.deb"
        );
        let gvc = package(&doc, "SPDXRef-Layer-libgvc6");
        assert_eq!(gvc["versionInfo"], "2.42.2-6ubuntu0.1");
        assert_eq!(
            gvc["downloadLocation"],
            "http://archive.ubuntu.com/ubuntu/pool/universe/g/graphviz/libgvc6_2.42.2-6ubuntu0.1_amd64.deb"
        );

        assert!(has_rel(
            &doc,
            "SPDXRef-DOCUMENT",
            "DESCRIBES",
            "SPDXRef-Image"
        ));
        assert!(has_rel(
            &doc,
            "SPDXRef-Image",
            "DESCENDANT_OF",
            "SPDXRef-BaseImage"
        ));
        assert!(has_rel(
            &doc,
            "SPDXRef-Image",
            "CONTAINS",
            "SPDXRef-jemalloc"
        ));
        for t in &l.tools {
            let id = format!("SPDXRef-Layer-{}", spdx_id_part(&t.name));
            assert!(has_rel(&doc, "SPDXRef-Image", "CONTAINS", &id), "{id}");
        }
        for s in &l.sysroot.packages {
            let id = format!("SPDXRef-Sysroot-{}", spdx_id_part(&s.name));
            assert!(
                has_rel(&doc, &id, "BUILD_DEPENDENCY_OF", "SPDXRef-jemalloc"),
                "{id}"
            );
        }
        assert!(has_rel(
            &doc,
            "SPDXRef-Patch-0001-jeprof-compare-os-name-as-string.patch",
            "PATCH_APPLIED",
            "SPDXRef-jemalloc"
        ));
        // Every package has the fields SPDX 2.3 requires of it, and every ID is valid.
        for p in doc["packages"].as_array().unwrap() {
            let id = p["SPDXID"].as_str().unwrap();
            assert!(
                id.starts_with("SPDXRef-")
                    && id["SPDXRef-".len()..]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
                "{id}"
            );
            for f in ["name", "downloadLocation"] {
                assert!(p[f].is_string(), "{id} lacks {f}");
            }
        }
    }

    #[test]
    fn deterministic_sorted_and_keyed_by_the_image() {
        let (l, j) = (lock("debian", "bookworm"), jemalloc());
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let a = to_bytes(&input(&l, &j, &d1)).unwrap();
        assert_eq!(a, to_bytes(&input(&l, &j, &d1)).unwrap());
        // The tools in another order give the same document.
        let mut l2 = l.clone();
        l2.tools.reverse();
        assert_eq!(a, to_bytes(&input(&l2, &j, &d1)).unwrap());
        // Canonical: re-serialising the parsed bytes gives the bytes.
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(crate::oci::canonical(&v), a);
        let ids: Vec<&str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        // Another image, another namespace.
        let b: Value = serde_json::from_slice(&to_bytes(&input(&l, &j, &d2)).unwrap()).unwrap();
        assert_ne!(v["documentNamespace"], b["documentNamespace"]);
        // The epoch is the creation time; Debian purls name debian.
        let mut i = input(&l, &j, &d1);
        i.source_date_epoch = 1_700_000_000;
        let c = document(&i).unwrap();
        assert_eq!(c["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert!(
            package(&c, "SPDXRef-Layer-perl")["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .starts_with("pkg:deb/debian/perl@5.34.0-3ubuntu1.3?arch=amd64&distro=bookworm")
        );
        assert!(document(&input(&l, &j, "sha256:short")).is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(purl_encode("2.31-13+deb11u5"), "2.31-13%2Bdeb11u5");
        assert_eq!(purl_encode("1:4.4.18-4"), "1%3A4.4.18-4");
        assert_eq!(spdx_id_part("g++"), "g-2B-2B");
        assert_eq!(spdx_id_part("libc6-dev"), "libc6-dev");
        assert_ne!(spdx_id_part("a.b"), spdx_id_part("a_b"));
        assert_eq!(
            arch_of_filename("pool/main/p/perl/perl_5.32_all.deb"),
            Some("all")
        );
    }
}
