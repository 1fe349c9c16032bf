//! `cargo xtask fetch` against a loopback HTTP server: good download, tampered file,
//! truncated body, server gone with a warm cache, and a refusal for each unsafe entry kind.

mod support;

use std::path::Path;
use support::{files_below, sha256_hex, stderr, stdout, xtask, Fault, Server, TarBuilder};
use tar::EntryType;

fn good_tarball() -> Vec<u8> {
    TarBuilder::default()
        .dir("jemalloc-5.2.1/")
        .file("jemalloc-5.2.1/configure", b"#!/bin/sh\necho configured\n")
        .dir("jemalloc-5.2.1/bin/")
        .file("jemalloc-5.2.1/bin/jeprof.in", b"#!/usr/bin/env perl\n")
        .special("jemalloc-5.2.1/bin/link", EntryType::Symlink, "jeprof.in")
        .bz2()
}

/// Serves `data` as `/jemalloc-5.2.1.tar.bz2` from a fresh directory.
fn serve(data: &[u8]) -> (Server, tempfile::TempDir) {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("jemalloc-5.2.1.tar.bz2"), data).unwrap();
    (Server::serve(vec![("/", www.path().to_path_buf())]), www)
}

fn fetch(server: &Server, sha: &str, cache: &Path) -> std::process::Output {
    xtask(&[
        "fetch",
        "--url",
        &server.url("jemalloc-5.2.1.tar.bz2"),
        "--sha256",
        sha,
        "--cache-dir",
        cache.to_str().unwrap(),
    ])
}

#[test]
fn good_download_is_verified_cached_and_unpacked() {
    let data = good_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    let cache = tempfile::tempdir().unwrap();
    let out = fetch(&server, &sha, cache.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = stdout(&out).trim().to_string();
    assert!(tree.ends_with("jemalloc-5.2.1"), "{tree}");
    assert_eq!(
        std::fs::read(Path::new(&tree).join("configure")).unwrap(),
        b"#!/bin/sh\necho configured\n"
    );
    assert_eq!(
        std::fs::read_link(Path::new(&tree).join("bin/link")).unwrap(),
        Path::new("jeprof.in")
    );
    let blob = cache.path().join("blobs/sha256").join(&sha);
    assert_eq!(std::fs::read(&blob).unwrap(), data);
    assert!(stderr(&out).contains(&format!("sha256 {sha} verified")));
}

#[test]
fn tampered_download_names_both_digests_and_caches_nothing() {
    let data = good_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    server.set_fault(Fault::Tamper);
    let cache = tempfile::tempdir().unwrap();
    let out = fetch(&server, &sha, cache.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    let mut tampered = data.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0xff;
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains(&server.url("jemalloc-5.2.1.tar.bz2")), "{err}");
    assert!(err.contains(&format!("expected: {sha}")), "{err}");
    assert!(
        err.contains(&format!("actual:   {}", sha256_hex(&tampered))),
        "{err}"
    );
    assert_eq!(files_below(cache.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn truncated_body_is_an_error_not_a_short_file() {
    let data = good_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    server.set_fault(Fault::Truncate);
    let cache = tempfile::tempdir().unwrap();
    let out = fetch(&server, &sha, cache.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("truncated") || err.contains("connection lost"),
        "the error should say the body was cut short: {err}"
    );
    assert_eq!(files_below(cache.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn warm_cache_needs_no_server() {
    let data = good_tarball();
    let sha = sha256_hex(&data);
    let (server, www) = serve(&data);
    let url = server.url("jemalloc-5.2.1.tar.bz2");
    let cache = tempfile::tempdir().unwrap();
    assert!(fetch(&server, &sha, cache.path()).status.success());
    let first = stdout(&fetch(&server, &sha, cache.path()));
    assert_eq!(
        server.requests(),
        1,
        "the second fetch must not touch the network"
    );
    drop(server);
    drop(www);
    let out = xtask(&[
        "fetch",
        "--url",
        &url,
        "--sha256",
        &sha,
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), first);
    assert!(stderr(&out).contains("(cached"), "{}", stderr(&out));
}

#[test]
fn server_gone_with_a_cold_cache_names_the_url() {
    let (server, _www) = serve(b"x");
    let url = server.url("jemalloc-5.2.1.tar.bz2");
    drop(server);
    let cache = tempfile::tempdir().unwrap();
    let out = xtask(&[
        "fetch",
        "--url",
        &url,
        "--sha256",
        &"0".repeat(64),
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
    assert_eq!(files_below(cache.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_mirror_url_needs_its_digest() {
    let out = xtask(&["fetch", "--url", "http://127.0.0.1:9/jemalloc.tar.bz2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs --sha256"), "{}", stderr(&out));
}

/// Each unsafe archive is refused with a message naming the entry, and nothing is unpacked.
#[test]
fn unsafe_archives_are_refused() {
    let base = || {
        TarBuilder::default()
            .dir("jemalloc-5.2.1/")
            .file("jemalloc-5.2.1/configure", b"")
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            base().file("/tmp/evil", b"x").bz2(),
            "absolute path `/tmp/evil`",
        ),
        (
            "dot-dot path",
            base().file("jemalloc-5.2.1/../../evil", b"x").bz2(),
            "`..`",
        ),
        (
            "symlink out of the tree",
            base()
                .special("jemalloc-5.2.1/l", EntryType::Symlink, "../../etc")
                .bz2(),
            "points outside the tree",
        ),
        (
            "absolute symlink",
            base()
                .special("jemalloc-5.2.1/l", EntryType::Symlink, "/etc/passwd")
                .bz2(),
            "absolute target",
        ),
        (
            "hard link out of the tree",
            base()
                .special("jemalloc-5.2.1/h", EntryType::Link, "../etc/passwd")
                .bz2(),
            "refusing hard link",
        ),
        (
            "hard link to an absolute path",
            base()
                .special("jemalloc-5.2.1/h", EntryType::Link, "/etc/passwd")
                .bz2(),
            "refusing hard link",
        ),
        (
            "character device",
            base()
                .special("jemalloc-5.2.1/null", EntryType::Char, "")
                .bz2(),
            "device node",
        ),
        (
            "block device",
            base()
                .special("jemalloc-5.2.1/sda", EntryType::Block, "")
                .bz2(),
            "device node",
        ),
        (
            "fifo",
            base()
                .special("jemalloc-5.2.1/p", EntryType::Fifo, "")
                .bz2(),
            "FIFO",
        ),
        (
            "write through an archive symlink",
            base()
                .special("jemalloc-5.2.1/d", EntryType::Symlink, ".")
                .file("jemalloc-5.2.1/d/configure", b"overwritten")
                .bz2(),
            "written through the symlink",
        ),
    ];
    for (what, data, expected) in cases {
        let sha = sha256_hex(&data);
        let (server, _www) = serve(&data);
        let cache = tempfile::tempdir().unwrap();
        let out = fetch(&server, &sha, cache.path());
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: must be refused");
        assert!(
            err.contains(expected),
            "{what}: expected `{expected}` in: {err}"
        );
        assert!(
            !cache.path().join("src").exists()
                || std::fs::read_dir(cache.path().join("src"))
                    .unwrap()
                    .next()
                    .is_none(),
            "{what}: nothing may be left unpacked"
        );
        assert!(!Path::new("/tmp/evil").exists());
    }
}
