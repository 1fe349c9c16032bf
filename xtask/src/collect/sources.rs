//! Where `collect --follow` finds the TaskManagers and how it sees them start and die:
//! Docker containers (one by name, or a compose project's `taskmanager` service) through
//! `docker inspect` and `docker events`, or Kubernetes pods by label selector through
//! `kubectl get pods -o json`. The parsing of what those print is pure, tested on recorded
//! output.
//!
//! What becomes of an OOM-killed TaskManager:
//! - Docker Compose (`restart: on-failure`) and standalone Kubernetes (a Deployment,
//!   `restartPolicy: Always`): the container is restarted in place, same name, same files;
//!   `docker events` says `oom` then `die` (exit code 137), the pod's `lastState.terminated`
//!   says `OOMKilled`.
//! - The operator and native Kubernetes: the pod has `restartPolicy: Never`; it fails
//!   (`state.terminated.reason: OOMKilled`), Flink deletes it and asks for a new pod with a
//!   new name, which the selector finds on the next poll.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::docker::{docker, docker_text, Container};
use crate::heap_profile::ContainerFiles;
use crate::kubectl::Kubectl;
use crate::kubectl::PodContainer;

/// A TaskManager container as one poll sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskManager {
    /// The container's name (Docker) or the pod's (Kubernetes).
    pub name: String,
    pub running: bool,
    /// When its current (or last) run started, seconds since the epoch.
    pub started_at: Option<f64>,
}

/// A TaskManager's end, as seen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Death {
    pub taskmanager: String,
    pub t: f64,
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
}

/// One poll: the TaskManagers and the deaths seen since the last poll (or still shown).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Seen {
    pub taskmanagers: Vec<TaskManager>,
    pub deaths: Vec<Death>,
}

/// The compose labels of a project's service.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Parses an RFC 3339 time (Docker's and Kubernetes') as seconds since the epoch; Docker's
/// zero time (`0001-01-01T00:00:00Z`, never started or finished) is None.
pub(crate) fn epoch(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = t.unix_timestamp_nanos() as f64 / 1e9;
    (secs > 0.0).then_some(secs)
}

/// Parses `docker inspect` of containers into their state.
fn parse_docker_inspect(v: &Value) -> Vec<TaskManager> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(TaskManager {
                name: c["Name"].as_str()?.trim_start_matches('/').to_string(),
                running: c["State"]["Running"].as_bool().unwrap_or(false),
                started_at: c["State"]["StartedAt"].as_str().and_then(epoch),
            })
        })
        .collect()
}

/// Parses `docker events --format '{{json .}}'` lines into the deaths: each `die` with its
/// exit code, OOM-killed when an `oom` of the same container came after its previous `die`.
fn parse_docker_events(text: &str) -> Vec<Death> {
    let mut oom_since_die: std::collections::BTreeSet<String> = Default::default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let action = e["Action"].as_str().or(e["status"].as_str()).unwrap_or("");
        let name = e["Actor"]["Attributes"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let t = e["timeNano"]
            .as_f64()
            .map(|n| n / 1e9)
            .or(e["time"].as_f64())
            .unwrap_or(0.0);
        match action {
            "oom" => {
                oom_since_die.insert(name);
            }
            "die" => out.push(Death {
                oom_killed: oom_since_die.remove(&name),
                exit_code: e["Actor"]["Attributes"]["exitCode"]
                    .as_str()
                    .and_then(|c| c.parse().ok()),
                taskmanager: name,
                t,
            }),
            _ => {}
        }
    }
    out
}

/// Returns the TaskManager's container in a pod: `wanted`, else `flink-main-container`
/// (operator, native Kubernetes), else `taskmanager` (standalone), else the first.
fn pod_container(pod: &Value, wanted: Option<&str>) -> Option<String> {
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    if let Some(w) = wanted {
        return names.contains(&w).then(|| w.to_string());
    }
    ["flink-main-container", "taskmanager"]
        .into_iter()
        .find(|n| names.contains(n))
        .or(names.first().copied())
        .map(str::to_string)
}

/// Parses `kubectl get pods -o json` into the TaskManagers and every death their container
/// statuses show: `lastState.terminated` (restarted in place) and `state.terminated` (a pod
/// that is not restarted, as native Kubernetes' are).
fn parse_pods(list: &Value, container: Option<&str>) -> Seen {
    let mut seen = Seen::default();
    for pod in list["items"].as_array().into_iter().flatten() {
        let Some(name) = pod["metadata"]["name"].as_str() else {
            continue;
        };
        let Some(c) = pod_container(pod, container) else {
            continue;
        };
        let status = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str() == Some(c.as_str()));
        let Some(status) = status else {
            // Not started yet (Pending): nothing to copy or to count.
            continue;
        };
        let running = &status["state"]["running"];
        seen.taskmanagers.push(TaskManager {
            name: name.to_string(),
            running: running.is_object(),
            started_at: running["startedAt"]
                .as_str()
                .or(status["state"]["terminated"]["startedAt"].as_str())
                .and_then(epoch),
        });
        for term in [
            &status["lastState"]["terminated"],
            &status["state"]["terminated"],
        ] {
            if let Some(t) = term["finishedAt"].as_str().and_then(epoch) {
                seen.deaths.push(Death {
                    taskmanager: name.to_string(),
                    t,
                    oom_killed: term["reason"].as_str() == Some("OOMKilled"),
                    exit_code: term["exitCode"].as_i64(),
                });
            }
        }
    }
    seen
}

/// Where the TaskManagers are.
pub(crate) enum Source {
    /// A container by name, or a compose project's service.
    Docker {
        target: String,
        service: String,
        /// Set when `target` named a project, not a container.
        project: bool,
    },
    /// Pods by label selector.
    Pods {
        kubectl: Kubectl,
        selector: String,
        container: Option<String>,
    },
}

impl Source {
    /// Returns a Docker source: `target` is a container's name, else a compose project's.
    pub(crate) fn docker(target: &str, service: &str) -> Result<Source> {
        crate::docker::require("collect --docker")?;
        let project = docker(&["container", "inspect", target]).is_err();
        let s = Source::Docker {
            target: target.to_string(),
            service: service.to_string(),
            project,
        };
        if project && s.docker_names()?.is_empty() {
            bail!(
                "no container and no compose project named {target} with a {service} service: \
                 give a name `docker ps -a` lists, or the project `docker-compose ps` runs \
                 (its directory's name unless -p set it)"
            );
        }
        Ok(s)
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Docker {
                target,
                service,
                project: true,
            } => format!("compose project {target}, service {service}"),
            Source::Docker { target, .. } => format!("container {target}"),
            Source::Pods {
                kubectl, selector, ..
            } => format!("pods {selector} in namespace {}", kubectl.namespace),
        }
    }

    fn docker_names(&self) -> Result<Vec<String>> {
        let Source::Docker {
            target,
            service,
            project,
        } = self
        else {
            return Ok(Vec::new());
        };
        if !project {
            return Ok(vec![target.clone()]);
        }
        compose_containers(target, service, true)
    }

    /// Returns the TaskManagers now, and the deaths seen in `[since - 60 s, until]` (Docker's
    /// events) or still shown by the pods' statuses (Kubernetes; the caller drops those it saw).
    pub(crate) fn poll(&self, since: f64, until: f64) -> Result<Seen> {
        match self {
            Source::Docker { .. } => {
                let names = self.docker_names()?;
                if names.is_empty() {
                    return Ok(Seen::default());
                }
                let mut args = vec!["container", "inspect"];
                args.extend(names.iter().map(String::as_str));
                // A container removed between the two calls fails the inspect: there are
                // none then.
                let inspect: Value = docker(&args)
                    .ok()
                    .and_then(|o| serde_json::from_slice(&o).ok())
                    .unwrap_or(Value::Null);
                // A minute of overlap with the last poll: an `oom` seen then belongs to the
                // `die` seen now (the caller keeps each death once).
                let (s, u) = (format!("{:.3}", since - 60.0), format!("{until:.3}"));
                let mut ev = vec![
                    "events",
                    "--since",
                    &s,
                    "--until",
                    &u,
                    "--format",
                    "{{json .}}",
                    "--filter",
                    "type=container",
                    "--filter",
                    "event=oom",
                    "--filter",
                    "event=die",
                ];
                let filters: Vec<String> = names.iter().map(|n| format!("container={n}")).collect();
                for f in &filters {
                    ev.extend(["--filter", f.as_str()]);
                }
                let events = docker_text(&ev).context("reading `docker events`")?;
                Ok(Seen {
                    taskmanagers: parse_docker_inspect(&inspect),
                    deaths: parse_docker_events(&events),
                })
            }
            Source::Pods {
                kubectl,
                selector,
                container,
            } => {
                let out = kubectl
                    .run(&["get", "pods", "-l", selector, "-o", "json"])
                    .with_context(|| {
                        format!(
                            "listing the TaskManager pods ({}); is the cluster reachable \
                             (`kubectl cluster-info`)?",
                            self.describe()
                        )
                    })?;
                let v: Value = serde_json::from_str(&out).context("kubectl get pods: not JSON")?;
                Ok(parse_pods(&v, container.as_deref()))
            }
        }
    }

    /// Returns the files of TaskManager `name`.
    pub(crate) fn files<'a>(&'a self, name: &'a str) -> Box<dyn ContainerFiles + 'a> {
        match self {
            Source::Docker { .. } => Box::new(Container(name.to_string())),
            Source::Pods {
                kubectl, container, ..
            } => Box::new(PodContainer {
                kubectl,
                pod: name,
                container: container.as_deref(),
            }),
        }
    }

    /// Runs `sh -c script` in TaskManager `name` and returns its stdout.
    pub(crate) fn sh(&self, name: &str, script: &str) -> Result<String> {
        match self {
            Source::Docker { .. } => docker_text(&["exec", name, "sh", "-c", script]),
            Source::Pods {
                kubectl, container, ..
            } => kubectl.exec_in(name, container.as_deref(), &["sh", "-c", script]),
        }
    }

    /// Returns the JobManager's REST address when it can be found: a compose project's
    /// `jobmanager` service's published 8081.
    pub(crate) fn find_rest(&self) -> Option<String> {
        let Source::Docker {
            target,
            project: true,
            ..
        } = self
        else {
            return None;
        };
        let jobmanagers = compose_containers(target, "jobmanager", false).ok()?;
        let port = docker_text(&["port", jobmanagers.first()?, "8081/tcp"]).ok()?;
        rest_from_port(&port)
    }
}

/// Returns the containers of a compose project's service, by name, in order: every one with
/// `all`, else the running ones.
fn compose_containers(project: &str, service: &str, all: bool) -> Result<Vec<String>> {
    let p = format!("label={COMPOSE_PROJECT}={project}");
    let s = format!("label={COMPOSE_SERVICE}={service}");
    let mut args = vec![
        "ps",
        "--filter",
        &p,
        "--filter",
        &s,
        "--format",
        "{{.Names}}",
    ];
    if all {
        args.push("--all");
    }
    let mut names: Vec<String> = docker_text(&args)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// Turns `docker port` output (`0.0.0.0:18081`, `[::]:18081`) into a REST URL on loopback.
fn rest_from_port(text: &str) -> Option<String> {
    let line = text.lines().next()?.trim();
    let port = line.rsplit_once(':')?.1;
    port.parse::<u16>().ok()?;
    Some(format!("http://127.0.0.1:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_state_and_events() {
        // Recorded here (Docker 20.10, Debian's docker.io), a container OOM-killed twice
        // with restart: on-failure.
        let inspect: Value = serde_json::from_str(
            r#"[{"Name":"/ct_taskmanager_1","RestartCount":2,"State":{"Status":"running","Running":true,
            "OOMKilled":true,"ExitCode":0,"StartedAt":"2026-12-05T22:53:29.588174295Z",
            "FinishedAt":"2026-12-05T22:53:29.306801572Z"}},
            {"Name":"/ct_taskmanager_2","State":{"Running":false,"StartedAt":"0001-01-01T00:00:00Z"}}]"#,
        )
        .unwrap();
        let tms = parse_docker_inspect(&inspect);
        assert_eq!(tms[0].name, "ct_taskmanager_1");
        assert!(tms[0].running);
        assert!((tms[0].started_at.unwrap() - 1796511209.588).abs() < 0.01);
        assert_eq!(tms[1].started_at, None);
        let ev = r#"{"status":"start","Action":"start","Actor":{"Attributes":{"name":"tm"}},"time":1796511202,"timeNano":1796511202100000000}
{"status":"oom","Action":"oom","Actor":{"Attributes":{"name":"tm"}},"time":1796511206,"timeNano":1796511206000000000}
{"status":"oom","Action":"oom","Actor":{"Attributes":{"name":"tm"}},"time":1796511206,"timeNano":1796511206100000000}
{"status":"die","Action":"die","Actor":{"Attributes":{"exitCode":"137","name":"tm"}},"time":1796511206,"timeNano":1796511206500000000}
{"status":"die","Action":"die","Actor":{"Attributes":{"exitCode":"143","name":"tm"}},"time":1796511300,"timeNano":1796511300000000000}
"#;
        let deaths = parse_docker_events(ev);
        assert_eq!(deaths.len(), 2);
        assert!(deaths[0].oom_killed && deaths[0].exit_code == Some(137));
        assert!((deaths[0].t - 1796511206.5).abs() < 1e-3);
        assert!(!deaths[1].oom_killed, "no oom since the last die");
        assert_eq!(deaths[1].exit_code, Some(143));
    }

    #[test]
    fn pods_restarted_in_place_and_failed_pods() {
        // Shapes of `kubectl get pods -o json`: a standalone TaskManager restarted in place
        // after an OOM kill, and a native one (restartPolicy Never) that failed.
        let list: Value = serde_json::from_str(
            r#"{"items":[
            {"metadata":{"name":"flink-taskmanager-7d9f-abcde"},
             "spec":{"containers":[{"name":"taskmanager"}]},
             "status":{"containerStatuses":[{"name":"taskmanager","restartCount":1,
               "state":{"running":{"startedAt":"2026-12-05T10:00:05Z"}},
               "lastState":{"terminated":{"exitCode":137,"reason":"OOMKilled",
                 "startedAt":"2026-12-05T09:00:00Z","finishedAt":"2026-12-05T10:00:00Z"}}}]}},
            {"metadata":{"name":"job-taskmanager-1-2"},
             "spec":{"containers":[{"name":"sidecar"},{"name":"flink-main-container"}]},
             "status":{"containerStatuses":[{"name":"sidecar","state":{"running":{}}},
               {"name":"flink-main-container","restartCount":0,"lastState":{},
               "state":{"terminated":{"exitCode":137,"reason":"OOMKilled",
                 "startedAt":"2026-12-05T09:30:00Z","finishedAt":"2026-12-05T11:00:00Z"}}}]}},
            {"metadata":{"name":"job-taskmanager-1-3"},
             "spec":{"containers":[{"name":"flink-main-container"}]},
             "status":{"phase":"Pending"}}
            ]}"#,
        )
        .unwrap();
        let seen = parse_pods(&list, None);
        assert_eq!(
            seen.taskmanagers.len(),
            2,
            "the pending pod has nothing yet"
        );
        assert!(seen.taskmanagers[0].running);
        assert!(!seen.taskmanagers[1].running);
        assert_eq!(seen.deaths.len(), 2);
        assert!(seen
            .deaths
            .iter()
            .all(|d| d.oom_killed && d.exit_code == Some(137)));
        assert_eq!(seen.deaths[1].taskmanager, "job-taskmanager-1-2");
        assert_eq!(parse_pods(&list, Some("nope")).taskmanagers.len(), 0);
    }

    #[test]
    fn rest_address_from_docker_port() {
        assert_eq!(
            rest_from_port("0.0.0.0:18081\n[::]:18081\n").as_deref(),
            Some("http://127.0.0.1:18081")
        );
        assert_eq!(rest_from_port(""), None);
    }
}
