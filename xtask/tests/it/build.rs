//! A real build: jemalloc 5.2.1 source from the `tikv-jemalloc-sys` crate served over
//! loopback, built against a Debian bullseye sysroot from a local repository on loopback,
//! then checked independently of the build's own gates (readelf, a profiled perl, jeprof
//! with `/usr/bin/file` hidden). Fixtures are prepared by `harness::fixtures` (apt-get
//! download, dpkg-scanpackages, cargo fetch) into a cache outside the repository.

use crate::support::{stderr, stdout, xtask, Server};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Setup {
    server: Server,
    suite: &'static str,
    version: &'static str,
    standin_sha: String,
    _work: tempfile::TempDir,
    cache: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    setup_for("bullseye", "5.2.1")
}

fn setup_for(suite: &'static str, version: &'static str) -> Setup {
    setup_arch(suite, version, "amd64")
}

/// The fixtures of a build of jemalloc `version` for `suite`'s Debian architecture `arch`.
fn setup_arch(suite: &'static str, version: &'static str, arch: &str) -> Setup {
    let repo = harness::fixtures::debian_repo_for(suite, arch).expect("fixture Debian repository");
    let standin =
        harness::fixtures::jemalloc_standin_for(version).expect("fixture jemalloc source");
    let server = Server::serve(vec![
        ("/debian", repo),
        ("/jemalloc.tar.bz2", standin.tarball.clone()),
    ]);
    let work = tempfile::tempdir().unwrap();
    Setup {
        server,
        suite,
        version,
        standin_sha: standin.sha256.to_string(),
        cache: work.path().join("cache"),
        out: work.path().join("out/jemalloc"),
        _work: work,
    }
}

fn build(s: &Setup, extra: &[&str]) -> std::process::Output {
    let url = s.server.url("jemalloc.tar.bz2");
    let mirror = s.server.url("debian");
    let mut args = vec![
        "build",
        "--jemalloc",
        s.version,
        "--url",
        &url,
        "--sha256",
        &s.standin_sha,
        "--suite",
        s.suite,
        "--mirror",
        &mirror,
        "--cache-dir",
        s.cache.to_str().unwrap(),
        "--out",
        s.out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&args)
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn glibc_versions_needed(lib: &Path) -> Vec<Vec<u32>> {
    let out = Command::new("readelf")
        .args(["-V", "--wide"])
        .arg(lib)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions: Vec<Vec<u32>> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| v.split('.').map(|p| p.parse().ok()).collect())
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

fn needed(lib: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", "--wide"])
        .arg(lib)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            l.split('[')
                .nth(1)
                .map(|r| r.trim_end_matches(']').to_string())
        })
        .collect()
}

#[test]
fn builds_a_profiling_jemalloc_for_bullseye() {
    let _serial = crate::support::serial();
    let s = setup();
    let out = build(&s, &[]);
    assert!(out.status.success(), "build failed:\n{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), s.out.to_str().unwrap());
    let err = stderr(&out);

    // The installed tree.
    for f in [
        "bin/jeprof",
        "bin/jemalloc-config",
        "bin/jemalloc.sh",
        "lib/libjemalloc.so.2",
        "include/jemalloc/jemalloc.h",
    ] {
        assert!(s.out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_link(s.out.join("lib/libjemalloc.so")).unwrap(),
        Path::new("libjemalloc.so.2")
    );
    assert!(
        !s.out.join("lib/libjemalloc.a").exists(),
        "static archives only on request"
    );
    let config = sh(&format!("{}/bin/jemalloc-config --config", s.out.display()));
    let config = String::from_utf8_lossy(&config.stdout);
    for flag in [
        "--prefix=/opt/jemalloc",
        "--enable-prof",
        "--enable-stats",
        "--enable-debug",
        "--enable-fill",
    ] {
        assert!(
            config.contains(flag),
            "jemalloc-config --config lacks {flag}: {config}"
        );
    }

    // Gate: the unwinder.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.out.join("build-info.json")).unwrap())
            .unwrap();
    assert_eq!(info["unwinder"], "prof-libgcc");
    assert_eq!(info["suite"], "bullseye");
    assert!(err.contains("unwinder: prof-libgcc"), "{err}");

    // Gate: glibc versions, read independently with readelf.
    let lib = s.out.join("lib/libjemalloc.so.2");
    let versions = glibc_versions_needed(&lib);
    assert!(!versions.is_empty(), "readelf shows no GLIBC_ versions");
    let newest = versions.last().unwrap();
    assert!(
        *newest <= vec![2, 31],
        "needs GLIBC_{newest:?}, newer than bullseye's 2.31"
    );

    // Gate: every DT_NEEDED library is in the sysroot.
    let sysroot = std::fs::read_dir(s.cache.join("sysroot"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let needs = needed(&lib);
    assert!(
        needs.contains(&"libgcc_s.so.1".to_string()),
        "prof-libgcc links libgcc_s: {needs:?}"
    );
    for n in &needs {
        assert!(
            ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
                .iter()
                .any(|d| sysroot.join(d).join(n).exists()),
            "{n} is not in the sysroot {}",
            sysroot.display()
        );
    }

    // Gate: the smoke run's profile was read by jeprof and named the allocating function.
    assert!(err.contains("smoke_alloc"), "{err}");

    // Independently: profile a real program on this host with the built library, and read
    // the dump with the built jeprof while /usr/bin/file is hidden (the MSWin32 trap).
    let prof = s._work.path().join("prof");
    std::fs::create_dir_all(&prof).unwrap();
    let run = sh(&format!(
        "LD_PRELOAD={lib} MALLOC_CONF=prof:true,prof_final:true,lg_prof_sample:10,prof_prefix:{p}/jeprof \
         perl -e 'my @keep = map {{ \"x\" x 65536 }} 1..200; print scalar(@keep), \"\\n\"'",
        lib = lib.display(),
        p = prof.display()
    ));
    assert!(
        run.status.success(),
        "perl under the profiling jemalloc: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let heap = std::fs::read_dir(&prof)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "heap"))
        .expect("a heap profile from perl");
    let upper = s._work.path().join("overlay");
    let jeprof = sh(&format!(
        "mkdir -p {u}/up {u}/work && unshare -m sh -c 'mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={u}/up,workdir={u}/work /usr/bin && rm /usr/bin/file && test ! -e /usr/bin/file && perl {j} --text /usr/bin/perl {h}'",
        u = upper.display(),
        j = s.out.join("bin/jeprof").display(),
        h = heap.display()
    ));
    let jerr = String::from_utf8_lossy(&jeprof.stderr);
    let jout = String::from_utf8_lossy(&jeprof.stdout);
    assert!(jeprof.status.success(), "jeprof failed: {jerr}");
    assert!(jout.contains("Total:"), "{jout}");
    assert!(
        jout.contains("Perl_"),
        "perl's allocation sites should be named: {jout}"
    );
    assert!(
        !jerr.contains("MSWin32") && !jerr.contains("isn't numeric"),
        "{jerr}"
    );

    // A second build with nothing changed compiles nothing.
    let lib_mtime = std::fs::metadata(&lib).unwrap().modified().unwrap();
    let again = build(&s, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
    assert!(!stderr(&again).contains("make -j"), "{}", stderr(&again));
    assert_eq!(
        std::fs::metadata(&lib).unwrap().modified().unwrap(),
        lib_mtime
    );
}

/// linux/arm64 for bullseye and bookworm, cross-built here: Debian's cross compiler against
/// each suite's arm64 sysroot, 64 KiB pages, the same gates, the smoke program run by the
/// sysroot's own aarch64 loader under qemu and read by jeprof with the cross binutils.
#[test]
fn cross_builds_jemalloc_for_linux_arm64() {
    let _serial = crate::support::serial();
    for (suite, glibc) in [("bullseye", vec![2, 31]), ("bookworm", vec![2, 36])] {
        let s = setup_arch(suite, "5.2.1", "arm64");
        let out = build(&s, &["--platform", "linux/arm64"]);
        assert!(
            out.status.success(),
            "{suite}: build failed:\n{}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("qemu-aarch64-static") && err.contains("smoke_alloc"),
            "{suite}: the smoke run under qemu, attributed by jeprof: {err}"
        );
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(s.out.join("build-info.json")).unwrap())
                .unwrap();
        assert_eq!(info["platform"], "linux/arm64");
        assert_eq!(info["unwinder"], "prof-libgcc");
        assert!(info["compiler"]
            .as_str()
            .unwrap()
            .starts_with("aarch64-linux-gnu-gcc "));
        let lib = s.out.join("lib/libjemalloc.so.2");
        let header = sh(&format!("readelf -h {}", lib.display()));
        assert!(
            String::from_utf8_lossy(&header.stdout).contains("AArch64"),
            "{suite}: an aarch64 library"
        );
        assert!(
            *glibc_versions_needed(&lib).last().unwrap() <= glibc,
            "{suite}: needs no newer glibc than {glibc:?}"
        );
        assert!(info["sysroot_packages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["filename"].as_str().unwrap().ends_with("_arm64.deb")
                || p["filename"].as_str().unwrap().ends_with("_all.deb")));
        let config = sh(&format!("{}/bin/jemalloc-config --config", s.out.display()));
        let config = String::from_utf8_lossy(&config.stdout);
        assert!(
            config.contains("--with-lg-page=16") && config.contains("--host=aarch64-linux-gnu"),
            "{suite}: 64 KiB pages, cross-built: {config}"
        );
        // The arm64 sysroot as a root file system of another CPU: its loader runs chrooted
        // under the qemu copied in for the run (no binfmt_misc), which is gone afterwards.
        let sysroot = std::fs::read_dir(s.cache.join("sysroot"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("lib/ld-linux-aarch64.so.1").exists())
            .expect("the arm64 sysroot");
        let before = std::fs::read_dir(&sysroot).unwrap().count();
        let qemu = Path::new("/usr/bin/qemu-aarch64-static");
        let listed = xtask::rootless::run_in_emulated(
            &sysroot,
            &[
                "/lib/ld-linux-aarch64.so.1",
                "--list",
                "/lib/aarch64-linux-gnu/libc.so.6",
            ],
            "the aarch64 loader",
            Some(qemu),
        )
        .unwrap();
        assert!(listed.contains("/lib/ld-linux-aarch64.so.1"), "{listed}");
        assert_eq!(std::fs::read_dir(&sysroot).unwrap().count(), before);
        assert!(xtask::rootless::run_in_emulated(
            &sysroot,
            &["/usr/bin/no-such-program"],
            "a program the sysroot lacks",
            Some(qemu),
        )
        .is_err());
        assert_eq!(
            std::fs::read_dir(&sysroot).unwrap().count(),
            before,
            "the emulator's copy goes after a failed run too"
        );
    }
}

/// jemalloc 5.3.0 (`--jemalloc 5.3.0`, its stand-in) for bookworm: its patches applied, the
/// same gates, its own `jeprof --collapsed` (the 5.2.1 backport is not carried), and the
/// version in the tree and its build info.
#[test]
fn builds_jemalloc_5_3_0_for_bookworm() {
    let _serial = crate::support::serial();
    let s = setup_for("bookworm", "5.3.0");
    let out = build(&s, &[]);
    assert!(out.status.success(), "build failed:\n{}", stderr(&out));
    let err = stderr(&out);
    let version = sh(&format!(
        "{}/bin/jemalloc-config --version",
        s.out.display()
    ));
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("5.3.0-"),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.out.join("build-info.json")).unwrap())
            .unwrap();
    assert_eq!(info["jemalloc_version"], "5.3.0");
    assert_eq!(info["suite"], "bookworm");
    assert_eq!(info["unwinder"], "prof-libgcc");
    let patches: Vec<&str> = info["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        patches,
        [
            "0001-jeprof-compare-os-name-as-string.patch",
            "0002-jemalloc_cpp-avoid-std-throw_bad_alloc.patch"
        ]
    );
    assert!(err.contains("smoke_alloc"), "{err}");
    let lib = s.out.join("lib/libjemalloc.so.2");
    assert!(
        *glibc_versions_needed(&lib).last().unwrap() <= vec![2, 36],
        "bookworm's glibc is 2.36"
    );
    // 5.3.0's own jeprof --collapsed, on a profile of perl.
    let prof = s._work.path().join("prof");
    std::fs::create_dir_all(&prof).unwrap();
    let run = sh(&format!(
        "LD_PRELOAD={lib} MALLOC_CONF=prof:true,prof_final:true,lg_prof_sample:10,prof_prefix:{p}/jeprof \
         perl -e 'my @keep = map {{ \"x\" x 65536 }} 1..200; print scalar(@keep), \"\\n\"' && \
         perl {j} --collapsed /usr/bin/perl {p}/*.heap",
        lib = lib.display(),
        p = prof.display(),
        j = s.out.join("bin/jeprof").display(),
    ));
    let (o, e) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{o}{e}");
    assert!(
        o.lines().any(|l| l.contains("Perl_") && l.contains(';')),
        "collapsed stacks name perl's frames: {o}"
    );
    assert!(
        !e.contains("MSWin32") && !e.contains("isn't numeric"),
        "{e}"
    );
}

/// Without libgcc_s in the sysroot configure silently picks prof-gcc; the build refuses it
/// and leaves no output behind.
#[test]
fn refuses_prof_gcc_when_the_sysroot_lacks_libgcc() {
    let _serial = crate::support::serial();
    let s = setup();
    let out = build(
        &s,
        &[
            "--sysroot-packages",
            "libc6,libc6-dev,linux-libc-dev,libcrypt1,libcrypt-dev,libstdc++6",
        ],
    );
    assert!(!out.status.success(), "a prof-gcc build must fail");
    let err = stderr(&out);
    assert!(err.contains("prof-gcc"), "{err}");
    assert!(
        err.contains("libgcc-s1"),
        "the error should say what to add: {err}"
    );
    assert!(!s.out.exists(), "no output may be left behind");
    assert!(
        !err.contains("make -j"),
        "the gate runs before compiling: {err}"
    );
}

/// The glibc gate refuses a library linked against this host's glibc (2.36), which needs
/// versions that bullseye's libc does not define.
#[test]
fn glibc_gate_refuses_a_library_linked_against_the_host() {
    let _serial = crate::support::serial();
    let s = setup();
    let cache = xtask::project::Cache::new(&s.cache);
    let debian = xtask::spec::DebianSpec::load(&xtask::project::root()).unwrap();
    let suite = debian.suite("bullseye").unwrap();
    let sysroot = xtask::build::sysroot::prepare(
        &xtask::download::Downloader::new(),
        &cache,
        &xtask::build::sysroot::Request {
            mirror: s.server.url("debian"),
            suite: "bullseye".into(),
            component: suite.component.clone(),
            platform: debian.platform("linux/amd64").unwrap().clone(),
            packages: suite.packages.clone(),
            pins: None,
            keyring: None,
        },
    )
    .unwrap();
    let dir = s._work.path();
    std::fs::write(
        dir.join("t.c"),
        "#include <pthread.h>\nstatic void *run(void *a) { return a; }\n\
         int f(void) { pthread_t t; return pthread_create(&t, 0, run, 0); }\n",
    )
    .unwrap();
    let so = dir.join("libhost.so");
    let cc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(dir.join("t.c"))
        .output()
        .unwrap();
    assert!(cc.status.success());
    let err = xtask::build::check_links(&so, &sysroot)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GLIBC_2.34") || err.contains("GLIBC_2.32"),
        "{err}"
    );
    assert!(err.contains("bullseye") && err.contains("2.31-13"), "{err}");

    // The same source linked against the sysroot passes.
    let ok = dir.join("libtarget.so");
    let cc = Command::new("gcc")
        .args(sysroot.compiler_flags())
        .args(["-shared", "-fPIC", "-pthread", "-o"])
        .arg(&ok)
        .arg(dir.join("t.c"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let facts = xtask::build::check_links(&ok, &sysroot).unwrap();
    assert!(
        facts.needed.contains(&"libpthread.so.0".to_string()),
        "{facts:?}"
    );
    assert!(
        xtask::build::gates::glibc_version(
            &xtask::build::gates::max_glibc(&facts.version_needs).unwrap()
        )
        .unwrap()
            <= vec![2, 31]
    );
}
