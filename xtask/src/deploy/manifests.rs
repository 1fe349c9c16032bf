//! The files `deploy` writes, made from its request (pure). Each way of running Flink gets
//! the profiled image, the preload (`LD_PRELOAD`, `MALLOC_CONF`, `DISABLE_JEMALLOC=true` so
//! that the official entrypoint does not add the distribution's jemalloc) and somewhere for
//! the heap dumps that `collect --follow` copies out:
//!
//! - **Operator and native Kubernetes**: Flink's ResourceManager creates the TaskManager
//!   pods with `restartPolicy: Never` and replaces a dead one with a new pod (a new name), so
//!   an `emptyDir` per pod is one directory per JVM; the dumps go straight into it. The main
//!   container must be named `flink-main-container` (the operator's and Flink's pod-template
//!   rule); Flink sets its command itself, so it is not touched.
//! - **Standalone Kubernetes and Docker Compose**: the container is restarted in place (the
//!   Deployment's `restartPolicy: Always`; `restart: on-failure` in the override) and its
//!   new JVM is PID 1 again, so the container's command becomes the start script
//!   ([`heap_profile::start_script`]): a directory per container start, else the new JVM's
//!   `jeprof.out.1.<seq>` dumps would overwrite the dead one's.
//! - Compose keeps the dumps in the container's own `/tmp/jeprof` rather than a volume: a
//!   new named volume is owned by root, and an image that runs as `flink` (`USER flink`)
//!   could not make its start directory there. The container's files outlive its restarts
//!   and `docker cp` reads them from a stopped container too.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::heap_profile::start_script;

/// The preloaded library in the profiled image (`image`'s `/opt/jemalloc` layer).
const PRELOAD: &str = "/opt/jemalloc/lib/libjemalloc.so.2";
/// The dump directory in Kubernetes pods (an `emptyDir`).
pub(crate) const POD_DUMPS: &str = "/jeprof";
/// The dump directory of a compose TaskManager (its start directories inside).
pub(crate) const COMPOSE_DUMPS: &str = "/tmp/jeprof";
/// The volume's name in the pod templates and patches.
const VOLUME: &str = "flink-jemalloc-dumps";
/// The TaskManager's main container in the operator's and native Kubernetes' pods.
const MAIN_CONTAINER: &str = "flink-main-container";
/// The TaskManager Deployment of Flink's standalone Kubernetes docs.
const STANDALONE_DEPLOYMENT: &str = "flink-taskmanager";
/// Its container, and the compose service, in Flink's docs.
pub(crate) const TASKMANAGER: &str = "taskmanager";
/// The official images' entrypoint (standalone's container command wraps it).
pub(crate) const ENTRYPOINT: &str = "/docker-entrypoint.sh";

/// Where the TaskManagers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Operator,
    Native,
    Standalone,
    Compose,
}

/// How densely jemalloc samples and how often it dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampling {
    /// jemalloc's default sampling (`lg_prof_sample:19`), a dump per 4 GiB allocated.
    Production,
    /// `lg_prof_sample:17`, a dump per 1 GiB allocated.
    Dense,
}

impl Sampling {
    /// Returns `(lg_prof_sample, lg_prof_interval)`.
    pub(crate) fn rates(self) -> (u32, u32) {
        match self {
            Sampling::Production => (19, 32),
            Sampling::Dense => (17, 30),
        }
    }
}

/// What `deploy` makes its files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    pub target: Target,
    pub image: String,
    pub sampling: Sampling,
    /// Overrides the sampling's dump interval.
    pub lg_prof_interval: Option<u32>,
    /// The FlinkDeployment, the TaskManager Deployment or the compose service.
    pub name: Option<String>,
}

/// One file to write: its name, text, and how to apply it (a line for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct File {
    pub name: String,
    pub text: String,
    pub how_to_apply: String,
}

/// Returns `MALLOC_CONF` for these parameters; `prefix` is jemalloc's `prof_prefix` (None
/// when the start script appends it). `junk:false`: the image's jemalloc is the recipe's
/// `--enable-debug --enable-fill` build, which fills every allocation and every freed
/// region with junk bytes unless told not to; profiling needs none of it, and it costs
/// (`bench --profiling-cost`, README "What profiling costs").
pub(crate) fn malloc_conf(p: &Params, prefix: Option<&str>) -> String {
    let (sample, interval) = p.sampling.rates();
    let interval = p.lg_prof_interval.unwrap_or(interval);
    let mut conf =
        format!("prof:true,lg_prof_sample:{sample},lg_prof_interval:{interval},junk:false");
    if let Some(prefix) = prefix {
        conf.push_str(&format!(",prof_prefix:{prefix}"));
    }
    conf
}

/// Returns the preload's environment, as Kubernetes `env` entries.
fn env(p: &Params, prefix: Option<&str>) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), PRELOAD.into()),
        ("MALLOC_CONF".into(), malloc_conf(p, prefix)),
        ("DISABLE_JEMALLOC".into(), "true".into()),
    ]
}

fn kube_env(p: &Params, prefix: Option<&str>) -> Value {
    env(p, prefix)
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect()
}

/// Returns whether `s` is a Kubernetes object name (an RFC 1123 label).
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Returns the files for `p.target`.
pub(crate) fn render(p: &Params) -> Result<Vec<File>> {
    match p.target {
        Target::Operator => operator(p),
        Target::Native => native(p),
        Target::Standalone => standalone(p),
        Target::Compose => compose(p),
    }
}

/// Returns the TaskManager pod's part: the main container's environment and dump volume.
fn pod_template(p: &Params, container: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "taskmanager-pod-template"},
        "spec": {
            "containers": [{
                "name": container,
                "env": kube_env(p, Some(&format!("{POD_DUMPS}/jeprof.out"))),
                "volumeMounts": [{"name": VOLUME, "mountPath": POD_DUMPS}],
            }],
            "volumes": [{"name": VOLUME, "emptyDir": {}}],
        },
    })
}

/// For the operator, returns a JSON merge patch of the FlinkDeployment (`spec.image` and
/// the TaskManager's pod template).
fn operator_patch(p: &Params) -> Value {
    json!({
        "spec": {
            "image": p.image,
            "taskManager": {"podTemplate": pod_template(p, MAIN_CONTAINER)},
        },
    })
}

fn operator(p: &Params) -> Result<Vec<File>> {
    let name = p.name.as_deref().unwrap_or("<your FlinkDeployment>");
    let apply = format!(
        "kubectl patch flinkdeployment {name} --type merge --patch-file flinkdeployment-patch.yaml"
    );
    let header = format!(
        "# The profiled image and profiling on for the TaskManagers of a FlinkDeployment\n\
         # (Flink Kubernetes Operator). Apply with:\n#   {apply}\n\
         # A merge patch replaces lists: if spec.taskManager.podTemplate already has containers\n\
         # or volumes, add these entries to yours instead. The operator applies a spec change\n\
         # by redeploying the job (from its last checkpoint or savepoint, per upgradeMode).\n\
         # Then: cargo xtask collect --follow --selector 'app={name},component=taskmanager' --out DIR\n"
    );
    Ok(vec![File {
        name: "flinkdeployment-patch.yaml".into(),
        text: format!("{header}{}", yaml(&operator_patch(p))?),
        how_to_apply: apply,
    }])
}

/// Returns the `flink-conf.yaml` lines of native Kubernetes: the image (the key's name before and
/// after Flink 1.17's rename: an unknown key is ignored, and the new one wins where both are known)
/// and the TaskManager pod template.
fn native_conf(p: &Params, template_path: &str) -> String {
    format!(
        "kubernetes.container.image.ref: {image}\n\
         kubernetes.container.image: {image}\n\
         kubernetes.pod-template-file.taskmanager: {template_path}\n",
        image = p.image
    )
}

fn native(p: &Params) -> Result<Vec<File>> {
    let apply = "add flink-conf-profiling.yaml's lines to your Flink configuration (or pass each \
                 as -D to kubernetes-session.sh / flink run-application), with the template's path \
                 where the Flink client runs"
        .to_string();
    let template = format!(
        "# The TaskManager pod template of Flink's native Kubernetes integration: profiling on,\n\
         # the heap dumps on an emptyDir at {POD_DUMPS} (a pod per TaskManager JVM).\n{}",
        yaml(&pod_template(p, MAIN_CONTAINER))?
    );
    let conf = format!(
        "# Flink configuration for native Kubernetes (flink-conf.yaml, or -D key=value).\n\
         # Then: cargo xtask collect --follow --selector 'app=<cluster-id>,component=taskmanager' --out DIR\n{}",
        native_conf(p, "/path/to/taskmanager-pod-template.yaml")
    );
    Ok(vec![
        File {
            name: "taskmanager-pod-template.yaml".into(),
            text: template,
            how_to_apply: apply.clone(),
        },
        File {
            name: "flink-conf-profiling.yaml".into(),
            text: conf,
            how_to_apply: apply,
        },
    ])
}

/// For standalone Kubernetes, returns a strategic merge patch of the TaskManager Deployment
/// (containers and volumes merge by name).
fn standalone_patch(p: &Params) -> Value {
    json!({
        "spec": {"template": {"spec": {
            "containers": [{
                "name": TASKMANAGER,
                "image": p.image,
                "command": ["/bin/sh", "-c", start_script(POD_DUMPS), "sh"],
                "args": [ENTRYPOINT, "taskmanager"],
                "env": kube_env(p, None),
                "volumeMounts": [{"name": VOLUME, "mountPath": POD_DUMPS}],
            }],
            "volumes": [{"name": VOLUME, "emptyDir": {}}],
        }}},
    })
}

fn standalone(p: &Params) -> Result<Vec<File>> {
    let name = p.name.as_deref().unwrap_or(STANDALONE_DEPLOYMENT);
    let apply = format!("kubectl patch deployment {name} --patch-file taskmanager-patch.yaml");
    let header = format!(
        "# The profiled image and profiling on for the TaskManager Deployment of Flink's standalone\n\
         # Kubernetes setup (its container named {TASKMANAGER}). Apply with:\n#   {apply}\n\
         # An OOM-killed TaskManager restarts in place: each start gets {POD_DUMPS}/start-<UTC time>.\n\
         # Then: cargo xtask collect --follow --selector 'app=flink,component=taskmanager' --out DIR\n"
    );
    Ok(vec![File {
        name: "taskmanager-patch.yaml".into(),
        text: format!("{header}{}", yaml(&standalone_patch(p))?),
        how_to_apply: apply,
    }])
}

/// For Docker Compose, returns the override of the `taskmanager` service (file format 2.2,
/// that of Flink's docs, which Compose requires of files merged with it).
fn compose_override(p: &Params) -> Value {
    let service = p.name.as_deref().unwrap_or(TASKMANAGER);
    // Compose interpolates `$NAME` in every value; `$$` is a literal `$`.
    let literal = |s: &str| s.replace('$', "$$");
    let env: serde_json::Map<String, Value> = env(p, None)
        .into_iter()
        .map(|(k, v)| (k, Value::String(literal(&v))))
        .collect();
    json!({
        "version": "2.2",
        "services": {
            service: {
                "image": p.image,
                "entrypoint": ["/bin/sh", "-c", literal(&start_script(COMPOSE_DUMPS)), "sh", ENTRYPOINT],
                "environment": env,
                "restart": "on-failure",
            },
        },
    })
}

fn compose(p: &Params) -> Result<Vec<File>> {
    let apply =
        "docker-compose -f docker-compose.yml -f docker-compose.profiled.yml up -d".to_string();
    let header = format!(
        "# The profiled image and profiling on for the TaskManager service of a Flink Docker\n\
         # Compose setup. Apply with:\n#   {apply}\n\
         # An OOM-killed TaskManager restarts in place (restart: on-failure); each start writes\n\
         # its dumps to {COMPOSE_DUMPS}/start-<UTC time> inside the container.\n\
         # Then: cargo xtask collect --follow --docker <compose project> --out DIR\n"
    );
    Ok(vec![File {
        name: "docker-compose.profiled.yml".into(),
        text: format!("{header}{}", yaml(&compose_override(p))?),
        how_to_apply: apply,
    }])
}

fn yaml(v: &Value) -> Result<String> {
    serde_yaml_ng::to_string(v).context("writing YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(target: Target) -> Params {
        Params {
            target,
            image: "registry.example/flink@sha256:abc".into(),
            sampling: Sampling::Production,
            lg_prof_interval: None,
            name: None,
        }
    }

    #[test]
    fn sampling_rates_and_the_interval_override() {
        let mut p = params(Target::Native);
        assert_eq!(
            malloc_conf(&p, Some("/jeprof/jeprof.out")),
            "prof:true,lg_prof_sample:19,lg_prof_interval:32,junk:false,prof_prefix:/jeprof/jeprof.out"
        );
        p.sampling = Sampling::Dense;
        p.lg_prof_interval = Some(25);
        assert_eq!(
            malloc_conf(&p, None),
            "prof:true,lg_prof_sample:17,lg_prof_interval:25,junk:false"
        );
    }

    #[test]
    fn the_yaml_reads_back_as_the_values() {
        for t in [Target::Operator, Target::Standalone, Target::Compose] {
            let files = render(&params(t)).unwrap();
            let back: Value = serde_yaml_ng::from_str(&files[0].text).unwrap();
            let want = match t {
                Target::Operator => operator_patch(&params(t)),
                Target::Standalone => standalone_patch(&params(t)),
                _ => compose_override(&params(t)),
            };
            assert_eq!(back, want, "{}", files[0].text);
            assert!(files[0].text.starts_with("# "), "{}", files[0].text);
        }
        let native = render(&params(Target::Native)).unwrap();
        assert_eq!(native.len(), 2);
        assert!(native[1]
            .text
            .contains("kubernetes.container.image.ref: registry.example/flink@sha256:abc\n"));
    }

    #[test]
    fn kubernetes_names() {
        assert!(is_dns_label("flink-taskmanager"));
        for bad in ["", "Flink", "a_b", "-a", "a-", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
