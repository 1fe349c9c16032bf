//! A loopback HTTP/1.1 file server with fault injection and a registry-style token
//! challenge.
//!
//! The server is hand-written (about a hundred lines on std::net) because the tests need
//! to misbehave on purpose — lie about Content-Length, corrupt a byte, vanish — which the
//! maintained server crates make awkward; it is test scaffolding, not the thing under test.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
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
