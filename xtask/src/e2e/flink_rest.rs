//! The Flink REST API calls the e2e scenario needs (measured against 1.10.3, see
//! e2e/NOTES.md): cluster overview, jar upload and run, job state, restart count,
//! exceptions, cancel.

use anyhow::{bail, Context, Result};
use reqwest::blocking::{multipart, Client, RequestBuilder, Response};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::progress;

/// Re-establishes the way to the REST API after a connection error (the kind driver's
/// `kubectl port-forward`, which exits when a forwarded connection is reset).
type Reconnect = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Attempts of a request whose connection failed, when there is a [`Reconnect`].
const CONNECT_ATTEMPTS: u32 = 4;

pub struct FlinkRest {
    base: String,
    http: Client,
    reconnect: Option<Reconnect>,
}

impl FlinkRest {
    /// Returns a client for `base`, like `http://127.0.0.1:8081`.
    pub fn new(base: &str) -> FlinkRest {
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("building the HTTP client");
        FlinkRest {
            base: base.trim_end_matches('/').to_string(),
            http,
            reconnect: None,
        }
    }

    /// Returns a client that calls `reconnect` and tries again when a connection fails.
    pub(crate) fn with_reconnect(mut self, reconnect: Reconnect) -> FlinkRest {
        self.reconnect = Some(reconnect);
        self
    }

    /// Sends the request `make` builds. With a [`Reconnect`], a connection that could not be
    /// made (any request) or broke (an `idempotent` one) is re-established and the request
    /// sent again, up to [`CONNECT_ATTEMPTS`] times.
    fn send(
        &self,
        what: &str,
        idempotent: bool,
        make: impl Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut attempt = 1;
        loop {
            match make()?.send() {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let retry = e.is_connect() || (idempotent && (e.is_request() || e.is_body()));
                    match &self.reconnect {
                        Some(reconnect) if retry && attempt < CONNECT_ATTEMPTS => {
                            progress::note(format!(
                                "{what}: {e}; re-establishing the connection (attempt {} of {CONNECT_ATTEMPTS})",
                                attempt + 1
                            ));
                            reconnect().with_context(|| format!("{what}: reconnecting"))?;
                            attempt += 1;
                        }
                        _ => return Err(e).context(what.to_string()),
                    }
                }
            }
        }
    }

    fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.send(&format!("GET {url}"), true, || Ok(self.http.get(&url)))?;
        let status = resp.status();
        let body = resp.bytes()?;
        if !status.is_success() {
            bail!(
                "GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))
    }

    /// Returns the answer of `GET /overview`: `taskmanagers`, `slots-total`, `jobs-running`,
    /// `flink-version`, ...
    pub fn overview(&self) -> Result<Value> {
        self.get("/overview")
    }

    /// Waits until the REST API answers and at least `n` TaskManagers are registered.
    pub fn wait_for_taskmanagers(&self, n: u64, timeout: Duration) -> Result<Value> {
        let start = Instant::now();
        loop {
            match self.overview() {
                Ok(o) if o["taskmanagers"].as_u64().unwrap_or(0) >= n => return Ok(o),
                r => {
                    if start.elapsed() > timeout {
                        bail!(
                            "{}: {n} TaskManager(s) not registered after {} s (last answer: {})",
                            self.base,
                            timeout.as_secs(),
                            match r {
                                Ok(o) => o.to_string(),
                                Err(e) => format!("{e:#}"),
                            }
                        );
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Returns the registered TaskManagers' ids from `GET /taskmanagers` (a new TaskManager
    /// process registers with a new id).
    pub(crate) fn taskmanager_ids(&self) -> Result<Vec<String>> {
        let t = self.get("/taskmanagers")?;
        Ok(t["taskmanagers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Returns the metrics that exist, parsed as numbers, from
    /// `GET /taskmanagers/<id>/metrics?get=a,b`.
    pub(crate) fn taskmanager_metrics(
        &self,
        tm: &str,
        names: &[&str],
    ) -> Result<std::collections::BTreeMap<String, f64>> {
        let m = self.get(&format!(
            "/taskmanagers/{tm}/metrics?get={}",
            names.join(",")
        ))?;
        Ok(metric_values(&m))
    }

    /// Uploads the jar with `POST /jars/upload`; returns the jar id (the uploaded file's
    /// name).
    pub fn upload(&self, jar: &Path) -> Result<String> {
        let url = format!("{}/jars/upload", self.base);
        let resp = self.send(&format!("POST {url}"), true, || {
            let part = multipart::Part::file(jar)
                .with_context(|| format!("reading {}", jar.display()))?
                .mime_str("application/x-java-archive")?;
            let form = multipart::Form::new().part("jarfile", part);
            Ok(self.http.post(&url).multipart(form))
        })?;
        let status = resp.status();
        let body: Value = serde_json::from_slice(&resp.bytes()?)
            .with_context(|| format!("POST {url}: not JSON"))?;
        if !status.is_success() || body["status"] != "success" {
            bail!("POST {url} answered {status}: {body}");
        }
        let filename = body["filename"]
            .as_str()
            .context("upload answer without filename")?;
        Ok(filename.rsplit('/').next().unwrap_or(filename).to_string())
    }

    /// Runs the jar with `POST /jars/<id>/run`; returns the job id.
    pub fn run(
        &self,
        jar_id: &str,
        entry_class: &str,
        args: &[String],
        parallelism: u32,
    ) -> Result<String> {
        let url = format!("{}/jars/{jar_id}/run", self.base);
        let req =
            json!({"entryClass": entry_class, "programArgsList": args, "parallelism": parallelism});
        let resp = self.send(&format!("POST {url}"), false, || {
            Ok(self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(req.to_string()))
        })?;
        let status = resp.status();
        let body: Value = serde_json::from_slice(&resp.bytes()?).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url} answered {status}: {body}");
        }
        Ok(body["jobid"]
            .as_str()
            .context("run answer without jobid")?
            .to_string())
    }

    /// Returns the job's `state` (`RUNNING`, `RESTARTING`, `CANCELED`, ...) from
    /// `GET /jobs/<id>`.
    fn job_state(&self, job: &str) -> Result<String> {
        let j = self.get(&format!("/jobs/{job}"))?;
        Ok(j["state"].as_str().unwrap_or("").to_string())
    }

    /// Returns the job's `numRestarts` metric (0 until the metric exists).
    pub fn restarts(&self, job: &str) -> Result<u64> {
        let m = self.get(&format!("/jobs/{job}/metrics?get=numRestarts"))?;
        Ok(metric_values(&m)
            .get("numRestarts")
            .map(|v| *v as u64)
            .unwrap_or(0))
    }

    /// Waits until the job's `numRestarts` exceeds `before` (a lost TaskManager is noticed
    /// by heartbeat, so the job may still say RUNNING for a while after a kill).
    pub fn wait_for_restart(&self, job: &str, before: u64, timeout: Duration) -> Result<u64> {
        let start = Instant::now();
        loop {
            let r = self.restarts(job)?;
            if r > before {
                return Ok(r);
            }
            if start.elapsed() > timeout {
                bail!(
                    "job {job} did not restart within {} s (numRestarts {r})",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Returns the ids of every job the JobManager knows (running or ended), from `GET /jobs`.
    pub(crate) fn job_ids(&self) -> Result<Vec<String>> {
        let v = self.get("/jobs")?;
        Ok(v["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["id"].as_str().map(str::to_string))
            .collect())
    }

    /// Returns the id of the job's vertex whose name contains `name` (`GET /jobs/<id>`).
    pub(crate) fn vertex_id(&self, job: &str, name: &str) -> Result<String> {
        let j = self.get(&format!("/jobs/{job}"))?;
        Ok(j["vertices"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str().is_some_and(|n| n.contains(name)))
            .and_then(|v| v["id"].as_str())
            .with_context(|| format!("job {job} has no vertex named like {name}"))?
            .to_string())
    }

    /// Returns the sum of `metric` over the subtasks of a job's vertex (its aggregated
    /// subtask metrics); None while the metric is not reported yet.
    pub(crate) fn vertex_metric_sum(
        &self,
        job: &str,
        vertex: &str,
        metric: &str,
    ) -> Result<Option<f64>> {
        let m = self.get(&format!(
            "/jobs/{job}/vertices/{vertex}/subtasks/metrics?get={metric}&agg=sum"
        ))?;
        Ok(aggregated_sum(&m, metric))
    }

    /// Returns the `root-exception` text of `GET /jobs/<id>/exceptions`.
    pub fn root_exception(&self, job: &str) -> Result<String> {
        let e = self.get(&format!("/jobs/{job}/exceptions"))?;
        Ok(e["root-exception"].as_str().unwrap_or("").to_string())
    }

    /// Returns when the job failed, in seconds since the epoch, oldest first: from the
    /// JobManager's exception history (`exceptionHistory.entries`, Flink 1.13 on; as long as
    /// `web.exception-history-size` allows), else from the older `all-exceptions`.
    pub(crate) fn failure_times(&self, job: &str) -> Result<Vec<f64>> {
        Ok(failure_times(
            &self.get(&format!("/jobs/{job}/exceptions"))?,
        ))
    }

    /// Cancels the job with `PATCH /jobs/<id>?mode=cancel`.
    pub fn cancel(&self, job: &str) -> Result<()> {
        let url = format!("{}/jobs/{job}?mode=cancel", self.base);
        let resp = self.send(&format!("PATCH {url}"), true, || Ok(self.http.patch(&url)))?;
        if !resp.status().is_success() {
            bail!("PATCH {url} answered {}", resp.status());
        }
        Ok(())
    }

    /// Polls until `cond(state)` holds.
    pub fn wait_for_state(&self, job: &str, want: &[&str], timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            let s = self.job_state(job)?;
            if want.contains(&s.as_str()) {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                bail!(
                    "job {job} is {s}, not {} after {} s",
                    want.join("/"),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Returns the failure timestamps of a `/jobs/<id>/exceptions` answer, in seconds, oldest
/// first.
pub(crate) fn failure_times(answer: &Value) -> Vec<f64> {
    let history = answer["exceptionHistory"]["entries"].as_array();
    let entries = history.or(answer["all-exceptions"].as_array());
    let mut out: Vec<f64> = entries
        .into_iter()
        .flatten()
        .filter_map(|e| e["timestamp"].as_f64())
        .map(|ms| ms / 1000.0)
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Parses a metrics answer `[{"id": "numRestarts", "value": "12"}, ...]` (values are strings).
fn metric_values(answer: &Value) -> std::collections::BTreeMap<String, f64> {
    answer
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| {
            let v = x["value"].as_str()?.parse().ok()?;
            Some((x["id"].as_str()?.to_string(), v))
        })
        .collect()
}

/// Returns the sum of an aggregated metrics answer `[{"id": "numRecordsIn", "sum": 1234.0}]`.
fn aggregated_sum(answer: &Value, metric: &str) -> Option<f64> {
    answer
        .as_array()?
        .iter()
        .find(|x| x["id"].as_str() == Some(metric))?["sum"]
        .as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn failure_times_from_either_answer() {
        let history = serde_json::json!({"exceptionHistory": {"entries": [
            {"exceptionName": "x", "timestamp": 1764250002500u64},
            {"exceptionName": "x", "timestamp": 1764250001000u64}
        ], "truncated": false}});
        assert_eq!(failure_times(&history), vec![1764250001.0, 1764250002.5]);
        let old =
            serde_json::json!({"root-exception": "x", "all-exceptions": [{"timestamp": 1000}]});
        assert_eq!(failure_times(&old), vec![1.0]);
        assert!(failure_times(&serde_json::json!({})).is_empty());
    }

    /// Like a port-forward that died: nothing listens until the reconnect hook starts a
    /// server, and the request then goes through.
    #[test]
    fn a_lost_connection_is_reestablished_and_the_request_sent_again() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reconnects = Arc::new(AtomicU32::new(0));
        let r = reconnects.clone();
        let hook: Reconnect = Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
            let l = std::net::TcpListener::bind(("127.0.0.1", port))?;
            std::thread::spawn(move || {
                let (conn, _) = l.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let body = r#"{"taskmanagers":1}"#;
                write!(
                    &conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            });
            Ok(())
        });
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            FlinkRest::new(&base).overview().is_err(),
            "refused without the hook"
        );
        let rest = FlinkRest::new(&base).with_reconnect(hook);
        assert_eq!(rest.overview().unwrap()["taskmanagers"], 1);
        assert_eq!(reconnects.load(Ordering::SeqCst), 1);

        let failing: Reconnect = Arc::new(|| Ok(()));
        let e = FlinkRest::new(&base)
            .with_reconnect(failing)
            .overview()
            .unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("GET {base}/overview")),
            "{e:#}"
        );
    }

    #[test]
    fn an_aggregated_sum() {
        let a = json!([{"id": "numRecordsIn", "min": 1.0, "max": 2.0, "sum": 3.0}]);
        assert_eq!(aggregated_sum(&a, "numRecordsIn"), Some(3.0));
        assert_eq!(aggregated_sum(&json!([]), "numRecordsIn"), None);
    }

    #[test]
    fn metric_values_are_parsed_from_strings() {
        let m = metric_values(&json!([
            {"id": "numRestarts", "value": "12"},
            {"id": "Status.JVM.Memory.Heap.Committed", "value": "536870912"},
            {"id": "broken", "value": "n/a"}
        ]));
        assert_eq!(m["numRestarts"], 12.0);
        assert_eq!(m["Status.JVM.Memory.Heap.Committed"], 536870912.0);
        assert!(!m.contains_key("broken"));
    }
}
