//! Reading the pods `kubectl get pods -o json` returns: the current TaskManager pod, its
//! containers' runs and OOM kills, where a container runs (to kill it on its node), and
//! what keeps a pod from starting.

use serde_json::Value;

/// A pod as `kubectl get pods -o json` shows it; only what the driver reads is looked at.
#[derive(Debug, Clone)]
pub(crate) struct Pod(pub Value);

impl Pod {
    pub(crate) fn name(&self) -> &str {
        self.0["metadata"]["name"].as_str().unwrap_or("?")
    }

    pub(crate) fn deleting(&self) -> bool {
        !self.0["metadata"]["deletionTimestamp"].is_null()
    }

    pub(crate) fn phase(&self) -> &str {
        self.0["status"]["phase"].as_str().unwrap_or("")
    }

    pub(crate) fn statuses(&self) -> &[Value] {
        self.0["status"]["containerStatuses"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    /// Returns the status of its container `name`.
    fn status_of(&self, name: &str) -> Option<&Value> {
        self.statuses().iter().find(|c| c["name"] == name)
    }
}

/// Returns the text of a JSON string field, "" when absent.
pub(crate) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Returns the ids of the container's ended runs that the OOM killer ended, as far as the
/// pod's status shows them (its current state and the last one: Kubernetes keeps no older
/// history).
pub(crate) fn oom_killed_runs(pod: &Pod, container: &str) -> Vec<String> {
    let uid = text(&pod.0["metadata"]["uid"]);
    let Some(cs) = pod.status_of(container) else {
        return Vec::new();
    };
    [&cs["state"], &cs["lastState"]]
        .into_iter()
        .map(|s| &s["terminated"])
        .filter(|t| t["reason"] == "OOMKilled")
        .map(|t| match t["containerID"].as_str() {
            Some(id) => id.to_string(),
            None => format!("{uid}/{}", text(&t["finishedAt"])),
        })
        .collect()
}

/// Returns the pod that is the TaskManager now: not being deleted, running if one is.
pub(crate) fn current_pod(pods: &[Pod]) -> Option<&Pod> {
    let live: Vec<&Pod> = pods.iter().filter(|p| !p.deleting()).collect();
    live.iter()
        .find(|p| p.phase() == "Running")
        .or(live.first())
        .copied()
}

/// Returns why pods are not running, one line each (`taskmanager-…: ErrImageNeverPull: …`).
pub(crate) fn pod_problems(pods: &[Pod]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pods {
        let name = p.name();
        for c in p.statuses() {
            let cname = text(&c["name"]);
            let w = &c["state"]["waiting"];
            if w.is_object() {
                out.push(format!(
                    "{name}/{cname}: {} {}",
                    w["reason"].as_str().unwrap_or("waiting"),
                    text(&w["message"])
                ));
            }
            let t = &c["lastState"]["terminated"];
            if t.is_object() {
                out.push(format!(
                    "{name}/{cname}: last run ended {} (exit {}), {} restart(s)",
                    t["reason"].as_str().unwrap_or("?"),
                    t["exitCode"].as_i64().unwrap_or(0),
                    c["restartCount"].as_i64().unwrap_or(0)
                ));
            }
        }
        if p.0["status"]["containerStatuses"].is_null() {
            for cond in p.0["status"]["conditions"].as_array().into_iter().flatten() {
                if cond["status"] != "True" {
                    out.push(format!(
                        "{name}: {} {} {}",
                        text(&cond["type"]),
                        text(&cond["reason"]),
                        text(&cond["message"])
                    ));
                }
            }
        }
    }
    out
}

/// Returns where a container of a pod runs: (node, container id), from the pod's spec and
/// status (`containerd://<id>` → `<id>`). A kind node is a Docker container of the node's
/// name.
fn container_on_node(pod: &Pod, container: &str) -> Option<(String, String)> {
    let node = pod.0["spec"]["nodeName"].as_str()?;
    let id = pod.status_of(container)?["containerID"].as_str()?;
    let id = id.split_once("://").map_or(id, |(_, i)| i);
    Some((node.to_string(), id.to_string()))
}

/// Returns which run of a container a pod status shows: `<pod>/<container id>`, new for
/// every start (a restart in place keeps the pod and changes the id; a new pod changes both).
pub(crate) fn container_run(pod: &Pod, container: &str) -> Option<String> {
    let id = pod.status_of(container)?["containerID"].as_str()?;
    Some(format!("{}/{id}", pod.name()))
}

/// Returns whether the container's run changed since `seen` without this driver asking: a
/// death between two polls (the kubelet restarts at once the first time, faster than a poll).
pub(crate) fn restarted_unseen(seen: Option<&str>, now: Option<&str>) -> bool {
    matches!((seen, now), (Some(a), Some(b)) if a != b)
}

/// Returns the commands that SIGKILL the TaskManager's JVM and have its Deployment start a new pod:
/// `crictl stop --timeout 0` in the node's container (deleting the pod alone lets the kubelet send
/// SIGTERM, and Flink shuts down cleanly), then one that deletes the pod at once, so no restart in
/// place meets the kubelet's crash back-off (0, 10, 20, 40 … 300 s, reset only after 10 minutes of
/// running): a new pod starts without one.
pub(crate) fn kill_commands(pod: &Pod, container: &str) -> Option<(Vec<String>, Vec<String>)> {
    let (node, id) = container_on_node(pod, container)?;
    let crictl = ["exec", &node, "crictl", "stop", "--timeout", "0", &id];
    Some((
        crictl.iter().map(|s| s.to_string()).collect(),
        delete_pod(pod.name()),
    ))
}

/// Returns the `kubectl` arguments that delete pod `name` at once, without waiting for it to
/// go.
pub(crate) fn delete_pod(name: &str) -> Vec<String> {
    [
        "delete",
        "pod",
        name,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Returns whether the pod's `container` is running now, as its status says.
pub(crate) fn container_running(pod: &Pod, container: &str) -> bool {
    pod.status_of(container)
        .is_some_and(|c| c["state"]["running"].is_object())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        Pod(json)
    }

    #[test]
    fn oom_kills_from_pod_status() {
        let p = pod(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "taskmanager-abc", "uid": "u1"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "taskmanager", "image": "flink:1.10.3", "imageID": "", "ready": true,
                "restartCount": 2,
                "state": {"running": {"startedAt": "2024-01-01T00:00:10Z"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "containerID": "containerd://c2"}}
            }]}
        }));
        assert_eq!(oom_killed_runs(&p, "taskmanager"), ["containerd://c2"]);
        assert!(oom_killed_runs(&p, "jobmanager").is_empty());
        assert_eq!(
            pod_problems(std::slice::from_ref(&p)),
            ["taskmanager-abc/taskmanager: last run ended OOMKilled (exit 137), 2 restart(s)"]
        );
        let gone = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-old", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running"}
        }));
        let pending = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-new"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "taskmanager", "image": "flink:1.10.3", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}
            }]}
        }));
        let pods = [gone, pending, p];
        assert_eq!(current_pod(&pods).map(Pod::name), Some("taskmanager-abc"));
        assert_eq!(
            current_pod(&pods[..2]).map(Pod::name),
            Some("taskmanager-new")
        );
        assert!(pod_problems(&pods[1..2])[0].contains("ErrImageNeverPull not present"));
    }

    #[test]
    fn where_to_kill_and_whether_it_runs() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-abc"},
            "spec": {"nodeName": "flink-jemalloc-control-plane", "containers": []},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "taskmanager", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": "containerd://0123abcd",
                "state": {"running": {"startedAt": "2024-01-01T00:00:10Z"}}
            }]}
        }));
        assert_eq!(
            container_on_node(&p, "taskmanager"),
            Some(("flink-jemalloc-control-plane".into(), "0123abcd".into()))
        );
        assert_eq!(container_on_node(&p, "jobmanager"), None);
        assert!(container_running(&p, "taskmanager"));
        let restarting = pod(serde_json::json!({
            "metadata": {"name": "taskmanager-abc"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "taskmanager", "image": "i", "imageID": "", "ready": false,
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "containerID": "containerd://0123abcd"}}
            }]}
        }));
        assert!(!container_running(&restarting, "taskmanager"));
        assert_eq!(
            container_on_node(&restarting, "taskmanager"),
            None,
            "no node"
        );
        // The kill runs crictl in the node's container, then deletes the pod (no back-off).
        let (crictl, delete) = kill_commands(&p, "taskmanager").unwrap();
        assert_eq!(
            crictl,
            [
                "exec",
                "flink-jemalloc-control-plane",
                "crictl",
                "stop",
                "--timeout",
                "0",
                "0123abcd"
            ]
        );
        assert_eq!(
            delete,
            [
                "delete",
                "pod",
                "taskmanager-abc",
                "--grace-period=0",
                "--force",
                "--wait=false"
            ]
        );
        assert_eq!(kill_commands(&restarting, "taskmanager"), None);
    }

    /// Two polls of one pod a second apart, as `kubectl get pods -o json` showed them: the
    /// container was OOM-killed and restarted in place between them (the first restart is
    /// immediate), so both polls see it running; only its id and restartCount changed.
    #[test]
    fn a_restart_between_two_polls_is_seen() {
        let poll = |restarts: u32, id: &str, last: serde_json::Value| {
            pod(serde_json::json!({
                "metadata": {"name": "taskmanager-7d9f-x2x", "uid": "u1"},
                "spec": {"nodeName": "flink-jemalloc-control-plane"},
                "status": {"phase": "Running", "containerStatuses": [{
                    "name": "taskmanager", "ready": true, "restartCount": restarts,
                    "containerID": id,
                    "state": {"running": {"startedAt": "2026-12-05T20:00:00Z"}},
                    "lastState": last
                }]}
            }))
        };
        let before = poll(0, "containerd://aaa", serde_json::json!({}));
        let after = poll(
            1,
            "containerd://bbb",
            serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                "containerID": "containerd://aaa", "finishedAt": "2026-12-05T20:01:00Z"}}),
        );
        assert!(
            container_running(&before, "taskmanager") && container_running(&after, "taskmanager")
        );
        let (a, b) = (
            container_run(&before, "taskmanager"),
            container_run(&after, "taskmanager"),
        );
        assert_eq!(a.as_deref(), Some("taskmanager-7d9f-x2x/containerd://aaa"));
        assert!(restarted_unseen(a.as_deref(), b.as_deref()));
        assert!(!restarted_unseen(a.as_deref(), a.as_deref()));
        assert!(!restarted_unseen(None, b.as_deref()), "the first poll");
        assert!(!restarted_unseen(a.as_deref(), None), "no status yet");
        // The OOM kill is counted from lastState, once, by its container id.
        assert_eq!(oom_killed_runs(&after, "taskmanager"), ["containerd://aaa"]);
    }
}
