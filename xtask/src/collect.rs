//! `cargo xtask collect`: copies the heap dumps out of a running TaskManager pod, and every
//! library they map from `/tmp` (RocksDB's JNI library, which the JVM unpacks there at run
//! time and deletes when it exits; without it `jeprof` cannot name the `rocksdb::` frames).
//!
//! Layout of `--out DIR`: `DIR/<dump>.heap` and `DIR/root/<absolute path of the library>`,
//! so `jeprof` can be pointed at the libraries by prefixing `DIR/root`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::deploy::manifests as deploy;
use crate::heap_profile::{heap_files, libraries_to_copy, mapped_libraries};
use crate::kubectl::Kubectl;
use crate::progress::{self, Step};

pub mod follow;
pub mod sources;
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

/// What [`collect`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// `out/<name>.heap`, in dump order (pid, then sequence number).
    pub dumps: Vec<PathBuf>,
    /// `out/root/<path>` of each library copied.
    pub libraries: Vec<PathBuf>,
    /// Libraries the dumps map under /tmp that are gone from the container (a JVM that
    /// has exited deleted its copy).
    pub missing: Vec<String>,
}

/// A container whose files can be listed and copied out: a pod's container (through
/// kubectl, [`PodContainer`]) or a Docker container (`docker::Container`).
pub trait ContainerFiles {
    /// How messages name it: `pod flink/taskmanager-…`, `container flink-jemalloc-…`.
    fn describe(&self) -> String;
    /// The names in directory `dir` of the container (one level, no `.` entries).
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Copies the file `src` of the container to `dest` (its parent exists).
    fn copy_file(&self, src: &str, dest: &Path) -> Result<()>;
}

/// A container of a pod, through kubectl.
pub struct PodContainer<'a> {
    pub kubectl: &'a Kubectl,
    pub pod: &'a str,
    /// None: kubectl's choice, the pod's first container.
    pub container: Option<&'a str>,
}

impl ContainerFiles for PodContainer<'_> {
    fn describe(&self) -> String {
        format!("pod {}/{}", self.kubectl.namespace, self.pod)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let ls = self
            .kubectl
            .exec_in(self.pod, self.container, &["ls", "-1", "--", dir])
            .with_context(|| {
                format!(
                    "listing the heap dumps in {dir} of {} (is the cluster reachable, `kubectl cluster-info`, and \
                     the pod running, `kubectl get pods -n {}`?)",
                    self.describe(),
                    self.kubectl.namespace
                )
            })?;
        Ok(ls.lines().map(|l| l.trim().to_string()).collect())
    }

    fn copy_file(&self, src: &str, dest: &Path) -> Result<()> {
        self.kubectl.cp_from(self.pod, self.container, src, dest)
    }
}

/// Copies the dumps in `dumps_dir` of the container to `out/` and the libraries they map
/// under /tmp to `out/root/<path>`. No dumps is not an error here (the caller decides); a
/// library that is gone is listed in [`Collected::missing`].
pub fn collect(c: &dyn ContainerFiles, dumps_dir: &str, out: &Path) -> Result<Collected> {
    let where_ = c.describe();
    let names = heap_files(&c.list(dumps_dir)?.join("\n"));
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut got = Collected::default();
    let mut mapped: Vec<String> = Vec::new();
    let step = Step::start(format!(
        "copying {} heap dump(s) from {where_}:{dumps_dir}",
        names.len()
    ));
    for name in &names {
        let dest = out.join(name);
        let src = format!("{}/{name}", dumps_dir.trim_end_matches('/'));
        c.copy_file(&src, &dest)
            .with_context(|| format!("copying {src} from {where_}"))?;
        let text = String::from_utf8_lossy(&std::fs::read(&dest)?).into_owned();
        for lib in mapped_libraries(&text) {
            if !mapped.contains(&lib) {
                mapped.push(lib);
            }
        }
        got.dumps.push(dest);
    }
    step.done(out.display().to_string());
    for lib in libraries_to_copy(&mapped) {
        let dest = out.join("root").join(lib.trim_start_matches('/'));
        let copied = std::fs::create_dir_all(dest.parent().expect("a file path"))
            .map_err(anyhow::Error::from)
            .and_then(|()| c.copy_file(&lib, &dest));
        match copied {
            Ok(()) => got.libraries.push(dest),
            Err(e) => {
                progress::note(format!("{lib} is mapped by a dump but not copied: {e:#}"));
                let _ = std::fs::remove_file(&dest);
                got.missing.push(lib);
            }
        }
    }
    Ok(got)
}

/// `cargo xtask collect`: one pod once (fails when it has no dumps), or every TaskManager
/// of a selector or a Docker project, once or followed; prints `--out`.
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

/// One pod, once.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a heap profile written by jemalloc 5.2.1 in a Flink TaskManager.
    const DUMP: &str = "heap_v2/131072
  t*: 2853: 419467712 [0: 0]
  t0: 12: 1572864 [0: 0]
@ 0x7f3c2a8e6d43 0x7f3c2a8a1b2f 0x7f3be1c2a1f4 0x7f3be1c3b0a8
  t*: 64: 8388608 [0: 0]
  t0: 64: 8388608 [0: 0]

MAPPED_LIBRARIES:
5611c8e00000-5611c8e01000 r--p 00000000 00:3a 2891045                    /usr/lib/jvm/java-11-openjdk-amd64/bin/java
5611c8e01000-5611c8e02000 r-xp 00001000 00:3a 2891045                    /usr/lib/jvm/java-11-openjdk-amd64/bin/java
5611ca1d3000-5611ca1f4000 rw-p 00000000 00:00 0                          [heap]
7f3bd8000000-7f3bd8021000 rw-p 00000000 00:00 0\x20
7f3bd8021000-7f3bdc000000 ---p 00000000 00:00 0
7f3bdfe00000-7f3be0c00000 r--p 00000000 00:3d 1312                       /tmp/librocksdbjni5107741361925425883.so
7f3be0c00000-7f3be2400000 r-xp 00e00000 00:3d 1312                       /tmp/librocksdbjni5107741361925425883.so
7f3be2400000-7f3be2600000 r--p 02600000 00:3d 1309                       /tmp/old copy/libfoo.so (deleted)
7f3c2a880000-7f3c2a8a0000 r--p 00000000 00:3a 3014657                    /opt/jemalloc/lib/libjemalloc.so.2
7f3c2a8a0000-7f3c2a900000 r-xp 00020000 00:3a 3014657                    /opt/jemalloc/lib/libjemalloc.so.2
7f3c2aa00000-7f3c2aa22000 r--p 00000000 00:3a 2884157                    /usr/lib/x86_64-linux-gnu/libc-2.31.so
7ffd7c9b1000-7ffd7c9d2000 rw-p 00000000 00:00 0                          [stack]
7ffd7c9f5000-7ffd7c9f7000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn mapped_libraries_of_a_dump() {
        assert_eq!(
            mapped_libraries(DUMP),
            [
                "/usr/lib/jvm/java-11-openjdk-amd64/bin/java",
                "/tmp/librocksdbjni5107741361925425883.so",
                "/tmp/old copy/libfoo.so",
                "/opt/jemalloc/lib/libjemalloc.so.2",
                "/usr/lib/x86_64-linux-gnu/libc-2.31.so",
            ]
        );
        assert!(mapped_libraries("heap_v2/131072\n  t*: 0: 0 [0: 0]\n").is_empty());
    }

    #[test]
    fn only_tmp_libraries_are_copied() {
        assert_eq!(
            libraries_to_copy(&mapped_libraries(DUMP)),
            [
                "/tmp/librocksdbjni5107741361925425883.so",
                "/tmp/old copy/libfoo.so"
            ]
        );
        assert!(libraries_to_copy(&["/tmp/../etc/passwd".to_string()]).is_empty());
        assert!(libraries_to_copy(&["/tmp/hsperfdata_flink/151".to_string()]).is_empty());
        assert!(crate::heap_profile::is_tmp_data("/tmp/hsperfdata_flink/1"));
        assert!(!crate::heap_profile::is_tmp_data("/tmp/librocksdbjni1.so"));
        assert!(!crate::heap_profile::is_tmp_data("/usr/bin/java"));
    }

    #[test]
    fn heap_files_in_dump_order() {
        let ls = "jeprof.out.7.10.i10.heap\njeprof.out.7.9.i9.heap\nlost+found\n\
                  jeprof.out.7.0.i0.heap\njeprof.out.123.0.i0.heap\njeprof.out.7.11.f.heap\n";
        assert_eq!(
            heap_files(ls),
            [
                "jeprof.out.7.0.i0.heap",
                "jeprof.out.7.9.i9.heap",
                "jeprof.out.7.10.i10.heap",
                "jeprof.out.7.11.f.heap",
                "jeprof.out.123.0.i0.heap",
            ]
        );
    }
}
