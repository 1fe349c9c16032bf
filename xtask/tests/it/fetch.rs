//! `cargo xtask fetch` against a loopback HTTP server: good download, tampered file,
//! truncated body, server gone with a warm cache, and a refusal for each unsafe entry kind;
//! transient faults (429 with Retry-After, a body that breaks off, a server that keeps
//! answering 503, a 404 that is not retried) and four concurrent fetches of one URL.

use crate::support::{files_below, sha256_hex, stderr, stdout, xtask, Fault, Server, TarBuilder};
use std::path::Path;
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
    let out = xtask(&["fetch", "--url", "http://127.0.0.1:9/jemalloc.tar.bz2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs --sha256"), "{}", stderr(&out));
}

/// Each unsafe archive is refused with a message naming the entry, and nothing is unpacked.
#[test]
fn unsafe_archives_are_refused() {
    let _shared = crate::support::shared();
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

/// A body big enough to be read in several pieces (so that half of it is a real prefix).
fn big_tarball() -> Vec<u8> {
    let mut b = TarBuilder::default().dir("jemalloc-5.2.1/");
    let noise: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    b = b.file("jemalloc-5.2.1/configure", b"#!/bin/sh\n");
    b = b.file("jemalloc-5.2.1/noise.bin", &noise);
    b.bz2()
}

#[test]
fn too_many_requests_is_retried_after_the_servers_retry_after() {
    let _shared = crate::support::shared();
    let data = good_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    server.set_fault(Fault::TooManyRequestsFirst);
    let cache = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = fetch(&server, &sha, cache.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("answered 429 Too Many Requests; retrying in 1.0 s (attempt 2 of 6)"),
        "the retry shows what, why and which attempt: {err}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_body_that_breaks_off_is_resumed_with_range() {
    let _shared = crate::support::shared();
    let data = big_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    server.set_fault(Fault::BreakFirst);
    let cache = tempfile::tempdir().unwrap();
    let out = fetch(&server, &sha, cache.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("connection lost"), "{}", stderr(&out));
    let gets: Vec<(String, String, String)> = server.ranges.lock().unwrap().clone();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let resumed = gets[1].2.clone();
    let from: usize = resumed
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second GET asks for the rest: {gets:?}"));
    assert!(from > 0 && from < data.len(), "{resumed}");
    assert_eq!(
        std::fs::read(cache.path().join("blobs/sha256").join(&sha)).unwrap(),
        data
    );
}

#[test]
fn a_server_that_keeps_failing_gets_a_clear_error_and_nothing_is_cached() {
    let _shared = crate::support::shared();
    let data = good_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    server.set_fault(Fault::Unavailable);
    let cache = tempfile::tempdir().unwrap();
    let out = fetch(&server, &sha, cache.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.lines().rfind(|l| l.starts_with("error:")).unwrap();
    assert!(
        last.contains("answered 503 Service Unavailable")
            && last.contains("gave up after 6 attempts"),
        "{err}"
    );
    assert_eq!(server.requests(), 6);
    assert_eq!(files_below(cache.path()), Vec::<std::path::PathBuf>::new());

    // A 404 is an answer, not a fault: asked once.
    let (server, _www) = serve(&data);
    let out = xtask(&[
        "fetch",
        "--url",
        &server.url("no-such.tar.bz2"),
        "--sha256",
        &sha,
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404 Not Found"), "{}", stderr(&out));
    assert_eq!(server.requests(), 1);
}

#[test]
fn four_concurrent_fetches_download_once() {
    let _shared = crate::support::shared();
    let data = big_tarball();
    let sha = sha256_hex(&data);
    let (server, _www) = serve(&data);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("jemalloc-5.2.1.tar.bz2");
    let runs: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args(["fetch", "--url", &url, "--sha256", &sha, "--cache-dir"])
                .arg(cache.path())
                .env("CI", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<std::process::Output> = runs
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let trees: Vec<String> = outs.iter().map(stdout).collect();
    assert!(trees.iter().all(|t| *t == trees[0]), "{trees:?}");
    assert_eq!(server.requests(), 1, "downloaded once");
    assert_eq!(
        std::fs::read(cache.path().join("blobs/sha256").join(&sha)).unwrap(),
        data
    );
    assert!(
        !files_below(cache.path())
            .iter()
            .any(|p| p.to_string_lossy().contains(".lock")),
        "no lock file is left"
    );
}
