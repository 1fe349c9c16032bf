//! `cargo xtask image` end to end: a Flink 1.10.3 base (bullseye rootfs from mmdebstrap, the
//! Flink distribution from PyPI) pushed into a real registry on loopback, pulled, layered with
//! a jemalloc built against its glibc, pushed back, and then checked with the ordinary tools:
//! `skopeo inspect`, `umoci unpack`, a JVM inside the unpacked rootfs writing a heap profile
//! through the image's jemalloc, and a second build elsewhere giving the same digest.

use crate::support::{sh, stderr, stdout, xtask, Server};
use harness::fixtures::{flink_base, registry::Registry};
use serde_json::Value;
use std::path::{Path, PathBuf};

struct Env {
    registry: Registry,
    files: Server,
    standin_sha: String,
    base: String,
    keyring: std::path::PathBuf,
}

fn env() -> Env {
    let repo =
        harness::fixtures::debian_repo_with_tools("bullseye").expect("fixture Debian repository");
    let standin = harness::fixtures::jemalloc_standin().expect("fixture jemalloc source");
    let registry = Registry::start().expect("a loopback registry");
    let addr = registry.url().trim_start_matches("http://").to_string();
    let base = format!("{addr}/fixtures/flink:1.10.3");
    flink_base::push_flink_base(&addr, "fixtures/flink:1.10.3").expect("pushing the fixture base");
    let files = Server::serve(vec![
        ("/debian", repo.dir.clone()),
        ("/jemalloc-5.2.1.tar.bz2", standin.tarball.clone()),
    ]);
    Env {
        registry,
        files,
        standin_sha: standin.sha256.to_string(),
        base,
        keyring: repo.keyring,
    }
}

fn image(e: &Env, work: &Path, extra: &[&str]) -> std::process::Output {
    subcommand(e, work, "image", extra)
}

fn subcommand(e: &Env, work: &Path, sub: &str, extra: &[&str]) -> std::process::Output {
    subcommand_with_env(e, work, sub, extra, &[])
}

fn subcommand_with_env(
    e: &Env,
    work: &Path,
    sub: &str,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Output {
    let url = e.files.url("jemalloc-5.2.1.tar.bz2");
    let mirror = e.files.url("debian");
    let lock = work.join("flink-1.10.3.lock");
    let cache = work.join("cache");
    let mut args = vec![
        sub,
        "--flink",
        "1.10.3",
        "--base",
        &e.base,
        "--plain-http",
        "--mirror",
        &mirror,
        "--url",
        &url,
        "--sha256",
        &e.standin_sha,
        "--lock-file",
        lock.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--keyring",
        e.keyring.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    crate::support::xtask_with_env(&args, env)
}

#[test]
fn profiled_image_from_a_loopback_registry() {
    let _serial = crate::support::serial();
    let e = env();
    let addr = e.registry.url().trim_start_matches("http://").to_string();
    let w1 = tempfile::tempdir().unwrap();
    let layout = w1.path().join("layout");
    let target = format!("{addr}/profiled/flink:1.10.3-jemalloc");
    let out = image(
        &e,
        w1.path(),
        &["--output", layout.to_str().unwrap(), "--push", &target],
    );
    assert!(out.status.success(), "image failed:\n{}", stderr(&out));
    let digest = stdout(&out).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("debian") && err.contains("bullseye"),
        "the base is inspected: {err}"
    );

    pushed_image_carries_its_inputs(&target, &digest, w1.path());
    let rootfs = rootfs_of_the_pushed_image(&target, w1.path());
    let heap = java_writes_a_heap_profile_inside(&rootfs);
    jeprofs_tools_run_inside(&rootfs, &heap);
    same_inputs_elsewhere_give_the_same_digest(&e, &digest);
    warm_and_locked_without_network(&e, w1.path(), &digest);
    load_targets_refused_before_any_work(&e, w1.path());
    lock_resolves_the_same_lock(&e, w1.path());
    // --locked with a request the lock does not answer is refused.
    let drift = image(&e, w1.path(), &["--locked", "--source-date-epoch", "1"]);
    assert!(!drift.status.success());
    assert!(
        stderr(&drift).contains("would change"),
        "{}",
        stderr(&drift)
    );
}

/// What skopeo reads of the pushed image: its digest, labels (the package lock among them)
/// and environment.
fn pushed_image_carries_its_inputs(target: &str, digest: &str, w1: &Path) {
    // skopeo reads what was pushed.
    let (ok, inspect, serr) = sh(&format!(
        "skopeo inspect --tls-verify=false docker://{target}"
    ));
    assert!(ok, "skopeo inspect: {serr}");
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], digest);
    let labels = &inspect["Labels"];
    assert_eq!(labels["io.github.flink-jemalloc.jemalloc.version"], "5.2.1");
    assert_eq!(
        labels["io.github.flink-jemalloc.jemalloc.unwinder"],
        "prof-libgcc"
    );
    assert!(labels["org.opencontainers.image.base.digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(labels["io.github.flink-jemalloc.jemalloc.patches"]
        .as_str()
        .unwrap()
        .contains("0001-jeprof"));
    // The package lock as labels: every layered package, every sysroot package.
    let lock = std::fs::read_to_string(w1.join("flink-1.10.3.lock")).unwrap();
    let packages = labels["io.github.flink-jemalloc.packages"]
        .as_str()
        .unwrap();
    assert_eq!(packages.split(' ').count(), 57, "{packages}");
    assert!(
        packages.contains("graphviz=") && packages.contains("perl="),
        "{packages}"
    );
    for p in packages.split(' ') {
        let (name, version) = p.split_once('=').unwrap();
        assert!(
            lock.contains(&format!("name = \"{name}\"\nversion = \"{version}\"")),
            "{p} is not in the lock"
        );
    }
    assert!(labels["io.github.flink-jemalloc.sysroot.packages"]
        .as_str()
        .unwrap()
        .contains("libc6=2.31-"));
    let env_list: Vec<String> = inspect["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        env_list.contains(&"JEMALLOC_PATH=/opt/jemalloc/lib/libjemalloc.so.2".to_string()),
        "{env_list:?}"
    );
    assert!(
        env_list
            .iter()
            .any(|e| e.starts_with("PATH=") && e.ends_with(":/opt/jemalloc/bin")),
        "{env_list:?}"
    );
    assert!(
        env_list.iter().any(|e| e == "FLINK_HOME=/opt/flink"),
        "the base's env stays: {env_list:?}"
    );
    assert!(
        !env_list.iter().any(|e| e.starts_with("LD_PRELOAD=")),
        "no preload by default"
    );
}

/// The pushed image copied back with skopeo and unpacked by umoci: its root file system,
/// with jemalloc owned by root and readable by the flink user.
fn rootfs_of_the_pushed_image(target: &str, w1: &Path) -> PathBuf {
    // umoci unpacks what the registry holds (copied back with skopeo).
    let pulled = w1.join("pulled");
    let (ok, _, serr) = sh(&format!(
        "skopeo --insecure-policy copy --src-tls-verify=false docker://{target} oci:{}:img",
        pulled.display()
    ));
    assert!(ok, "skopeo copy: {serr}");
    let bundle = w1.join("bundle");
    let (ok, _, serr) = sh(&format!(
        "umoci unpack --image {}:img {}",
        pulled.display(),
        bundle.display()
    ));
    assert!(ok, "umoci unpack: {serr}");
    let rootfs = bundle.join("rootfs");
    let lib = rootfs.join("opt/jemalloc/lib/libjemalloc.so.2");
    let meta = std::fs::metadata(&lib).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let mode = meta.permissions().mode() & 0o777;
    assert!(
        mode == 0o755 || mode == 0o644,
        "readable by the flink user, writable by root only: {mode:o}"
    );
    assert!(rootfs.join("opt/jemalloc/bin/jeprof").is_file());
    assert!(
        rootfs.join("opt/flink").is_dir(),
        "the base's layers are there"
    );
    rootfs
}

/// `java -version` with the image's jemalloc preloaded inside the image: the heap profile it
/// wrote.
fn java_writes_a_heap_profile_inside(rootfs: &Path) -> PathBuf {
    // Inside the image: java with the image's jemalloc preloaded writes a heap profile.
    let (ok, jout, jerr) = sh(&format!(
        "unshare -m -p -f sh -c 'mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && \
         chroot {r} /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
         LD_PRELOAD=/opt/jemalloc/lib/libjemalloc.so.2 \
         MALLOC_CONF=prof:true,prof_final:true,lg_prof_sample:17,prof_prefix:/tmp/jeprof \
         java -Xmx64m -version'",
        r = rootfs.display()
    ));
    assert!(
        ok,
        "java -version under jemalloc inside the image failed:\n{jout}\n{jerr}"
    );
    assert!(jerr.contains("openjdk version"), "{jerr}");
    let heap = std::fs::read_dir(rootfs.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "heap"))
        .expect("java wrote a heap profile");
    let heap_text = std::fs::read_to_string(&heap).unwrap();
    assert!(
        heap_text.contains("/opt/jemalloc/lib/libjemalloc.so.2"),
        "the profile maps the image's jemalloc"
    );
    assert!(heap_text.contains("libjvm.so"), "the profile maps the JVM");
    heap
}

/// jeprof's tools inside the image (binutils, file, graphviz, perl), the docs and locales the
/// base's dpkg configuration leaves out, and jeprof on the profile java wrote.
fn jeprofs_tools_run_inside(rootfs: &Path, heap: &Path) {
    // jeprof's tools come with the image: run them inside it, on the profile it just wrote.
    let heap_in = format!("/tmp/{}", heap.file_name().unwrap().to_string_lossy());
    std::fs::write(rootfs.join("tmp/g.dot"), "digraph g { a -> b }\n").unwrap();
    let inside = |script: &str| {
        sh(&format!(
            "unshare -m -p -f sh -c 'mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && \
             chroot {r} /usr/bin/env -i PATH=/opt/jemalloc/bin:/usr/local/bin:/usr/bin:/bin sh -c \"{script}\"'",
            r = rootfs.display()
        ))
    };
    let (ok, out, err) =
        inside("addr2line --version && objdump --version && nm --version && file -L /bin/sh");
    assert!(ok, "binutils and file inside the image: {out}\n{err}");
    assert!(
        out.contains("GNU addr2line") && out.contains("GNU objdump"),
        "{out}"
    );
    assert!(
        out.contains("ELF 64-bit"),
        "file works (its magic database is there): {out}"
    );
    let (ok, out, err) = inside("dot -Tsvg /tmp/g.dot");
    assert!(
        ok && out.contains("<svg"),
        "dot -Tsvg inside the image (config6a): {out}\n{err}"
    );
    let (ok, out, err) = inside("dpkg -l binutils graphviz file perl libgvc6");
    assert!(ok, "{err}");
    for p in ["binutils", "graphviz", "file", "perl", "libgvc6"] {
        assert!(
            out.lines().any(|l| l.starts_with("ii")
                && l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.split(':').next() == Some(p))),
            "dpkg -l lists {p}: {out}"
        );
    }
    // The base's dpkg configuration leaves docs (but copyright files) and locales out, as
    // apt would: the tools layer does too, and dpkg's file lists still name what was left
    // out, as dpkg's own do.
    let doc = rootfs.join("usr/share/doc/binutils");
    assert!(doc.join("copyright").is_file(), "copyright files are kept");
    let left_out: Vec<_> = std::fs::read_dir(&doc)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "copyright")
        .collect();
    assert!(left_out.is_empty(), "docs are left out: {left_out:?}");
    let locales = crate::support::files_below(&rootfs.join("usr/share/locale"));
    assert!(locales.is_empty(), "locales are left out: {locales:?}");
    let list = std::fs::read_to_string(rootfs.join("var/lib/dpkg/info/binutils.list")).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("/usr/share/doc/binutils/") && !l.ends_with("copyright")),
        "the .list names the left-out docs: {list}"
    );
    let (ok, text, err) = inside(&format!(
        "jeprof --text /usr/lib/jvm/java-11-openjdk-amd64/bin/java {heap_in}"
    ));
    assert!(
        ok && text.contains("Total:"),
        "jeprof --text in the image: {text}\n{err}"
    );
    let (ok, svg, err) = inside(&format!(
        "jeprof --svg /usr/lib/jvm/java-11-openjdk-amd64/bin/java {heap_in}"
    ));
    assert!(
        ok && svg.contains("<svg"),
        "jeprof --svg in the image: {err}"
    );
    assert!(
        !err.contains("MSWin32") && !err.contains("isn't numeric"),
        "{err}"
    );
}

/// The same inputs in another directory, with a cold cache, give the same image.
fn same_inputs_elsewhere_give_the_same_digest(e: &Env, digest: &str) {
    // The same inputs in another directory, with a cold cache, give the same image.
    let w2 = tempfile::tempdir().unwrap();
    let again = image(
        e,
        w2.path(),
        &["--output", w2.path().join("layout").to_str().unwrap()],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        stdout(&again).trim(),
        digest,
        "a second build elsewhere must give the same digest"
    );
}

/// Warm and locked: no network, no compile, the same digest; a docker-archive this time.
fn warm_and_locked_without_network(e: &Env, w1: &Path, digest: &str) {
    // Warm and locked: no network, no compile, the same digest; a docker-archive this time.
    let before = e.files.requests();
    let archive = w1.join("img.tar");
    let warm = image(
        e,
        w1,
        &[
            "--locked",
            "--output",
            archive.to_str().unwrap(),
            "--format",
            "docker-archive",
        ],
    );
    assert!(warm.status.success(), "{}", stderr(&warm));
    assert_eq!(stdout(&warm).trim(), digest);
    let werr = stderr(&warm);
    assert!(werr.contains("no network"), "{werr}");
    assert!(werr.contains("up to date"), "{werr}");
    assert!(!werr.contains("make -j"), "{werr}");
    assert_eq!(
        e.files.requests(),
        before,
        "the warm rebuild made no requests to the Debian/jemalloc server"
    );
    let (ok, ai, aerr) = sh(&format!(
        "skopeo inspect docker-archive:{}",
        archive.display()
    ));
    assert!(ok, "skopeo reads the docker-archive: {aerr}");
    let ai: Value = serde_json::from_str(&ai).unwrap();
    assert_eq!(
        ai["Labels"]["io.github.flink-jemalloc.jemalloc.version"],
        "5.2.1"
    );
}

/// `--load` names its targets, and a kind cluster needs kind: refused before any work.
fn load_targets_refused_before_any_work(e: &Env, w1: &Path) {
    // --load names its targets, and a kind cluster needs kind: refused before any work.
    let bad = image(e, w1, &["--locked", "--load", "kind"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("kind=<cluster>"), "{}", stderr(&bad));
    // On a PATH without kind (where this machine has it, it is hidden).
    let no_kind = tempfile::tempdir().unwrap();
    let path = crate::support::path_without(&["kind"], no_kind.path());
    let out = w1.join("k");
    let k = subcommand_with_env(
        e,
        w1,
        "image",
        &[
            "--locked",
            "--output",
            out.to_str().unwrap(),
            "--load",
            "kind=x",
        ],
        &[("PATH", &path)],
    );
    assert!(!k.status.success());
    assert!(stderr(&k).contains("`kind`"), "{}", stderr(&k));
    assert!(!out.exists(), "nothing written before the check");
}

/// The lock pins the tools; `cargo xtask lock` resolves the same lock from scratch.
fn lock_resolves_the_same_lock(e: &Env, w1: &Path) {
    // The lock pins the tools; `cargo xtask lock` resolves the same lock from scratch.
    let lock_text = std::fs::read_to_string(w1.join("flink-1.10.3.lock")).unwrap();
    for p in [
        "name = \"graphviz\"",
        "name = \"binutils\"",
        "name = \"libgvc6\"",
        "[[tools]]",
        "[[sysroot.packages]]",
    ] {
        assert!(lock_text.contains(p), "the lock lacks {p}");
    }
    assert!(
        !lock_text.contains("name = \"libc6\"\nversion = \"2.31-13+deb11u11\"\narch"),
        "libc6 is the base's, not a tool"
    );
    let w3 = tempfile::tempdir().unwrap();
    let relock = subcommand(e, w3.path(), "lock", &[]);
    assert!(relock.status.success(), "{}", stderr(&relock));
    assert!(!stderr(&relock).contains("make -j"), "lock builds nothing");
    assert_eq!(
        std::fs::read_to_string(w3.path().join("flink-1.10.3.lock")).unwrap(),
        lock_text
    );
}

#[test]
fn unknown_flink_version_lists_the_known_ones() {
    let _serial = crate::support::serial();
    let out = xtask(&["image", "--flink", "0.1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("known: 1.10.1, 1.10.3"),
        "{}",
        stderr(&out)
    );
}

/// `--label KEY=VALUE`: what a pipeline knows (the repository, the commit) goes into the
/// config's labels and the manifest's annotations; a warm `--locked` rebuild with the same
/// inputs otherwise; a malformed label is one line naming the form, before any work.
#[test]
fn labels_given_are_in_the_config_and_the_manifest() {
    let _serial = crate::support::serial();
    let t = tempfile::tempdir().unwrap();
    let out_dir = t.path().join("labelled");
    let source = "org.opencontainers.image.source=https://github.com/acme/flink-jemalloc";
    let out = crate::support::rebuild_profiled_image(&[
        "--output",
        out_dir.to_str().unwrap(),
        "--label",
        source,
        "--label",
        "org.opencontainers.image.revision=0123abc",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = xtask::oci::layout_config(&out_dir).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/acme/flink-jemalloc"
    );
    assert_eq!(labels["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(labels["io.github.flink-jemalloc.jemalloc.version"], "5.2.1");
    let r = xtask::oci::layout_ref(&out_dir).unwrap();
    let (_, manifest, _) = xtask::oci::layout_manifest(&out_dir, &r.manifest_digest).unwrap();
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.revision"],
        "0123abc"
    );
    // Without labels the image is the one the tests share (its digest is the golden one).
    let plain = xtask::oci::layout_ref(&crate::support::profiled_image()).unwrap();
    assert_ne!(plain.manifest_digest, r.manifest_digest);

    let bad_dir = t.path().join("bad");
    let bad = crate::support::rebuild_profiled_image(&[
        "--output",
        bad_dir.to_str().unwrap(),
        "--label",
        "no-equals-sign",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--label takes KEY=VALUE"),
        "{}",
        stderr(&bad)
    );
    assert!(!bad_dir.exists(), "nothing written");
}

/// `--jemalloc 5.3.0` on the Flink 2 fixture base: the 5.3.0 build (its stand-in) layered,
/// named in the tag and the labels, without 5.2.1's `--collapsed` backport; java inside the
/// unpacked image writes a heap profile through it that the image's own jeprof reads.
#[test]
fn jemalloc_5_3_0_is_layered_and_named() {
    let _serial = crate::support::serial();
    let inputs = crate::support::ImageInputs::start_with(crate::support::Base::Flink2, "5.3.0");
    let t = tempfile::tempdir().unwrap();
    let args = inputs.args_in(t.path());
    let out = xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "image failed:\n{}", stderr(&out));
    let layout = t.path().join("layout");
    let r = xtask::oci::layout_ref(&layout).unwrap();
    assert!(
        r.ref_name.ends_with("-jemalloc-5.3.0-prof"),
        "{}",
        r.ref_name
    );
    let config = xtask::oci::layout_config(&layout).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["io.github.flink-jemalloc.jemalloc.version"], "5.3.0");
    let patches = labels["io.github.flink-jemalloc.jemalloc.patches"]
        .as_str()
        .unwrap();
    assert!(
        patches.contains("0001-jeprof") && !patches.contains("0003"),
        "{patches}"
    );
    let bundle = t.path().join("bundle");
    let (ok, _, serr) = sh(&format!(
        "umoci unpack --image {}:{} {}",
        layout.display(),
        r.ref_name,
        bundle.display()
    ));
    assert!(ok, "umoci unpack: {serr}");
    let rootfs = bundle.join("rootfs");
    let heap = java_writes_a_heap_profile_inside(&rootfs);
    let heap_in = format!("/tmp/{}", heap.file_name().unwrap().to_string_lossy());
    let (ok, jout, jerr) = sh(&format!(
        "chroot {r} /usr/bin/env -i PATH=/usr/bin:/bin:/opt/jemalloc/bin sh -c \
         'jemalloc-config --version && jeprof --text \"$(readlink -f /usr/bin/java)\" {heap_in}'",
        r = rootfs.display()
    ));
    assert!(ok, "jeprof inside: {jout}{jerr}");
    assert!(jout.starts_with("5.3.0-"), "{jout}");
    assert!(jout.contains("Total:"), "{jout}");
    assert!(!jerr.contains("MSWin32"), "{jerr}");
}
