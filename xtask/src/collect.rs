//! `cargo xtask collect`: copies the heap dumps out of a running TaskManager pod, and every
//! library they map from `/tmp` (RocksDB's JNI library, which the JVM unpacks there at run
//! time and deletes when it exits; without it `jeprof` cannot name the `rocksdb::` frames).
//!
//! Layout of `--out DIR`: `DIR/<dump>.heap` and `DIR/root/<absolute path of the library>`,
//! so `jeprof` can be pointed at the libraries by prefixing `DIR/root`.

use anyhow::{bail, Result};
use std::path::PathBuf;

use crate::deploy::manifests as deploy;
use crate::heap_profile::collect;
use crate::kubectl::{Kubectl, PodContainer};
use crate::progress;

pub(crate) mod follow;
pub(crate) mod sources;
use sources::Source;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(false)
    .args(["pod", "selector", "docker"])))]
pub struct CollectArgs {
    /// One TaskManager pod, copied once.
    #[arg(long)]
    pub pod: Option<String>,
    /// Every TaskManager pod this label selector finds, e.g. `app=my-job,component=taskmanager`
    /// (operator, native Kubernetes; add `type=flink-native-kubernetes` to be precise) or
    /// `app=flink,component=taskmanager` (standalone, as Flink's docs label them).
    #[arg(long)]
    pub selector: Option<String>,
    /// A Docker container's name, or a compose project (every container of its
    /// `--service`).
    #[arg(long)]
    pub docker: Option<String>,
    /// The compose service of the TaskManagers.
    #[arg(long, default_value = "taskmanager")]
    pub service: String,
    /// Keep copying each new dump as it is written, and record the job's failures, the
    /// TaskManagers' starts, deaths and memory (`timeline.jsonl`), until Ctrl-C or `--for`.
    #[arg(long)]
    pub follow: bool,
    /// Follow for this long (`90s`, `30m`, `2h`), then stop with everything written.
    #[arg(long, value_name = "DURATION", requires = "follow")]
    pub r#for: Option<String>,
    /// Seconds between polls.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// The JobManager's REST API (e.g. `http://localhost:8081` through `kubectl port-forward`),
    /// for the job's failure times and the JVMs' memory [default: a compose project's
    /// jobmanager's published port 8081].
    #[arg(long)]
    pub rest: Option<String>,
    /// Its namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The kubeconfig context (default: the current one; a kind cluster's is `kind-<name>`).
    #[arg(long)]
    pub context: Option<String>,
    /// The TaskManager's container (default: `flink-main-container`, else `taskmanager`,
    /// else the pod's first).
    #[arg(long)]
    pub container: Option<String>,
    /// The directory of the heap dumps inside the container (MALLOC_CONF's prof_prefix)
    /// [default: /jeprof in pods, /tmp/jeprof in Docker, where `deploy` puts them].
    #[arg(long)]
    pub dumps: Option<String>,
    /// Where the dumps and libraries go.
    #[arg(long)]
    pub out: PathBuf,
}

/// `cargo xtask collect`: collects one pod once (fails when it has no dumps), or every
/// TaskManager of a selector or a Docker project, once or followed; prints `--out`.
pub fn run(args: CollectArgs) -> Result<()> {
    let kubectl = || -> Result<Kubectl> {
        Kubectl::require()?;
        Ok(match &args.context {
            Some(c) => Kubectl::with_context(&args.namespace, c),
            None => Kubectl::new(&args.namespace),
        })
    };
    let source = match (&args.pod, &args.selector, &args.docker) {
        (Some(pod), _, _) => {
            if args.follow {
                bail!(
                    "--follow needs every TaskManager, not one pod (an OOM-killed pod of native \
                     Kubernetes is replaced by one with a new name): give --selector instead of --pod"
                );
            }
            let dumps = args
                .dumps
                .clone()
                .unwrap_or_else(|| deploy::POD_DUMPS.to_string());
            return collect_pod(&kubectl()?, &args, pod, &dumps);
        }
        (_, Some(selector), _) => Source::Pods {
            kubectl: kubectl()?,
            selector: selector.clone(),
            container: args.container.clone(),
        },
        (_, _, Some(docker)) => Source::docker(docker, &args.service)?,
        _ => unreachable!("clap requires one of --pod, --selector, --docker"),
    };
    let dumps = args.dumps.clone().unwrap_or_else(|| {
        match source {
            Source::Docker { .. } => deploy::COMPOSE_DUMPS,
            Source::Pods { .. } => deploy::POD_DUMPS,
        }
        .to_string()
    });
    let until = match (&args.r#for, args.follow) {
        (Some(d), _) => Some(follow::Until::For(follow::parse_duration(d)?)),
        (None, true) => Some(follow::Until::Interrupted),
        (None, false) => None,
    };
    let rest = args.rest.clone().or_else(|| source.find_rest());
    if rest.is_none() && args.follow {
        progress::note(
            "no --rest: the job's failure times are not recorded, so `analyze` measures growth per \
             hour instead of per restart",
        );
    }
    let totals = follow::follow(
        &source,
        &follow::Options {
            dumps,
            out: args.out.clone(),
            until,
            interval: std::time::Duration::from_secs(args.interval),
            rest,
        },
    )?;
    progress::note(format!(
        "{} dump(s) and {} librar{} copied this run; {} job failure(s), {} TaskManager death(s) \
         ({} OOM-killed) recorded in {}",
        totals.dumps,
        totals.libraries,
        if totals.libraries == 1 { "y" } else { "ies" },
        totals.failures,
        totals.deaths,
        totals.oom_kills,
        args.out.join(crate::timeline::FILE).display()
    ));
    println!("{}", args.out.display());
    Ok(())
}

/// Collects one pod, once.
fn collect_pod(kubectl: &Kubectl, args: &CollectArgs, pod: &str, dumps: &str) -> Result<()> {
    let c = PodContainer {
        kubectl,
        pod,
        container: args.container.as_deref(),
    };
    let got = collect(&c, dumps, &args.out)?;
    if got.dumps.is_empty() {
        bail!(
            "no *.heap files in {} of pod {}/{}: is the TaskManager started with \
             LD_PRELOAD of the profiling jemalloc and MALLOC_CONF=prof:true,lg_prof_interval:N,\
             prof_prefix:{}/jeprof.out (`cargo xtask deploy` writes them), and has it allocated 2^N bytes yet?",
            dumps,
            args.namespace,
            pod,
            dumps.trim_end_matches('/')
        );
    }
    progress::note(format!(
        "{} dump(s), {} librar{} copied{}",
        got.dumps.len(),
        got.libraries.len(),
        if got.libraries.len() == 1 { "y" } else { "ies" },
        if got.missing.is_empty() {
            String::new()
        } else {
            format!("; gone from the container: {}", got.missing.join(", "))
        }
    ));
    println!("{}", args.out.display());
    Ok(())
}
