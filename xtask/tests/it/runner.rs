//! The workflows' `cargo xtask` command lines as GitHub's ubuntu-24.04 runner runs them: as an
//! unprivileged user (a user made for the test, uid ≠ 0, no sudo), in a checkout of its own,
//! with its own `$HOME` and Docker config. The lines are read from the YAML (`lock` of
//! lock-refresh.yml, `image` of the e2e job, `job` of the own-cluster job, `publish --plan` and `publish` of publish.yml),
//! their variables expanded, and pointed at loopback servers by setting the flags a test
//! needs (`--specs`, `--mirror`, `--keyring`, `--url`, `--registry`, …):
//!
//! - the base is served by a registry that hands anonymous pull tokens to anyone (as Docker
//!   Hub does); its access log must show no credentials from our client;
//! - `image` builds the profiled image rootless (umoci `--rootless`, the in-image steps in a
//!   user namespace) with the same layers as root builds, and pushes it to an htpasswd
//!   registry with the credentials of the user's `~/.docker/config.json`, no flag;
//! - `publish` pushes with `--registry-user` and `$REGISTRY_PASSWORD`;
//! - `job` (the own-cluster job's) compiles the RocksDB job against the image it built;
//! - `analyze` reads heap dumps with the image's jeprof;
//! - where user namespaces are forbidden (`user.max_user_namespaces=0`, set in a user
//!   namespace of the test's own), `image` and `analyze` stop at once naming the sysctl.

use crate::support::{run_scripts, stderr, stdout, xtask_commands, BearerAuth, Server};
use base64::Engine;
use harness::fixtures::{flink_base, registry::Registry};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use xtask::registry::{Auths, Credentials, Reference, RegistryClient};

const USER: &str = "fj-runner";

struct User {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn id(flag: &str) -> Option<u32> {
    let o = Command::new("id").args([flag, USER]).output().ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

/// The unprivileged user, made if missing; removed when the test ends.
fn user() -> User {
    if id("-u").is_none() {
        let ok = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", USER])
            .status()
            .unwrap()
            .success();
        assert!(ok, "useradd {USER}");
    }
    User {
        uid: id("-u").unwrap(),
        gid: id("-g").unwrap(),
        home: PathBuf::from(format!("/home/{USER}")),
    }
}

struct RemoveUser;
impl Drop for RemoveUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["--remove", USER]).status();
    }
}

fn chown(path: &Path, u: &User) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", u.uid, u.gid))
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// The `cargo xtask` command lines of a workflow, `$VAR`, `"$VAR"` and `${VAR,,}` expanded.
fn workflow_commands(file: &str, vars: &[(&str, &str)]) -> Vec<Vec<String>> {
    let root = xtask::project::root();
    let yaml = std::fs::read_to_string(root.join(".github/workflows").join(file)).unwrap();
    let expand = |t: &str| -> String {
        let mut t = t.trim_matches('"').to_string();
        for (k, v) in vars {
            t = t.replace(&format!("${{{k},,}}"), &v.to_lowercase());
            t = t.replace(&format!("${{{k}}}"), v);
            t = t.replace(&format!("${k}"), v);
        }
        t
    };
    run_scripts(&yaml)
        .iter()
        .flat_map(|s| xtask_commands(s))
        .map(|c| c.iter().map(|t| expand(t)).collect())
        .collect()
}

/// The one command of `file` whose tokens start with `prefix`.
fn command(file: &str, vars: &[(&str, &str)], prefix: &[&str]) -> Vec<String> {
    let all = workflow_commands(file, vars);
    let found: Vec<&Vec<String>> = all
        .iter()
        .filter(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, b)| a == b))
        .collect();
    assert_eq!(found.len(), 1, "{file}: {prefix:?} in {all:?}");
    found[0].clone()
}

/// Sets `flag` to `value`: replaces the value the workflow gives, or appends the flag.
fn set(cmd: &mut Vec<String>, flag: &str, value: &str) {
    match cmd.iter().position(|t| t == flag) {
        Some(i) => cmd[i + 1] = value.to_string(),
        None => cmd.extend([flag.to_string(), value.to_string()]),
    }
}

fn switch(cmd: &mut Vec<String>, flag: &str) {
    if !cmd.iter().any(|t| t == flag) {
        cmd.push(flag.to_string());
    }
}

struct Runner {
    user: User,
    /// The user's checkout (`images/`, `patches/`, `ci/`, `e2e/`): the working directory.
    checkout: PathBuf,
    bin: PathBuf,
}

impl Runner {
    /// Runs the xtask binary as the user in the checkout, with a clean environment.
    fn run(&self, args: &[String], env: &[(&str, String)]) -> Output {
        self.run_wrapped(&[], args, env)
    }

    fn run_wrapped(&self, wrapper: &[&str], args: &[String], env: &[(&str, String)]) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--"]).args(wrapper).args([
            "env",
            "-i",
            &format!("HOME={}", self.user.home.display()),
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "CI=1",
            &format!("FLINK_JEMALLOC_ROOT={}", self.checkout.display()),
        ]);
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        let out = c
            .arg(&self.bin)
            .args(args)
            .current_dir(&self.checkout)
            .output()
            .unwrap();
        eprintln!(
            "$ [{USER}] xtask {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The fixture base as a static registry tree (`v2/<repo>/manifests/…`, `…/blobs/…`).
fn static_registry(dir: &Path, repo: &str, tag: &str) -> String {
    let layout = flink_base::flink_base_oci().unwrap();
    let digest = xtask::oci::layout_ref(&layout).unwrap().manifest_digest;
    let (bytes, _, blobs) = xtask::oci::layout_manifest(&layout, &digest).unwrap();
    let base = dir.join("v2").join(repo);
    std::fs::create_dir_all(base.join("manifests")).unwrap();
    std::fs::create_dir_all(base.join("blobs")).unwrap();
    std::fs::write(base.join("manifests").join(tag), &bytes).unwrap();
    std::fs::write(base.join("manifests").join(&digest), &bytes).unwrap();
    for b in blobs {
        let hex = b.trim_start_matches("sha256:");
        std::fs::copy(
            layout.join("blobs/sha256").join(hex),
            base.join("blobs").join(&b),
        )
        .unwrap();
    }
    digest
}

fn manifest_layers(layout: &Path) -> Vec<String> {
    let digest = xtask::oci::layout_ref(layout).unwrap().manifest_digest;
    let (_, m, _) = xtask::oci::layout_manifest(layout, &digest).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// (path, mode, sha256) of every entry of a gzip layer of `layout`, build-info.json left out.
fn layer_files(layout: &Path, digest: &str) -> Vec<(String, u32, String)> {
    let blob = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob).unwrap());
    let mut out = Vec::new();
    for e in tar::Archive::new(gz).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        if path.ends_with("build-info.json") {
            continue;
        }
        let mode = e.header().mode().unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((path, mode, crate::support::sha256_hex(&data)));
    }
    out
}

fn assert_no_credentials(base: &Server) {
    let log = base.access_log.lock().unwrap().clone();
    assert!(!log.is_empty(), "the base was pulled from its registry");
    for (target, authorization) in &log {
        assert!(
            authorization.is_empty() || authorization == "Bearer anonymous",
            "the base's registry was sent `{authorization}` for {target}"
        );
        if target.starts_with("/token") {
            assert_eq!(authorization, "", "its token service got credentials");
        }
    }
}

#[test]
fn the_workflows_commands_as_an_unprivileged_runner() {
    let _serial = crate::support::serial();
    let u = user();
    let _remove = RemoveUser;
    let repo = harness::fixtures::debian_repo_with_tools("bullseye").unwrap();
    let standin = harness::fixtures::jemalloc_standin().unwrap();
    let files = Server::serve(vec![
        ("/debian", repo.dir.clone()),
        ("/jemalloc-5.2.1.tar.bz2", standin.tarball.clone()),
    ]);
    let registry_dir = tempfile::tempdir().unwrap();
    static_registry(registry_dir.path(), "fixtures/flink", "1.10.3");
    let base = Server::serve(vec![("/", registry_dir.path().to_path_buf())]);
    base.set_auth(Some(BearerAuth {
        token: "anonymous".into(),
        basic: None,
    }));
    let push = Registry::start_with_htpasswd("pusher", "s3cret").unwrap();

    // The user's world: a checkout, the binary cargo would run, a specs directory whose spec
    // names the loopback base, the fixture repository's keyring.
    let work = tempfile::Builder::new()
        .prefix("runner-")
        .tempdir_in("/tmp")
        .unwrap();
    let w = work.path().to_path_buf();
    let root = xtask::project::root();
    let checkout = w.join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    for d in ["images", "patches", "ci", "e2e"] {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(root.join(d))
            .arg(checkout.join(d))
            .status()
            .unwrap();
        assert!(ok.success(), "copying {d}");
    }
    let bin = w.join("xtask");
    std::fs::copy(env!("CARGO_BIN_EXE_xtask"), &bin).unwrap();
    let specs = w.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let base_ref = format!("{}/fixtures/flink:1.10.3", base.addr());
    std::fs::write(
        specs.join("flink-1.10.3.toml"),
        format!(
            "flink = \"1.10.3\"\ntag = \"1.10.3-runner\"\nbase = \"{base_ref}\"\nscala = \"2.11\"\n\
             java = \"11\"\njava_home = \"{}\"\nflink_home = \"/opt/flink\"\nuser = \"flink\"\n\
             uid = 9999\ndistribution = \"debian bullseye\"\n",
            flink_base::JAVA_HOME
        ),
    )
    .unwrap();
    std::fs::copy(&repo.keyring, w.join("keyring.gpg")).unwrap();
    std::fs::create_dir_all(w.join("empty-docker-config")).unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    chown(&w, &u);
    let runner = Runner {
        user: u,
        checkout,
        bin,
    };
    let s = |p: &Path| p.display().to_string();
    let loopback = |cmd: &mut Vec<String>| {
        set(cmd, "--specs", &s(&specs));
        switch(cmd, "--plain-http");
        set(cmd, "--mirror", &files.url("debian"));
        set(cmd, "--keyring", &s(&w.join("keyring.gpg")));
        set(cmd, "--url", &files.url("jemalloc-5.2.1.tar.bz2"));
        set(cmd, "--sha256", standin.sha256.as_str());
        set(cmd, "--cache-dir", &s(&w.join("cache")));
    };
    let whoami = Command::new("runuser")
        .args(["-u", USER, "--", "id", "-u"])
        .output()
        .unwrap();
    assert_ne!(stdout(&whoami).trim(), "0", "the runner is not root");

    // Where user namespaces are forbidden, image and analyze stop at once and say why.
    let forbid = format!(
        "unshare --user --map-user={} --map-group={} --keep-caps sh -c \
         'echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"' sh \"$@\"",
        runner.user.uid, runner.user.gid
    );
    let forbid: Vec<&str> = vec!["sh", "-c", &forbid, "sh"];
    let vars = [
        ("HEADLINE", "1.10.3"),
        ("SPEC", "1.10.3"),
        ("name", "1.10.3"),
        ("platforms", "linux/amd64"),
        ("REGISTRY_USER", "pusher"),
        ("GITHUB_REPOSITORY_OWNER", "Flink-Jemalloc"),
    ];
    let mut image = command("publish.yml", &vars, &["image", "--flink", "1.10.3"]);
    loopback(&mut image);
    for args in [
        image.clone(),
        vec![
            "analyze".to_string(),
            s(&w),
            "--image".into(),
            "target/headline".into(),
        ],
    ] {
        let out = runner.run_wrapped(&forbid, &args, &[]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("user.max_user_namespaces=0 forbids") && err.contains("sudo"),
            "{err}"
        );
        assert!(!err.contains("==> "), "refused before any work: {err}");
    }

    // lock-refresh.yml: the lock, born from signed indices.
    let mut lock = command("lock-refresh.yml", &vars, &["lock"]);
    assert!(lock.contains(&"--archive-keyring".to_string()), "{lock:?}");
    loopback(&mut lock);
    let out = runner.run(&lock, &[]);
    assert!(out.status.success(), "lock: {}", stderr(&out));
    assert!(specs.join("flink-1.10.3.lock").is_file());

    // publish.yml's e2e job: the headline image, --locked, rootless.
    let out = runner.run(&image, &[]);
    assert!(out.status.success(), "image: {}", stderr(&out));
    let layout = runner.checkout.join("target/headline");
    // The same image as root builds: the base and tools layers bit for bit, the jemalloc
    // layer file for file (its build-info.json records the loopback URLs, which differ).
    let (mine, roots) = (
        manifest_layers(&layout),
        manifest_layers(&crate::support::profiled_image()),
    );
    assert_eq!(
        (&mine[0], &mine[2]),
        (&roots[0], &roots[2]),
        "base and tools layers"
    );
    assert_eq!(
        layer_files(&layout, &mine[1]),
        layer_files(&crate::support::profiled_image(), &roots[1]),
        "the jemalloc layer's files"
    );
    assert_no_credentials(&base);

    // publish.yml's own-cluster job: the RocksDB job compiled for the image, rootless (here
    // for the headline image).
    let mut job = command("publish.yml", &vars, &["job"]);
    set(&mut job, "--image", "target/headline");
    let out = runner.run(&job, &[]);
    assert!(out.status.success(), "job: {}", stderr(&out));
    let jar = runner.checkout.join(stdout(&out).trim());
    assert!(jar.is_file(), "{}", jar.display());

    // A push with the credentials of ~/.docker/config.json, no --registry-user.
    let docker_config = runner.user.home.join(".docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret");
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, push.addr),
    )
    .unwrap();
    chown(&docker_config, &runner.user);
    let mut pushed = image.clone();
    let target = format!("{}/flink-jemalloc:runner", push.addr);
    set(&mut pushed, "--push", &target);
    let out = runner.run(&pushed, &[]);
    assert!(out.status.success(), "image --push: {}", stderr(&out));
    let creds = Auths::anonymous().with(
        &push.addr,
        Credentials {
            username: "pusher".into(),
            password: "s3cret".into(),
        },
    );
    let r: Reference = target.parse().unwrap();
    RegistryClient::new(true, creds)
        .image_manifest(&r)
        .expect("the pushed image is in the registry");
    assert_no_credentials(&base);

    // publish.yml: the plan, then publish with --registry-user and $REGISTRY_PASSWORD (and
    // an empty Docker config, so the flag is what authenticates).
    let plan = command(
        "publish.yml",
        &vars,
        &["publish", "--config", "ci/publish.toml", "--plan"],
    );
    let out = runner.run(&plan, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        p["registry"], "ghcr.io/flink-jemalloc",
        "the owner, lowercased"
    );
    let mut publish = command(
        "publish.yml",
        &vars,
        &["publish", "--config", "ci/publish.toml", "--locked"],
    );
    loopback(&mut publish);
    set(&mut publish, "--registry", &push.addr);
    let out = runner.run(
        &publish,
        &[
            ("REGISTRY_PASSWORD", "s3cret".to_string()),
            ("DOCKER_CONFIG", s(&w.join("empty-docker-config"))),
        ],
    );
    assert!(out.status.success(), "publish: {}", stderr(&out));
    let report: Value = serde_json::from_slice(
        &std::fs::read(runner.checkout.join("target/publish/1.10.3.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["images"].as_array().unwrap().len(), 1, "{report}");
    assert_no_credentials(&base);

    // analyze, rootless: dumps of java under the image's jemalloc (made as root in the
    // unpacked image), read by the image's jeprof in a user namespace.
    let dumps = w.join("dumps");
    make_dumps(&layout, &dumps);
    chown(&dumps, &runner.user);
    let out = runner.run(
        &[
            "analyze".into(),
            s(&dumps),
            "--image".into(),
            "target/headline".into(),
            "--out".into(),
            s(&w.join("analysis")),
        ],
        &[],
    );
    assert!(out.status.success(), "analyze: {}", stderr(&out));
    let a: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(a["dumps"].as_array().unwrap().len() >= 2, "{a}");
    assert!(
        std::fs::read_to_string(w.join("analysis/diff.txt"))
            .unwrap()
            .contains("Total:"),
        "jeprof's text"
    );
}

/// Heap dumps of `java -version` under the image's jemalloc, written into `out`.
fn make_dumps(layout: &Path, out: &Path) {
    let t = tempfile::tempdir().unwrap();
    let bundle = xtask::bundle::Bundle::unpack(layout, &t.path().join("b")).unwrap();
    let r = bundle.rootfs();
    let script = format!(
        "unshare -m -p -f sh -c 'mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && \
         chroot {r} /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
         LD_PRELOAD=/opt/jemalloc/lib/libjemalloc.so.2 \
         MALLOC_CONF=prof:true,lg_prof_interval:20,lg_prof_sample:12,prof_prefix:/tmp/dumps/jeprof.out \
         java -Xmx64m -version'",
        r = r.display()
    );
    std::fs::create_dir_all(r.join("tmp/dumps")).unwrap();
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::create_dir_all(out).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(r.join("tmp/dumps")).unwrap().flatten() {
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
        n += 1;
    }
    assert!(n >= 2, "java under jemalloc wrote {n} dump(s)");
}
