//! The publish pipeline, dry-run locally: a real `docker-registry` on loopback holding two
//! fixture Flink bases of different suites (bullseye with OpenJDK 11, bookworm with OpenJDK
//! 17), a specs directory with one spec for each, the signed fixture Debian repositories and
//! the jemalloc stand-in served over loopback. `cargo xtask publish` runs twice, the second
//! time `--locked` with a cold cache of its own; both runs must push the same digests, tag
//! them `<tag>-jemalloc-5.2.1-prof`, and put an SPDX SBOM beside each image that names
//! jemalloc 5.2.1 and every package of the lock, and that the SPDX reference tools accept.

use crate::support::{sh, stderr, stdout, xtask, Server};
use harness::fixtures::{flink_base, registry::Registry};
use serde_json::Value;
use std::path::Path;
use xtask::image::lock::Lock;
use xtask::registry::{Reference, RegistryClient};

const SUITES: [&str; 2] = ["bullseye", "bookworm"];

fn spec_toml(suite: &str, base: &str) -> String {
    let b = flink_base::base_suite(suite).unwrap();
    let java = if suite == "bookworm" { "17" } else { "11" };
    format!(
        "# The {suite} fixture base.\nflink = \"1.10.3\"\ntag = \"1.10.3-{suite}\"\nbase = \"{base}\"\n\
         scala = \"2.11\"\njava = \"{java}\"\njava_home = \"{}\"\nflink_home = \"/opt/flink\"\n\
         user = \"flink\"\nuid = 9999\ndistribution = \"debian {suite}\"\n",
        b.java_home
    )
}

fn report(path: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["images"].as_array().unwrap().clone()
}

#[test]
fn publish_dry_run_two_suites_stable_digests_and_sboms() {
    let _serial = crate::support::serial();
    let started = std::time::Instant::now();
    let repos: Vec<_> = SUITES
        .iter()
        .map(|s| harness::fixtures::debian_repo_with_tools(s).expect("fixture Debian repository"))
        .collect();
    let standin = harness::fixtures::jemalloc_standin().expect("fixture jemalloc source");
    let registry = Registry::start().expect("a loopback registry");
    let addr = registry.addr.clone();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // One keyring for both signed repositories (binary keyrings concatenate), one mirror
    // URL serving both (`dists/<suite>` differ; a pool file of the same name is the same
    // package version).
    let keyring = w.join("keyring.gpg");
    let mut kr = Vec::new();
    for r in &repos {
        kr.extend(std::fs::read(&r.keyring).unwrap());
    }
    std::fs::write(&keyring, kr).unwrap();
    let files = Server::serve(vec![
        ("/debian", repos[0].dir.clone()),
        ("/debian", repos[1].dir.clone()),
        ("/jemalloc-5.2.1.tar.bz2", standin.tarball.clone()),
    ]);

    let specs = w.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let mut base_digests = Vec::new();
    for suite in SUITES {
        let repo_tag = format!("fixtures/flink:1.10.3-{suite}");
        let digest = flink_base::push_flink_base_for(suite, &addr, &repo_tag)
            .unwrap_or_else(|e| panic!("pushing the {suite} fixture base: {e:#}"));
        base_digests.push(digest);
        std::fs::write(
            specs.join(format!("flink-fixture-{suite}.toml")),
            spec_toml(suite, &format!("{addr}/{repo_tag}")),
        )
        .unwrap();
    }
    eprintln!("fixtures ready after {:?}", started.elapsed());

    // `--list --json` sees the temporary specs (as the lock-refresh workflow reads them).
    let specs_s = specs.to_str().unwrap().to_string();
    let out = xtask(&["image", "--list", "--json", "--specs", &specs_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let mirror = files.url("debian");
    let url = files.url("jemalloc-5.2.1.tar.bz2");
    let publish = |cache: &Path, report: &Path, extra: &[&str]| {
        let mut args = vec![
            "publish",
            "--registry",
            &addr,
            "--plain-http",
            "--specs",
            &specs_s,
            "--mirror",
            &mirror,
            "--keyring",
            keyring.to_str().unwrap(),
            "--url",
            &url,
            "--sha256",
            standin.sha256.as_str(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let t = std::time::Instant::now();
        let out = xtask(&args);
        assert!(out.status.success(), "publish failed:\n{}", stderr(&out));
        eprintln!("publish {extra:?} took {:?}", t.elapsed());
        out
    };

    // First run: resolves and writes the locks beside the specs.
    let r1 = w.join("report-1.json");
    let out1 = publish(&w.join("cache-1"), &r1, &[]);
    for suite in SUITES {
        assert!(
            specs.join(format!("flink-fixture-{suite}.lock")).is_file(),
            "lock for {suite} written"
        );
    }
    // Second run: --locked, a cold cache of its own.
    let r2 = w.join("report-2.json");
    publish(&w.join("cache-2"), &r2, &["--locked"]);

    let (first, second) = (report(&r1), report(&r2));
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first, second, "the same digests from a cold --locked run");
    let printed = stdout(&out1);

    let client = RegistryClient::new(true, xtask::registry::Auths::anonymous());
    for (i, suite) in SUITES.iter().enumerate() {
        let img = first
            .iter()
            .find(|p| p["spec"] == format!("fixture-{suite}"))
            .unwrap_or_else(|| panic!("{suite} in the report: {first:?}"));
        let digest = img["digest"].as_str().unwrap();
        let tag = format!("1.10.3-{suite}-jemalloc-5.2.1-prof");
        assert_eq!(img["tag"], tag.as_str());
        assert_eq!(img["image"], format!("{addr}/flink-jemalloc"));
        assert_eq!(img["base_digest"], base_digests[i].as_str());
        assert!(
            printed.contains(&format!("{addr}/flink-jemalloc@{digest}")),
            "{printed}"
        );

        // The tag resolves to the digest; the labels carry the provenance.
        let (ok, inspect, err) = sh(&format!(
            "skopeo inspect --tls-verify=false docker://{addr}/flink-jemalloc:{tag}"
        ));
        assert!(ok, "skopeo inspect {tag}: {err}");
        let inspect: Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(inspect["Digest"], digest);
        let labels = &inspect["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.base.digest"],
            base_digests[i].as_str()
        );
        assert_eq!(labels["io.github.flink-jemalloc.jemalloc.version"], "5.2.1");
        assert!(labels["io.github.flink-jemalloc.jemalloc.configure-flags"]
            .as_str()
            .unwrap()
            .contains("--enable-prof"));
        assert!(labels["io.github.flink-jemalloc.sysroot"]
            .as_str()
            .unwrap()
            .contains(suite));
        // By digest too.
        let (ok, _, err) = sh(&format!(
            "skopeo inspect --tls-verify=false docker://{addr}/flink-jemalloc@{digest}"
        ));
        assert!(ok, "skopeo inspect by digest: {err}");

        // The SBOM artifact, fetched back through its tag.
        let repo: Reference = format!("{addr}/flink-jemalloc").parse().unwrap();
        let sbom_tag = format!("sha256-{}.sbom", &digest["sha256:".len()..]);
        assert_eq!(img["sbom_tag"], sbom_tag.as_str());
        let m = client.manifest(&repo, &sbom_tag).unwrap();
        assert_eq!(m.digest, img["sbom_digest"].as_str().unwrap());
        assert_eq!(m.json["artifactType"], "application/spdx+json");
        assert_eq!(m.json["subject"]["digest"], digest);
        assert_eq!(
            m.json["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        let layer = m.json["layers"][0]["digest"].as_str().unwrap();
        let cache = xtask::project::Cache::new(w.join("fetch"));
        let path = client.blob(&repo, layer, &cache).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let packages = doc["packages"].as_array().unwrap();
        let jemalloc = packages
            .iter()
            .find(|p| p["name"] == "jemalloc")
            .expect("jemalloc in the SBOM");
        assert_eq!(jemalloc["versionInfo"], "5.2.1");
        assert_eq!(
            jemalloc["checksums"][0]["checksumValue"],
            standin.sha256.as_str()
        );
        let lock = Lock::read(&specs.join(format!("flink-fixture-{suite}.lock")))
            .unwrap()
            .unwrap();
        assert!(lock.tools.len() > 20, "{} tools", lock.tools.len());
        let named = |name: &str, version: &str| {
            packages
                .iter()
                .any(|p| p["name"] == name && p["versionInfo"] == version)
        };
        for t in &lock.tools {
            assert!(
                named(&t.name, &t.version),
                "{suite}: {} {} missing",
                t.name,
                t.version
            );
        }
        for s in &lock.sysroot.packages {
            assert!(
                named(&s.name, &s.version),
                "{suite}: sysroot {} missing",
                s.name
            );
        }
        assert!(packages
            .iter()
            .any(|p| p["versionInfo"] == base_digests[i].as_str()));
        let text = doc.to_string();
        assert!(
            text.contains(&format!("arch=amd64&distro={suite}"))
                && text.contains("pkg:deb/debian/"),
            "Debian purls"
        );

        // The SPDX reference tools accept it (pip: spdx-tools, see ci/install-deps.sh). Their
        // URL check wants a DNS name with a letter TLD, so the loopback fixture server's
        // `http://127.0.0.1:PORT` is written as `http://fixtures.test` in the copy checked
        // (real mirrors and the jemalloc release URL pass as they are).
        let file = w.join(format!("{suite}.spdx.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&format!("http://{}", files.addr()), "http://fixtures.test");
        std::fs::write(&file, text).unwrap();
        let (ok, out, err) = sh(&format!("pyspdxtools -i {}", file.display()));
        assert!(ok, "pyspdxtools refused the SBOM:\n{out}{err}");
    }
    drop(registry);
    eprintln!("whole dry run: {:?}", started.elapsed());
}
