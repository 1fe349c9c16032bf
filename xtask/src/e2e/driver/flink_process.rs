//! The Flink processes as every driver runs them: the JobManager's name and the ports of a
//! cluster, and the `FLINK_PROPERTIES` text that gives a container its configuration when
//! the JobManager is found by name (kind's Service, a Docker network's alias).

use crate::e2e::cluster::ClusterSpec;

/// Name of the JobManager's Service: the address TaskManagers and the port-forward use.
pub(crate) const JOBMANAGER: &str = "jobmanager";
pub(crate) const RPC_PORT: i32 = 6123;
pub(crate) const BLOB_PORT: i32 = 6124;
/// The REST API and web UI inside the cluster (the port-forward's remote side).
pub(crate) const REST_PORT: i32 = 8081;
/// The TaskManager's RPC port.
pub(crate) const TASKMANAGER_RPC_PORT: i32 = 6122;

/// `flink-conf.yaml` keys the manifests own: the cluster's addresses and ports inside
/// Kubernetes. A [`ClusterSpec`] entry with one of these keys is dropped (`rest.port` there
/// is the port on this machine, the local side of the port-forward).
const OWNED_CONF_KEYS: &[&str] = &[
    "jobmanager.rpc.address",
    "jobmanager.rpc.port",
    "blob.server.port",
    "rest.address",
    "rest.bind-address",
    "rest.port",
    "taskmanager.rpc.port",
    "taskmanager.numberOfTaskSlots",
];

/// Returns the `FLINK_PROPERTIES` text: the spec's entries minus [`OWNED_CONF_KEYS`], then
/// the cluster's own addresses and ports; one `key: value` per line.
pub(crate) fn flink_properties(spec: &ClusterSpec) -> String {
    let mut out = String::new();
    for (k, v) in &spec.conf {
        if !OWNED_CONF_KEYS.contains(&k.as_str()) {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    for (k, v) in [
        ("jobmanager.rpc.address", JOBMANAGER.to_string()),
        ("jobmanager.rpc.port", RPC_PORT.to_string()),
        ("blob.server.port", BLOB_PORT.to_string()),
        ("rest.port", REST_PORT.to_string()),
        ("taskmanager.rpc.port", TASKMANAGER_RPC_PORT.to_string()),
        ("taskmanager.numberOfTaskSlots", "1".to_string()),
    ] {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}
