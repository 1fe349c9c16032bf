//! The JobManager's REST API is forwarded to this machine with `kubectl port-forward`, and
//! forwarded again whenever it drops.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::e2e::driver::kube::{self, JOBMANAGER};
use crate::e2e::flink_rest::FlinkRest;
use crate::kubectl::{error_text, Kubectl};
use crate::progress::{self};
use crate::teardown;

/// `kubectl port-forward svc/jobmanager <local>:8081`, restarted when it is gone or no
/// longer forwards (kubectl ≥ 1.23 exits when a forwarded connection is reset).
pub(crate) struct PortForward {
    args: Vec<String>,
    log: PathBuf,
    local_port: u16,
    /// Readiness: the REST API answering through the forward (a client without reconnect).
    probe: FlinkRest,
    child: Arc<Mutex<Option<Child>>>,
    _teardown: teardown::Guard,
}

impl PortForward {
    pub(crate) fn new(kubectl: &Kubectl, local_port: u16, log: PathBuf) -> PortForward {
        let mut args = kubectl.global_args();
        args.extend([
            "port-forward".into(),
            format!("svc/{JOBMANAGER}"),
            format!("{local_port}:{}", kube::REST_PORT),
        ]);
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let held = child.clone();
        let guard = teardown::on_interrupt("kubectl port-forward", move || {
            if let Some(mut c) = held.lock().ok().and_then(|mut c| c.take()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        });
        PortForward {
            args,
            log,
            local_port,
            probe: FlinkRest::new(&format!("http://127.0.0.1:{local_port}")),
            child,
            _teardown: guard,
        }
    }

    /// Makes sure the REST API answers through a running forward: (re)starts it when it
    /// exited or when the API does not answer through it.
    pub(crate) fn ensure(&self) -> Result<()> {
        let mut pf = self.child.lock().expect("port-forward lock");
        if let Some(child) = pf.as_mut() {
            if child.try_wait()?.is_none() && self.probe.overview().is_ok() {
                return Ok(());
            }
            progress::note("kubectl port-forward is gone or not forwarding; restarting it");
            let _ = child.kill();
            let _ = child.wait();
            *pf = None;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // A daemon for the cluster's lifetime: std::process runs it, since xshell runs to
        // completion.
        let mut child = Command::new("kubectl")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kubectl port-forward")?;
        let start = Instant::now();
        // The forward is ready once /overview answers, not when the port is open.
        while self.probe.overview().is_err() {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!(
                    "kubectl port-forward to svc/{JOBMANAGER} exited ({status}): {}",
                    error_text(&text)
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the REST API did not answer on 127.0.0.1:{} within 60 s; see {}",
                    self.local_port,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        *pf = Some(child);
        Ok(())
    }

    pub(crate) fn stop(&self) {
        if let Some(mut c) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
