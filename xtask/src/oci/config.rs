//! The image config with our layer added (diff_id, environment, labels, history), and the
//! manifest over the base's layers plus ours, as JSON values.

use serde_json::{json, Value};

use super::blob::Blob;
use super::media::OCI_MANIFEST;

/// What the jemalloc layer changes in the image config.
#[derive(Debug, Clone)]
pub(crate) struct ConfigChanges {
    pub path_dir: String,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub history: String,
    pub created: String,
}

/// Returns the base config with the layer's diff_id, env, labels and a history entry added;
/// the base's entrypoint, cmd, user and other env stay as they are.
pub(crate) fn config(base: &Value, diff_id: &str, c: &ConfigChanges) -> Value {
    let mut cfg = base.clone();
    cfg["created"] = json!(c.created);
    let inner = cfg
        .as_object_mut()
        .expect("image config is an object")
        .entry("config")
        .or_insert_with(|| json!({}));
    let mut env: Vec<String> = inner["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    fn set(env: &mut Vec<String>, k: &str, v: String) {
        let kv = format!("{k}={v}");
        match env.iter_mut().find(|e| e.split('=').next() == Some(k)) {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_string)
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    if !path.split(':').any(|p| p == c.path_dir) {
        set(&mut env, "PATH", format!("{path}:{}", c.path_dir));
    }
    for (k, v) in &c.env {
        set(&mut env, k, v.clone());
    }
    inner["Env"] = json!(env);
    let labels = inner
        .as_object_mut()
        .unwrap()
        .entry("Labels")
        .or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    for (k, v) in &c.labels {
        labels[k] = json!(v);
    }
    add_layer(&mut cfg, diff_id, &c.created, &c.history);
    cfg
}

/// Appends a layer's diff_id and a history entry to an image config.
pub(crate) fn add_layer(cfg: &mut Value, diff_id: &str, created: &str, created_by: &str) {
    match cfg["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(diff_id)),
        None => cfg["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]}),
    }
    let history = cfg
        .as_object_mut()
        .unwrap()
        .entry("history")
        .or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        h.push(json!({"created": created, "created_by": created_by}));
    }
}

/// Returns an OCI image manifest over the base's layers plus ours.
pub fn manifest(config: &Blob, layers: &[Value], annotations: &[(String, String)]) -> Value {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers,
    });
    if !annotations.is_empty() {
        m["annotations"] = annotations_json(annotations);
    }
    m
}

/// Returns `KEY=VALUE` pairs as the `annotations` object of a manifest or an index.
pub(crate) fn annotations_json(annotations: &[(String, String)]) -> Value {
    annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
