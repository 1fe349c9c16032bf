//! Test support: a loopback HTTP/1.1 file server with fault injection, and helpers to run
//! the real `xtask` binary.
//!
//! The server is hand-written (about a hundred lines on std::net) because the tests need
//! to misbehave on purpose — lie about Content-Length, corrupt a byte, vanish — which the
//! maintained server crates make awkward; it is test scaffolding, not the thing under test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Flip one byte in the middle of every body.
    Tamper,
    /// Announce the full Content-Length, send half the body, close.
    Truncate,
    /// The first GET of each path: `429 Too Many Requests` with `Retry-After: 1`.
    TooManyRequestsFirst,
    /// The first GET of each path: half the body, then the connection is closed (a reset
    /// in the middle of a large blob); later GETs are served, honouring `Range`.
    BreakFirst,
    /// Every GET: `503 Service Unavailable`.
    Unavailable,
}

/// A registry-style bearer-token challenge: requests without `Authorization: Bearer
/// <token>` get a 401 naming `/token` on this server as the realm; `/token` hands out the
/// token (to anyone, or only to `basic` credentials when set).
#[derive(Debug, Clone)]
pub struct BearerAuth {
    pub token: String,
    pub basic: Option<(String, String)>,
}

pub struct Server {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    fault: Arc<Mutex<Fault>>,
    auth: Arc<Mutex<Option<BearerAuth>>>,
    /// Query strings of the requests made to `/token`.
    pub token_queries: Arc<Mutex<Vec<String>>>,
    /// The access log: every request's target and its `Authorization` header ("" if none).
    pub access_log: Arc<Mutex<Vec<(String, String)>>>,
    /// Every request's method, target and `Range` header ("" if none).
    pub ranges: Arc<Mutex<Vec<(String, String, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves files: a request for `<prefix>/<rest>` is answered from `<dir>/<rest>`.
    pub fn serve(mounts: Vec<(&str, PathBuf)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let fault = Arc::new(Mutex::new(Fault::None));
        let auth: Arc<Mutex<Option<BearerAuth>>> = Arc::new(Mutex::new(None));
        let token_queries = Arc::new(Mutex::new(Vec::new()));
        let access_log = Arc::new(Mutex::new(Vec::new()));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let mounts: Arc<Vec<(String, PathBuf)>> = Arc::new(
            mounts
                .into_iter()
                .map(|(p, d)| (p.trim_end_matches('/').to_string(), d))
                .collect(),
        );
        let thread = {
            let (stop, requests, fault) = (stop.clone(), requests.clone(), fault.clone());
            let (auth, token_queries) = (auth.clone(), token_queries.clone());
            let access_log = access_log.clone();
            let ranges = ranges.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, fault, mounts) =
                        (requests.clone(), fault.clone(), mounts.clone());
                    let (auth, token_queries) = (auth.clone(), token_queries.clone());
                    let access_log = access_log.clone();
                    let ranges = ranges.clone();
                    std::thread::spawn(move || {
                        let f = *fault.lock().unwrap();
                        let a = auth.lock().unwrap().clone();
                        let logs = Logs {
                            token_queries: &token_queries,
                            access_log: &access_log,
                            ranges: &ranges,
                        };
                        let _ = handle(conn, &mounts, f, &requests, a.as_ref(), logs, addr);
                    });
                }
            })
        };
        Server {
            addr,
            stop,
            requests,
            fault,
            auth,
            token_queries,
            access_log,
            ranges,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn set_auth(&self, a: Option<BearerAuth>) {
        *self.auth.lock().unwrap() = a;
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the server records of its requests.
#[derive(Clone, Copy)]
struct Logs<'a> {
    token_queries: &'a Mutex<Vec<String>>,
    access_log: &'a Mutex<Vec<(String, String)>>,
    ranges: &'a Mutex<Vec<(String, String, String)>>,
}

fn handle(
    conn: TcpStream,
    mounts: &[(String, PathBuf)],
    fault: Fault,
    requests: &AtomicUsize,
    auth: Option<&BearerAuth>,
    logs: Logs,
    addr: std::net::SocketAddr,
) -> std::io::Result<()> {
    let Logs {
        token_queries,
        access_log,
        ranges,
    } = logs;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut authorization = String::new();
    let mut range = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = v.trim().to_string();
            }
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().to_string();
            }
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    requests.fetch_add(1, Ordering::SeqCst);
    access_log
        .lock()
        .unwrap()
        .push((target.to_string(), authorization.clone()));
    let first_of_path = {
        let mut r = ranges.lock().unwrap();
        let first = !r.iter().any(|(m, t, _)| m == method && t == target);
        r.push((method.to_string(), target.to_string(), range.clone()));
        first
    };
    let mut out = conn;
    if let Some(a) = auth {
        if let Some(query) = target.strip_prefix("/token") {
            token_queries
                .lock()
                .unwrap()
                .push(query.trim_start_matches('?').to_string());
            let allowed = match &a.basic {
                None => true,
                Some((u, p)) => {
                    use base64::Engine;
                    let want = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                    authorization == format!("Basic {want}")
                }
            };
            if !allowed {
                return out.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
            let body = format!("{{\"token\":\"{}\"}}", a.token);
            return write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        if authorization != format!("Bearer {}", a.token) {
            return write!(
                out,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"loopback-registry\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
    let get = method == "GET";
    match fault {
        Fault::TooManyRequestsFirst if get && first_of_path => {
            return out.write_all(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        Fault::Unavailable if get => {
            return out.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        _ => {}
    }
    let file = resolve(mounts, target);
    let Some(body) = file.and_then(|p| std::fs::read(p).ok()) else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    // `Range: bytes=N-`, the only form the client sends.
    let from = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < body.len());
    let body = match from {
        Some(n) => {
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {n}-{}/{}\r\nConnection: close\r\n\r\n",
                body.len() - n,
                body.len() - 1,
                body.len()
            )?;
            body[n..].to_vec()
        }
        None => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            body
        }
    };
    if method == "HEAD" {
        return Ok(());
    }
    match fault {
        Fault::BreakFirst if first_of_path => {
            out.write_all(&body[..body.len() / 2])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)
        }
        Fault::None | Fault::TooManyRequestsFirst | Fault::BreakFirst | Fault::Unavailable => {
            out.write_all(&body)
        }
        Fault::Tamper => {
            let mut b = body;
            if !b.is_empty() {
                let mid = b.len() / 2;
                b[mid] ^= 0xff;
            }
            out.write_all(&b)
        }
        Fault::Truncate => {
            out.write_all(&body[..body.len() / 2])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)
        }
    }
}

fn resolve(mounts: &[(String, PathBuf)], target: &str) -> Option<PathBuf> {
    let path = target.split('?').next().unwrap_or("");
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    for (prefix, dir) in mounts {
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            let rest = rest.trim_start_matches('/');
            let p = if rest.is_empty() {
                dir.clone()
            } else {
                dir.join(rest)
            };
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs the real `xtask` binary with plain (CI-style) progress output.
pub fn xtask(args: &[&str]) -> Output {
    xtask_with_env(args, &[])
}

/// [`xtask`] with `env` set as well.
pub fn xtask_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("CI", "1")
        .envs(env.iter().copied())
        .output()
        .expect("running the xtask binary");
    eprintln!(
        "$ xtask {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PATH with every command of this one but `hidden`, as symlinks in `dir`: what a machine
/// without those commands has.
pub fn path_without(hidden: &[&str], dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name();
            let link = dir.join(&name);
            if !hidden.iter().any(|h| name == **h) && !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    dir.as_os_str().to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every regular file below `dir` (recursively), for "nothing was left behind" checks.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A `.tar.bz2` built entry by entry, with raw names (so tests can write unsafe ones).
pub struct TarBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }
}

impl TarBuilder {
    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, data.len() as u64, 0o644);
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        let mut h = Self::header(name, tar::EntryType::Directory, 0, 0o755);
        h.set_cksum();
        self.tar.append(&h, &[][..]).unwrap();
        self
    }

    /// A symlink, hard link, device or FIFO entry; `link` is written raw.
    pub fn special(mut self, name: &str, kind: tar::EntryType, link: &str) -> Self {
        let mut h = Self::header(name, kind, 0, 0o644);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.tar.append(&h, &[][..]).unwrap();
        self
    }

    pub fn bz2(self) -> Vec<u8> {
        let raw = self.tar.into_inner().unwrap();
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        enc.write_all(&raw).unwrap();
        enc.finish().unwrap()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The profiled image of the tests: built by this `xtask` binary from the fixture Flink base
/// (pushed into a loopback registry) with the loopback Debian and jemalloc fixtures, as an
/// OCI layout. Built once per binary into the fixtures cache (`profiled-<sha256 of the
/// binary>/`, under a file lock) and shared by every test and test binary, with the lock,
/// cache and arguments of its build so that [`rebuild_profiled_image`] can run `image` again
/// warm and offline.
pub fn profiled_image() -> PathBuf {
    profiled_dir(Base::Flink1).join("layout")
}

/// [`profiled_image`] for Flink 2.2.1: the bookworm/OpenJDK 17 stand-in with the bookworm
/// fixture repository, cached the same way.
pub fn profiled_image_flink2() -> PathBuf {
    profiled_dir(Base::Flink2).join("layout")
}

/// The fixture base a profiled image is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Flink 1.10.3 on bullseye (OpenJDK 11, gosu).
    Flink1,
    /// Flink 2.2.1 on bookworm (OpenJDK 17, USER flink).
    Flink2,
}

impl Base {
    fn cache_prefix(self) -> &'static str {
        match self {
            Base::Flink1 => "profiled-",
            Base::Flink2 => "profiled2-",
        }
    }
}

fn profiled_dir(base: Base) -> PathBuf {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_xtask")).expect("reading the xtask binary");
    let fixtures = harness::fixtures::fixtures_dir();
    std::fs::create_dir_all(&fixtures).unwrap();
    let prefix = base.cache_prefix();
    let dir = fixtures.join(format!("{prefix}{}", &sha256_hex(&bin)[..16]));
    let lock = std::fs::File::create(fixtures.join(format!(".{prefix}lock"))).unwrap();
    lock.lock().unwrap();
    if dir.join("args.json").is_file() {
        return dir;
    }
    // Images of other binaries, unused for a day.
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in std::fs::read_dir(&fixtures).unwrap().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > day);
        if e.file_name().to_string_lossy().starts_with(prefix) && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{prefix}"))
        .tempdir_in(&fixtures)
        .unwrap();
    let args = build_profiled_image(base, &dir, tmp.path());
    std::fs::write(
        tmp.path().join("args.json"),
        serde_json::to_string(&args).unwrap(),
    )
    .unwrap();
    std::fs::rename(tmp.keep(), &dir).unwrap();
    dir
}

/// `cargo xtask image` again with the arguments of [`profiled_image`]'s build plus `extra`,
/// `--locked`, on its warm cache: no network, no compile.
pub fn rebuild_profiled_image(extra: &[&str]) -> Output {
    let dir = profiled_dir(Base::Flink1);
    let args: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("args.json")).unwrap()).unwrap();
    let mut all: Vec<String> = args;
    all.push("--locked".into());
    // A flag of `extra` the build had (`--output`, `--lock-file`) takes the new value; a
    // flag the build had not is added, as often as `extra` gives it.
    let built = all.len();
    let mut rest = extra.iter();
    while let Some(&flag) = rest.next() {
        match all[..built].iter().position(|a| a == flag) {
            Some(i) if flag.starts_with("--") && i + 1 < all.len() => {
                all[i + 1] = rest.next().expect("a value for the flag").to_string();
            }
            _ => all.push(flag.to_string()),
        }
    }
    xtask(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

/// What `cargo xtask image` builds the test image from, served on loopback while this lives:
/// the fixture Flink base in a real registry, the signed Debian fixture repository and the
/// jemalloc stand-in; `args` are the `image` arguments naming them (no paths of a run).
pub struct ImageInputs {
    pub registry: harness::fixtures::registry::Registry,
    pub files: Server,
    pub args: Vec<String>,
}

impl ImageInputs {
    pub fn start() -> ImageInputs {
        ImageInputs::start_for(Base::Flink1)
    }

    pub fn start_for(base: Base) -> ImageInputs {
        let (suite, flink) = match base {
            Base::Flink1 => ("bullseye", "1.10.3"),
            Base::Flink2 => ("bookworm", harness::fixtures::flink2_base::FLINK_VERSION),
        };
        let repo =
            harness::fixtures::debian_repo_with_tools(suite).expect("fixture Debian repository");
        let standin = harness::fixtures::jemalloc_standin().expect("fixture jemalloc source");
        let registry = harness::fixtures::registry::Registry::start().expect("a loopback registry");
        let addr = registry.url().trim_start_matches("http://").to_string();
        let repo_tag = format!("fixtures/flink:{flink}");
        match base {
            Base::Flink1 => harness::fixtures::flink_base::push_flink_base(&addr, &repo_tag),
            Base::Flink2 => harness::fixtures::flink2_base::push_flink2_base(&addr, &repo_tag),
        }
        .expect("pushing the fixture base");
        let files = Server::serve(vec![
            ("/debian", repo.dir.clone()),
            ("/jemalloc-5.2.1.tar.bz2", standin.tarball.clone()),
        ]);
        let args = [
            "image".to_string(),
            "--flink".into(),
            flink.into(),
            "--base".into(),
            format!("{addr}/{repo_tag}"),
            "--plain-http".into(),
            "--mirror".into(),
            files.url("debian"),
            "--keyring".into(),
            repo.keyring.display().to_string(),
            "--url".into(),
            files.url("jemalloc-5.2.1.tar.bz2"),
            "--sha256".into(),
            standin.sha256.as_str().to_string(),
        ]
        .to_vec();
        ImageInputs {
            registry,
            files,
            args,
        }
    }

    /// The arguments with a run's lock file, cache and output under `dir`.
    pub fn args_in(&self, dir: &Path) -> Vec<String> {
        let mut a = self.args.clone();
        for (flag, name) in [
            ("--lock-file", "flink.lock"),
            ("--cache-dir", "cache"),
            ("--output", "layout"),
        ] {
            a.push(flag.into());
            a.push(dir.join(name).display().to_string());
        }
        a
    }
}

/// Builds the profiled image with paths under `work` and returns the `image` arguments
/// with those paths under `dest` (where `work` will be renamed to).
fn build_profiled_image(base: Base, dest: &Path, work: &Path) -> Vec<String> {
    let inputs = ImageInputs::start_for(base);
    let build = inputs.args_in(work);
    let out = xtask(&build.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "image failed: {}", stderr(&out));
    inputs.args_in(dest)
}

/// The `run:` scripts of a workflow: block scalars (`|`, `>-`, …) and plain one-liners, with
/// folded blocks joined by spaces and `\` continuations joined.
pub fn run_scripts(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut scripts = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = trimmed.strip_prefix("run:") {
            let rest = rest.trim();
            let indent = line.len() - line.trim_start().len();
            if rest.starts_with('|') || rest.starts_with('>') {
                let folded = rest.starts_with('>');
                let mut body = Vec::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    body.push(lines[i].trim());
                    i += 1;
                }
                let text = if folded {
                    body.join(" ")
                } else {
                    body.join("\n").replace("\\\n", " ")
                };
                scripts.push(text);
                continue;
            }
            scripts.push(rest.to_string());
        }
        i += 1;
    }
    scripts
}

/// Every `cargo xtask <sub> <args…>` in a script, as its tokens after `cargo xtask`.
pub fn xtask_commands(script: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in script.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("cargo xtask ") {
            rest = &rest[at + "cargo xtask ".len()..];
            let mut tokens = Vec::new();
            for t in rest.split_whitespace() {
                if [">", ">>", "|", "||", "&&", ";"].contains(&t) || t.starts_with('>') {
                    break;
                }
                let closes = t.contains(')');
                let t = t.trim_end_matches([')', '"', ';']);
                if !t.is_empty() {
                    tokens.push(t.to_string());
                }
                if closes {
                    break;
                }
            }
            out.push(tokens);
        }
    }
    out
}
