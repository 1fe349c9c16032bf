//! linux/arm64 images, for real: the fixture 2.2.1 base pushed as the official images are (one
//! index over an amd64 and an arm64 image) into a loopback registry, and
//! `image --platform linux/amd64,linux/arm64 --push` building from it one profiled image per
//! platform (the arm64 one's jemalloc cross-built, its in-image steps run under qemu-user)
//! and one index over both.
//!
//! What is checked: the index as skopeo and `docker manifest inspect` read it back, each
//! image's config and base, the arm64 image's jemalloc (an AArch64 ELF) and tools (arm64 and
//! all packages only), a lock per platform, a warm `--locked` rebuild giving the same index
//! digest, and `docker run --platform linux/arm64` of the pushed index (qemu-user registered
//! with binfmt_misc for the run) in which jemalloc writes a heap profile that the image's own
//! arm64 `jeprof` reads.

use crate::support::{sh, stderr, stdout, xtask};
use harness::fixtures::binfmt::Registration;
use harness::fixtures::docker::engine;
use serde_json::Value;
use std::path::Path;

fn json_blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The platforms of an index, as `os/architecture`, with each manifest's digest.
fn platforms(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn index_of_amd64_and_arm64_images() {
    let _serial = crate::support::serial();
    let repo = harness::fixtures::debian_repo_with_tools_for("bookworm", &["amd64", "arm64"])
        .expect("the amd64+arm64 fixture repository");
    let standin = harness::fixtures::jemalloc_standin().unwrap();
    let registry = harness::fixtures::registry::Registry::start().unwrap();
    let addr = registry.url().trim_start_matches("http://").to_string();
    let base = harness::fixtures::flink2_base::push_flink2_index(&addr, "fixtures/flink:2.2.1")
        .expect("pushing the fixture index");
    let files = crate::support::Server::serve(vec![
        ("/debian", repo.dir.clone()),
        ("/jemalloc.tar.bz2", standin.tarball.clone()),
    ]);
    let t = tempfile::tempdir().unwrap();
    let target = format!("{addr}/profiled/flink:2.2.1-prof");
    let args = |output: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "image",
            "--flink",
            "2.2.1",
            "--platform",
            "linux/amd64,linux/arm64",
            "--base",
            &format!("{addr}/fixtures/flink:2.2.1"),
            "--plain-http",
            "--mirror",
            &files.url("debian"),
            "--keyring",
            &repo.keyring.display().to_string(),
            "--url",
            &files.url("jemalloc.tar.bz2"),
            "--sha256",
            standin.sha256.as_str(),
            "--lock-file",
            &t.path().join("flink.lock").display().to_string(),
            "--cache-dir",
            &t.path().join("cache").display().to_string(),
            "--output",
            &t.path().join(output).display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = args("layout", &["--push", &target]);
    let out = xtask(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "image failed:\n{}", stderr(&out));
    let digest = stdout(&out).trim().to_string();
    let layout = t.path().join("layout");

    // The layout: index.json names the index, which names one image per platform.
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["digest"], digest.as_str());
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = json_blob(&layout, &digest);
    let images = platforms(&index);
    let names: Vec<&str> = images.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64"]);
    // A reader of the layout gets this machine's platform's image.
    let native = if std::env::consts::ARCH == "aarch64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let r = xtask::oci::layout_ref(&layout).unwrap();
    assert_eq!(r.index_digest.as_deref(), Some(digest.as_str()));
    let (_, native_digest) = images.iter().find(|(p, _)| p == native).unwrap();
    assert_eq!(&r.manifest_digest, native_digest);
    // A command that unpacks an image takes the index layout: `job` compiles against the
    // machine's image's flink-dist.
    let jar_dir = t.path().join("job");
    let out = xtask(&[
        "job",
        "--image",
        layout.to_str().unwrap(),
        "--out",
        jar_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "job on the index layout: {}",
        stderr(&out)
    );
    assert!(jar_dir.join("rocksdb-restart-job.jar").is_file());

    each_image_is_its_platforms(t.path(), &layout, &images, &base);
    the_registry_holds_the_index(&target, &digest, &images);

    rebuilds_give_the_same_images(t.path(), &args, &digest, &images[1].1);
    pushed_with_the_push_registrys_credentials(&args, &digest);
    a_base_without_arm64(t.path(), &addr, &args);
    publish_gives_each_platform_its_sbom(t.path(), &addr, &args("unused", &[]), &digest);
    docker_runs_the_arm64_image(&format!("{addr}/profiled/flink@{digest}"));
    drop(files);
    drop(registry);
}

/// `image` again: warm and locked into another layout, the same index; cold, in another cache,
/// the arm64 image alone from its lock, the index's arm64 image bit for bit (cross build,
/// tools and the in-image steps under qemu included).
fn rebuilds_give_the_same_images(
    dir: &Path,
    args: &dyn Fn(&str, &[&str]) -> Vec<String>,
    digest: &str,
    arm64_digest: &str,
) {
    // Warm and locked, elsewhere: the same index.
    let mut warm = args("layout-again", &["--locked"]);
    warm.retain(|a| a != "--push");
    let again = xtask(&warm.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), digest, "{}", stderr(&again));
    assert!(
        stderr(&again).contains("warm: every input from the cache"),
        "{}",
        stderr(&again)
    );

    // Cold, in another cache, the arm64 image alone from its lock: the index's arm64 image,
    // bit for bit (cross build, tools and the in-image steps under qemu included). Its
    // `--lock-file flink.lock` is flink-arm64.lock for arm64, alone as in the index.
    let mut cold = args("arm64-cold", &["--locked"]);
    for (flag, value) in [
        ("--platform", "linux/arm64".to_string()),
        ("--cache-dir", dir.join("cold-cache").display().to_string()),
    ] {
        let i = cold.iter().position(|a| a == flag).unwrap();
        cold[i + 1] = value;
    }
    let out = xtask(&cold.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), arm64_digest, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("jemalloc compiled"),
        "{}",
        stderr(&out)
    );
    let cold_layout = dir.join("arm64-cold");
    assert_eq!(
        xtask::oci::layout_ref(&cold_layout)
            .unwrap()
            .manifest_digest,
        arm64_digest
    );
}

/// The index pushed (warm) to a registry that wants a login, with `--registry-user` and
/// `$REGISTRY_PASSWORD`: they reach the push registry, for every image and the index.
fn pushed_with_the_push_registrys_credentials(
    args: &dyn Fn(&str, &[&str]) -> Vec<String>,
    digest: &str,
) {
    let private = harness::fixtures::registry::Registry::start_with_htpasswd("pusher", "s3cret")
        .expect("a registry with a login");
    let target = format!("{}/private/flink:2.2.1-prof", private.addr);
    let a = args(
        "layout-private",
        &["--locked", "--push", &target, "--registry-user", "pusher"],
    );
    let out = crate::support::xtask_with_env(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("REGISTRY_PASSWORD", std::ffi::OsStr::new("s3cret"))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), digest);
    let (ok, raw, err) = sh(&format!(
        "skopeo inspect --raw --tls-verify=false --creds pusher:s3cret docker://{target}"
    ));
    assert!(ok, "{err}");
    assert_eq!(
        format!(
            "sha256:{}",
            xtask::digest::Sha256Hex::of_bytes(raw.as_bytes())
        ),
        digest
    );
}

/// A base without arm64 (one amd64 image): said, and the index holds amd64 alone; asked for
/// arm64 alone, that base is refused in one line naming the fix.
fn a_base_without_arm64(dir: &Path, addr: &str, args: &dyn Fn(&str, &[&str]) -> Vec<String>) {
    // A base without arm64 (one amd64 image): said, and the index holds amd64 alone.
    harness::fixtures::flink2_base::push_flink2_base(addr, "fixtures/flink:amd64-only").unwrap();
    let mut only = args("only-amd64", &[]);
    for (flag, value) in [
        ("--base", format!("{addr}/fixtures/flink:amd64-only")),
        ("--lock-file", dir.join("only.lock").display().to_string()),
    ] {
        let i = only.iter().position(|a| a == flag).unwrap();
        only[i + 1] = value;
    }
    let out = xtask(&only.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has linux/amd64, no linux/arm64: building the other platforms"),
        "{}",
        stderr(&out)
    );
    let only_index = json_blob(&dir.join("only-amd64"), stdout(&out).trim());
    let only_platforms: Vec<String> = platforms(&only_index).into_iter().map(|(p, _)| p).collect();
    assert_eq!(only_platforms, ["linux/amd64"]);
    assert!(!dir.join("only-arm64.lock").exists());
    // Asked for arm64 alone, that base is refused in one line naming the fix.
    let mut arm64 = only.clone();
    let i = arm64
        .iter()
        .position(|a| a == "linux/amd64,linux/arm64")
        .unwrap();
    arm64[i] = "linux/arm64".into();
    let out = xtask(&arm64.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is one linux/amd64 image: give --platform linux/amd64"),
        "{}",
        stderr(&out)
    );
}

/// Each image: config `architecture`, its base's manifest (the fixture index's image of the
/// same platform), its lock; the arm64 one's jemalloc is AArch64 and its tools arm64 or all.
fn each_image_is_its_platforms(
    dir: &Path,
    layout: &Path,
    images: &[(String, String)],
    base: &harness::fixtures::flink2_base::PushedIndex,
) {
    for ((platform, digest), (arch, base_digest, lock_name)) in images.iter().zip([
        ("amd64", &base.amd64, "flink.lock"),
        ("arm64", &base.arm64, "flink-arm64.lock"),
    ]) {
        let manifest = json_blob(layout, digest);
        let config = json_blob(layout, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], arch, "{platform}");
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.base.digest"],
            base_digest.as_str(),
            "{platform}"
        );
        let lock = xtask::image::lock::Lock::read(&dir.join(lock_name))
            .unwrap()
            .unwrap_or_else(|| panic!("no {lock_name}"));
        assert_eq!(&lock.base.manifest_digest, base_digest, "{platform}");
        assert_eq!(lock.base.index_digest.as_deref(), Some(base.index.as_str()));
        let wanted = (arch != "amd64").then(|| platform.clone());
        assert_eq!(lock.platform, wanted, "{lock_name}");
        for p in &lock.tools {
            assert!(p.arch == arch || p.arch == "all", "{lock_name}: {p:?}");
        }
        let text = std::fs::read_to_string(dir.join(lock_name)).unwrap();
        assert!(
            text.contains(&format!("_{arch}.deb"))
                && !text.contains(if arch == "amd64" {
                    "_arm64.deb"
                } else {
                    "_amd64.deb"
                }),
            "{lock_name}"
        );
    }
    // The arm64 image's /opt/jemalloc: ELF, e_machine 183 (AArch64).
    let arm64 = json_blob(layout, &images[1].1);
    let layers = arm64["layers"].as_array().unwrap();
    let jemalloc_layer = layers[layers.len() - 2]["digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(jemalloc_layer.trim_start_matches("sha256:"));
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(blob).unwrap(),
    ));
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if path.ends_with("lib/libjemalloc.so.2") && e.header().entry_type().is_file() {
            let mut head = [0u8; 20];
            std::io::Read::read_exact(&mut e, &mut head).unwrap();
            assert_eq!(&head[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([head[18], head[19]]), 183, "{path}");
            found = true;
        }
    }
    assert!(
        found,
        "the arm64 image's jemalloc layer has no libjemalloc.so.2"
    );
}

/// `publish --platform linux/amd64,linux/arm64` of a spec on the fixture index, with the
/// image run's locks committed beside it and its cache (warm): the report has one row per
/// platform under the same index (the image run's), each with its SBOM, whose subject is
/// that platform's image and whose packages are that platform's.
fn publish_gives_each_platform_its_sbom(
    dir: &Path,
    addr: &str,
    image_args: &[String],
    index: &str,
) {
    let specs = dir.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let official =
        std::fs::read_to_string(xtask::project::root().join("images/flink-2.2.1.toml")).unwrap();
    let base_line = official
        .lines()
        .find(|l| l.starts_with("base = "))
        .unwrap()
        .to_string();
    std::fs::write(
        specs.join("flink-2.2.1.toml"),
        official.replace(
            &base_line,
            &format!("base = \"{addr}/fixtures/flink:2.2.1\""),
        ),
    )
    .unwrap();
    for (from, to) in [
        ("flink.lock", "flink-2.2.1.lock"),
        ("flink-arm64.lock", "flink-2.2.1-arm64.lock"),
    ] {
        std::fs::copy(dir.join(from), specs.join(to)).unwrap();
    }
    let value = |flag: &str| {
        let i = image_args.iter().position(|a| a == flag).unwrap();
        image_args[i + 1].clone()
    };
    let report = dir.join("publish.json");
    let out = xtask(&[
        "publish",
        "--registry",
        addr,
        "--plain-http",
        "--specs",
        specs.to_str().unwrap(),
        "--flink",
        "2.2.1",
        "--platform",
        "linux/amd64,linux/arm64",
        "--locked",
        "--mirror",
        &value("--mirror"),
        "--keyring",
        &value("--keyring"),
        "--url",
        &value("--url"),
        "--sha256",
        &value("--sha256"),
        "--cache-dir",
        &value("--cache-dir"),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "publish failed:\n{}", stderr(&out));
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let rows = v["images"].as_array().unwrap();
    let platforms: Vec<&str> = rows
        .iter()
        .map(|r| r["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let tag = rows[0]["tag"].as_str().unwrap();
    let (ok, raw, err) = sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{addr}/flink-jemalloc:{tag}"
    ));
    assert!(ok, "skopeo inspect --raw {tag}: {err}");
    assert_eq!(
        format!(
            "sha256:{}",
            xtask::digest::Sha256Hex::of_bytes(raw.as_bytes())
        ),
        index,
        "the tag names the index the image run made"
    );
    let client = xtask::registry::RegistryClient::new(true, xtask::registry::Auths::anonymous());
    let repo: xtask::registry::Reference = format!("{addr}/flink-jemalloc").parse().unwrap();
    let cache = xtask::project::Cache::new(dir.join("fetch"));
    for (row, arch) in rows.iter().zip(["amd64", "arm64"]) {
        assert_eq!(row["index_digest"], index);
        let m = client
            .manifest(&repo, row["sbom_tag"].as_str().unwrap())
            .unwrap();
        assert_eq!(m.json["subject"]["digest"], row["digest"]);
        let layer = m.json["layers"][0]["digest"].as_str().unwrap();
        let doc: Value = serde_json::from_slice(
            &std::fs::read(client.blob(&repo, layer, &cache).unwrap()).unwrap(),
        )
        .unwrap();
        let text = doc.to_string();
        assert!(text.contains(&format!("arch={arch}")), "{arch} SBOM");
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        assert!(
            !text.contains(&format!("arch={other}")),
            "{arch} SBOM names {other}"
        );
    }
}

/// skopeo and `docker manifest inspect` read the pushed index back: both platforms, the
/// digests of the layout.
fn the_registry_holds_the_index(target: &str, digest: &str, images: &[(String, String)]) {
    let (ok, raw, err) = sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{target}"
    ));
    assert!(ok, "skopeo inspect --raw: {err}");
    assert_eq!(
        format!(
            "sha256:{}",
            xtask::digest::Sha256Hex::of_bytes(raw.as_bytes())
        ),
        digest
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(platforms(&index), images);
    let (ok, out, err) = sh(&format!("docker manifest inspect --insecure {target}"));
    assert!(ok, "docker manifest inspect: {err}");
    let read: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(platforms(&read), images, "{out}");
}

/// `docker run --platform linux/arm64` of the pushed index: the container is aarch64, and
/// jemalloc preloaded into perl writes a heap profile that the image's jeprof reads.
fn docker_runs_the_arm64_image(reference: &str) {
    let _binfmt = Registration::acquire("aarch64").expect("qemu-user registered with binfmt_misc");
    let _engine = engine().expect("a Docker engine");
    let (ok, _, err) = sh(&format!(
        "docker pull --quiet --platform linux/arm64 {reference}"
    ));
    assert!(ok, "docker pull: {err}");
    let script = "uname -m; \
        LD_PRELOAD=/opt/jemalloc/lib/libjemalloc.so.2 \
        MALLOC_CONF=prof:true,prof_final:true,lg_prof_sample:0,prof_prefix:/tmp/jeprof.out \
        perl -e 'my @a = map { \"x\" x 4096 } 1 .. 2000; print scalar(@a), \"\\n\"'; \
        jeprof --text /usr/bin/perl /tmp/jeprof.out.*.heap";
    let (ok, out, err) = sh(&format!(
        "docker run --rm --platform linux/arm64 --network host --user root \
         --entrypoint /bin/sh {reference} -c \"{}\"",
        script.replace('\\', "\\\\").replace('"', "\\\"")
    ));
    let _ = sh(&format!("docker rmi --force {reference}"));
    assert!(ok, "docker run --platform linux/arm64: {out}{err}");
    assert!(out.starts_with("aarch64\n2000\n"), "{out}{err}");
    assert!(out.contains("Total:"), "jeprof read no profile: {out}{err}");
}
