//! `collect --follow`: polls every TaskManager of a [`Source`] at an interval. Each dump is
//! copied out once it is whole (written at least a second before the listing, or followed
//! by a later dump of its process), through a `.partial-` file renamed into place, so that
//! an OOM-killed container or a deleted pod takes nothing with it that was written a poll
//! before; the RocksDB JNI library a dump maps is copied while that JVM still has it. Beside
//! the dumps go [`timeline`] events: the job's failures (REST), container starts and deaths,
//! memory samples. One exec per TaskManager and poll lists the dumps and reads the memory;
//! nothing copied is copied again, and a second run into the same directory continues it.
//!
//! Layout: `OUT/<container or pod>/<start directory>/…heap` (or `OUT/<pod>/…heap` where the
//! dumps are not in start directories: a native pod is one JVM), and `OUT/timeline.jsonl`.
//! Each such directory is a dump directory that `analyze` reads (`root/` beside the dumps).

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::sources::{Death, Source, TaskManager};
use crate::e2e::cluster::{parse_memory_probe, MEMORY_PROBE};
use crate::e2e::flink_rest::FlinkRest;
use crate::heap_profile::ContainerFiles;
use crate::heap_profile::{self, dump_pid, dump_seq, libraries_to_copy, mapped_libraries};
use crate::progress;
use crate::timeline::{self, Event};

/// What to follow and for how long.
pub(crate) struct Options {
    /// The dump directory inside the containers.
    pub dumps: String,
    pub out: PathBuf,
    /// Poll until then; None means one pass.
    pub until: Option<Until>,
    pub interval: Duration,
    /// The JobManager's REST API, for failure times and JVM metrics.
    pub rest: Option<String>,
}

/// When following ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until {
    /// After this long.
    For(Duration),
    /// At Ctrl-C.
    Interrupted,
}

/// A heap file a listing shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Relative to the dump directory: `name` or `start-…/name`.
    pub rel: String,
    pub size: u64,
    /// Modification time, seconds since the epoch (the container's clock).
    pub mtime: f64,
}

/// Returns the shell script of one poll in a TaskManager: it prints the container's clock,
/// lists its dumps (GNU find, as in every Debian or Ubuntu based Flink image) and runs
/// [`MEMORY_PROBE`].
fn poll_script(dir: &str) -> String {
    format!(
        "date +%s.%N; echo @@dumps; find '{dir}' -maxdepth 2 -type f -name '*.heap' \
         -printf '%P\\t%s\\t%T@\\n' 2>/dev/null; echo @@memory; {MEMORY_PROBE}"
    )
}

/// Parses [`poll_script`]'s output into the container's time, the heap files and the memory
/// text.
fn parse_poll(text: &str) -> (Option<f64>, Vec<Entry>, &str) {
    let (head, rest) = text.split_once("@@dumps").unwrap_or((text, ""));
    let (listing, memory) = rest.split_once("@@memory").unwrap_or((rest, ""));
    let now = head.trim().parse().ok();
    let entries = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let rel = f.next()?.trim();
            let size = f.next()?.trim().parse().ok()?;
            let mtime = f.next()?.trim().parse().ok()?;
            safe_rel(rel).then(|| Entry {
                rel: rel.to_string(),
                size,
                mtime,
            })
        })
        .collect();
    (now, entries, memory)
}

/// Returns whether `rel` is a relative dump path with at most one directory, no `..` and no
/// hidden names.
fn safe_rel(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.starts_with('.') && *p != "..")
        && rel.ends_with(".heap")
}

/// Returns the entries whole enough to copy: written a second or more before `now`, or
/// followed by a later dump of the same process in the same directory (jemalloc writes one
/// dump at a time). Without the container's time, only the second rule applies.
pub(crate) fn ready(entries: &[Entry], now: Option<f64>) -> Vec<&Entry> {
    let key = |e: &Entry| {
        let (dir, name) = e.rel.rsplit_once('/').unwrap_or(("", &e.rel));
        (dir.to_string(), dump_pid(name), dump_seq(name))
    };
    entries
        .iter()
        .filter(|e| {
            let (dir, pid, seq) = key(e);
            let old = now.is_some_and(|n| n - e.mtime >= 1.0);
            let followed = entries.iter().any(|o| {
                let (d, p, s) = key(o);
                d == dir && p == pid && s > seq
            });
            old || followed
        })
        .collect()
}

/// What has been done, from the timeline and the files (for a continued collection).
#[derive(Default)]
struct State {
    copied: BTreeSet<String>,
    libraries: BTreeSet<String>,
    /// Libraries that could not be copied (warned once).
    gone: BTreeSet<String>,
    failures: BTreeSet<(String, i64)>,
    deaths: BTreeSet<(String, i64)>,
    starts: BTreeSet<(String, i64)>,
    /// Incomplete copies (a dump cut by its container's death), warned once.
    cut: BTreeSet<String>,
    /// The REST API failed at the last poll (said once).
    rest_failing: bool,
    /// No TaskManager was found at the last poll (said once).
    none_seen: bool,
}

fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

impl State {
    fn from_events(events: &[Event]) -> State {
        let mut s = State::default();
        for e in events {
            match e {
                Event::Dump { path, .. } => {
                    s.copied.insert(path.clone());
                }
                Event::Failure { job, t } => {
                    s.failures.insert((job.clone(), ms(*t)));
                }
                Event::Death { taskmanager, t, .. } => {
                    s.deaths.insert((taskmanager.clone(), ms(*t)));
                }
                Event::Start { taskmanager, t } => {
                    s.starts.insert((taskmanager.clone(), ms(*t)));
                }
                _ => {}
            }
        }
        s
    }
}

/// What a follow copied and saw, for the closing line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Totals {
    pub dumps: usize,
    pub libraries: usize,
    pub failures: usize,
    pub deaths: usize,
    pub oom_kills: usize,
}

/// Follows `source` into `opts.out` until `opts.until` (one pass without it).
pub(crate) fn follow(source: &Source, opts: &Options) -> Result<Totals> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    remove_partials(&opts.out);
    let out = opts.out.clone();
    let _teardown = crate::teardown::on_interrupt(
        format!("partial copies in {}", opts.out.display()),
        move || remove_partials(&out),
    );
    let mut f = Follower {
        source,
        opts,
        rest: opts.rest.as_deref().map(FlinkRest::new),
        state: State::from_events(&timeline::read(&opts.out)?),
        writer: timeline::Writer::open(&opts.out)?,
        totals: Totals::default(),
    };
    let started = Instant::now();
    let mut since = now() - 3600.0;
    progress::note(format!(
        "following {} into {}{}",
        source.describe(),
        opts.out.display(),
        match opts.until {
            Some(Until::For(d)) => format!(" for {}", humantime::format_duration(d)),
            Some(Until::Interrupted) => " until Ctrl-C".to_string(),
            None => " (one pass)".to_string(),
        }
    ));
    loop {
        let until = now();
        let ending = match opts.until {
            None => true,
            Some(Until::For(d)) => started.elapsed() >= d,
            Some(Until::Interrupted) => false,
        };
        let before = f.totals.clone();
        f.poll(since, until, ending)?;
        since = until;
        if f.totals != before {
            progress::note(f.totals.to_string() + " so far");
        }
        if ending {
            return Ok(f.totals);
        }
        let remaining = match opts.until {
            Some(Until::For(d)) => d.saturating_sub(started.elapsed()),
            _ => opts.interval,
        };
        std::thread::sleep(opts.interval.min(remaining));
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dump(s), {} librar{}, {} job failure(s), {} TaskManager death(s) ({} OOM-killed)",
            self.dumps,
            self.libraries,
            if self.libraries == 1 { "y" } else { "ies" },
            self.failures,
            self.deaths,
            self.oom_kills
        )
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One follow's state: what it reads from and writes to.
struct Follower<'a> {
    source: &'a Source,
    opts: &'a Options,
    rest: Option<FlinkRest>,
    state: State,
    writer: timeline::Writer,
    totals: Totals,
}

impl Follower<'_> {
    /// Polls once: deaths, then each TaskManager, then the REST API.
    fn poll(&mut self, since: f64, until: f64, ending: bool) -> Result<()> {
        let seen = self.source.poll(since, until)?;
        for d in &seen.deaths {
            self.record_death(d)?;
        }
        for tm in &seen.taskmanagers {
            self.poll_taskmanager(tm, until, ending)?;
        }
        self.poll_rest(until);
        if seen.taskmanagers.is_empty() && !self.state.none_seen {
            progress::note(format!(
                "no TaskManager in {} yet; looking again at every poll",
                self.source.describe()
            ));
        }
        self.state.none_seen = seen.taskmanagers.is_empty();
        Ok(())
    }

    /// Records a TaskManager's start (when new) and memory, and copies its whole dumps; at
    /// the end it copies every dump listed.
    fn poll_taskmanager(&mut self, tm: &TaskManager, until: f64, ending: bool) -> Result<()> {
        if let Some(t) = tm.started_at {
            if self.state.starts.insert((tm.name.clone(), ms(t))) {
                self.writer.push(&Event::Start {
                    taskmanager: tm.name.clone(),
                    t,
                })?;
            }
        }
        let text = match self.source.sh(&tm.name, &poll_script(&self.opts.dumps)) {
            Ok(t) => t,
            // Stopped, or gone between the listing and the exec: try again at the next poll.
            Err(e) => {
                if tm.running {
                    progress::note(format!("{}: {e:#}; trying again at the next poll", tm.name));
                }
                return Ok(());
            }
        };
        let (container_now, entries, memory) = parse_poll(&text);
        let m = parse_memory_probe(memory);
        if m.rss_kb.is_some() || m.cgroup_bytes.is_some() {
            self.writer.push(&Event::Memory {
                taskmanager: tm.name.clone(),
                t: container_now.unwrap_or(until),
                rss_kb: m.rss_kb,
                cgroup_bytes: m.cgroup_bytes,
            })?;
        }
        let whole: Vec<&Entry> = if ending {
            entries.iter().collect()
        } else {
            ready(&entries, container_now)
        };
        let starts: Vec<f64> = (self.state.starts.iter())
            .filter(|(n, _)| *n == tm.name)
            .map(|(_, t)| *t as f64 / 1000.0)
            .collect();
        for e in whole {
            self.copy_dump(&tm.name, e, &dest_rel(e, &starts))?;
        }
        Ok(())
    }

    fn record_death(&mut self, d: &Death) -> Result<()> {
        if !self.state.deaths.insert((d.taskmanager.clone(), ms(d.t))) {
            return Ok(());
        }
        self.totals.deaths += 1;
        if d.oom_killed {
            self.totals.oom_kills += 1;
        }
        progress::note(format!(
            "TaskManager {} {}",
            d.taskmanager,
            match (d.oom_killed, d.exit_code) {
                (true, _) => "was OOM-killed".to_string(),
                (false, Some(c)) => format!("ended (exit code {c})"),
                (false, None) => "ended".to_string(),
            }
        ));
        self.writer.push(&Event::Death {
            taskmanager: d.taskmanager.clone(),
            t: d.t,
            oom_killed: d.oom_killed,
            exit_code: d.exit_code,
        })
    }

    /// Copies one dump (once) to `tm/dest` through a `.partial-` file, if it is whole, then
    /// the libraries it maps.
    fn copy_dump(&mut self, tm: &str, e: &Entry, dest: &str) -> Result<()> {
        let rel = format!("{tm}/{dest}");
        if self.state.copied.contains(&rel) || self.state.cut.contains(&rel) {
            return Ok(());
        }
        let dest = self.opts.out.join(&rel);
        let dir = dest.parent().expect("a dump's directory").to_path_buf();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = self.source.files(tm);
        let src = format!("{}/{}", self.opts.dumps.trim_end_matches('/'), e.rel);
        let partial = partial_of(&dest);
        if let Err(err) = files.copy_file(&src, &partial) {
            let _ = std::fs::remove_file(&partial);
            progress::note(format!(
                "copying {src} from {}: {err:#}; trying again",
                files.describe()
            ));
            return Ok(());
        }
        let bytes =
            std::fs::read(&partial).with_context(|| format!("reading {}", partial.display()))?;
        if !heap_profile::is_complete(&bytes) {
            let _ = std::fs::remove_file(&partial);
            if self.state.cut.insert(rel.clone()) {
                progress::note(format!(
                    "{src} of {tm} is not a whole heap dump (cut by its process's end?): left out"
                ));
            }
            return Ok(());
        }
        std::fs::rename(&partial, &dest).with_context(|| format!("writing {}", dest.display()))?;
        self.state.copied.insert(rel.clone());
        self.totals.dumps += 1;
        self.writer.push(&Event::Dump {
            taskmanager: tm.to_string(),
            path: rel,
            t: e.mtime,
        })?;
        let mapped = mapped_libraries(&String::from_utf8_lossy(&bytes));
        self.copy_libraries(files.as_ref(), &libraries_to_copy(&mapped), &dir, &src)
    }

    /// Copies the /tmp libraries a dump maps that its directory lacks to `dir/root/<path>`;
    /// one that cannot be copied is named once (its frames stay unnamed).
    fn copy_libraries(
        &mut self,
        files: &dyn ContainerFiles,
        libs: &[String],
        dir: &Path,
        dump: &str,
    ) -> Result<()> {
        for lib in libs {
            let to = dir
                .join(heap_profile::ROOT)
                .join(lib.trim_start_matches('/'));
            let key = to.to_string_lossy().into_owned();
            if to.exists() || self.state.libraries.contains(&key) || self.state.gone.contains(&key)
            {
                continue;
            }
            std::fs::create_dir_all(to.parent().expect("a library's directory"))?;
            let partial = partial_of(&to);
            match files.copy_file(lib, &partial) {
                Ok(()) => {
                    std::fs::rename(&partial, &to)
                        .with_context(|| format!("writing {}", to.display()))?;
                    self.state.libraries.insert(key);
                    self.totals.libraries += 1;
                }
                Err(err) => {
                    let _ = std::fs::remove_file(&partial);
                    progress::note(format!(
                        "{lib}, mapped by {dump}, is not copied: {err:#} (its frames stay unnamed)"
                    ));
                    self.state.gone.insert(key);
                }
            }
        }
        Ok(())
    }

    /// Records new job failures and the JVMs' memory, when there is a REST API. It says
    /// once, not every poll, that the API fails (a JobManager restarting takes a while), and
    /// once that it answers again.
    fn poll_rest(&mut self, t: f64) {
        let Some(rest) = self.rest.as_ref() else {
            return;
        };
        let events = rest_events(rest, &self.state, t);
        match events {
            Ok(events) => {
                if self.state.rest_failing {
                    progress::note("the JobManager's REST API answers again");
                }
                self.state.rest_failing = false;
                for e in events {
                    if let Event::Failure { job, t } = &e {
                        self.state.failures.insert((job.clone(), ms(*t)));
                        self.totals.failures += 1;
                    }
                    if let Err(err) = self.writer.push(&e) {
                        progress::note(format!("{err:#}"));
                    }
                }
            }
            Err(e) if !self.state.rest_failing => {
                self.state.rest_failing = true;
                progress::note(format!(
                    "the JobManager's REST API: {e:#}; trying again at every poll (the job's \
                     failures are read from its exception history once it answers)"
                ));
            }
            Err(_) => {}
        }
    }
}

/// Returns `dir/.partial-<name>` of a destination: where its copy is written before the
/// rename.
fn partial_of(dest: &Path) -> PathBuf {
    let name = dest.file_name().expect("a file name").to_string_lossy();
    dest.with_file_name(format!(".partial-{name}"))
}

/// Returns where a dump goes below its TaskManager's directory: where it is (`start-…/name`, the
/// start script's directories), or, for dumps written straight into the dump directory (a native
/// pod; the operator's standalone mode, whose containers restart in place and whose new JVM writes
/// the same names again), into `start-<UTC time>` of the container start it was written after
/// (`starts`: the container's starts seen, seconds).
fn dest_rel(e: &Entry, starts: &[f64]) -> String {
    if e.rel.contains('/') {
        return e.rel.clone();
    }
    let start = starts
        .iter()
        .copied()
        .filter(|s| *s <= e.mtime + 1.0)
        .fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))));
    let name = match start.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s as i64).ok()) {
        Some(t) => format!(
            "start-{:04}{:02}{:02}T{:02}{:02}{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => "start-unknown".to_string(),
    };
    format!("{name}/{}", e.rel)
}

/// Returns the job failures not seen yet (every job's exception history) and the JVM memory
/// of every TaskManager Flink lists, as events.
fn rest_events(rest: &FlinkRest, state: &State, t: f64) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for job in rest.job_ids()? {
        for f in rest.failure_times(&job)? {
            if !state.failures.contains(&(job.clone(), ms(f))) {
                out.push(Event::Failure {
                    job: job.clone(),
                    t: f,
                });
            }
        }
    }
    const HEAP: &str = "Status.JVM.Memory.Heap.Used";
    const NON_HEAP: &str = "Status.JVM.Memory.NonHeap.Used";
    for id in rest.taskmanager_ids()? {
        let m = rest.taskmanager_metrics(&id, &[HEAP, NON_HEAP])?;
        if let (Some(h), Some(n)) = (m.get(HEAP), m.get(NON_HEAP)) {
            out.push(Event::Jvm {
                taskmanager_id: id,
                t,
                heap_used: *h,
                nonheap_used: *n,
            });
        }
    }
    Ok(out)
}

/// Removes `.partial-*` files under `dir` (copies that an interruption cut short).
fn remove_partials(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            remove_partials(&p);
        } else if e.file_name().to_string_lossy().starts_with(".partial-") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Parses `--for` (`90s`, `30m`, `2h`, `1h30m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("--for '{s}': {e}; give a duration such as 90s, 30m or 2h"))?;
    if d.is_zero() {
        bail!("--for '{s}' is zero: give how long to follow, such as 30m");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_parsed_and_what_is_whole() {
        let text = "1796511300.250000000\n@@dumps\n\
                    start-20261205T100000/jeprof.out.1.0.i0.heap\t1000\t1796511290.0\n\
                    start-20261205T100000/jeprof.out.1.1.i1.heap\t900\t1796511299.9\n\
                    start-20261205T110000/jeprof.out.1.0.i0.heap\t800\t1796511299.5\n\
                    ../etc/passwd.heap\t1\t1.0\n\
                    jeprof.out.7.3.i3.heap\t10\t1796511300.1\n\
                    @@memory\nVmRSS:\t 1024 kB\n@@cgroup\n2048\n";
        let (now, entries, memory) = parse_poll(text);
        assert_eq!(now, Some(1796511300.25));
        assert_eq!(entries.len(), 4, "the unsafe path is dropped");
        assert_eq!(parse_memory_probe(memory).rss_kb, Some(1024));
        let whole: Vec<&str> = ready(&entries, now)
            .iter()
            .map(|e| e.rel.as_str())
            .collect();
        // 1.0 is old; 1.1 is 0.35 s old and the last of its process, so it waits; the other
        // start's 1.0 is followed by nothing but is 0.75 s old, so it waits; pid 7 is too new.
        assert_eq!(whole, ["start-20261205T100000/jeprof.out.1.0.i0.heap"]);
        let later = parse_poll(&text.replace("1796511300.250000000", "1796511302")).0;
        assert_eq!(ready(&entries, later).len(), 4);
        // Without the container's clock a dump is whole once a later one exists.
        assert_eq!(ready(&entries, None).len(), 1);
    }

    #[test]
    fn flat_dumps_go_to_the_start_they_followed() {
        let e = |rel: &str, mtime: f64| Entry {
            rel: rel.into(),
            size: 1,
            mtime,
        };
        // 2026-12-05T10:00:00Z and the restart in place at 11:00:00.
        let starts = [1796464800.0, 1796468400.0];
        assert_eq!(
            dest_rel(&e("jeprof.out.1.3.i3.heap", 1796465000.0), &starts),
            "start-20261205T100000/jeprof.out.1.3.i3.heap"
        );
        assert_eq!(
            dest_rel(&e("jeprof.out.1.3.i3.heap", 1796468500.0), &starts),
            "start-20261205T110000/jeprof.out.1.3.i3.heap"
        );
        assert_eq!(
            dest_rel(&e("start-x/jeprof.out.1.3.i3.heap", 1.0), &starts),
            "start-x/jeprof.out.1.3.i3.heap"
        );
        assert_eq!(
            dest_rel(&e("jeprof.out.1.3.i3.heap", 1.0), &starts),
            "start-unknown/jeprof.out.1.3.i3.heap"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon")
            .unwrap_err()
            .to_string()
            .contains("such as 90s"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn dump_directories_of_a_collection() {
        let out = tempfile::tempdir().unwrap();
        let heap = "heap_v2/1\n\nMAPPED_LIBRARIES:\n";
        for p in [
            "tm_1/start-a/jeprof.out.1.0.i0.heap",
            "tm_1/start-a/jeprof.out.1.1.i1.heap",
            "tm_1/start-b/jeprof.out.1.0.i0.heap",
            "pod-x/jeprof.out.1.0.i0.heap",
            "tm_1/start-a/root/tmp/lib.heap",
        ] {
            let f = out.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, heap).unwrap();
        }
        let dirs = heap_profile::dump_directories(out.path()).unwrap();
        let names: Vec<(String, usize)> = dirs
            .iter()
            .map(|(d, n)| {
                (
                    d.strip_prefix(out.path()).unwrap().display().to_string(),
                    *n,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("pod-x".to_string(), 1),
                ("tm_1/start-a".to_string(), 2),
                ("tm_1/start-b".to_string(), 1)
            ]
        );
    }
}
