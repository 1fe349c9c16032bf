//! What `collect --follow` records beside the dumps, so that `analyze` can read them as a
//! story: `timeline.jsonl` in the collection's directory, one JSON event per line, appended
//! as things happen (a run of hours rewrites nothing; an interrupted write leaves at most
//! one cut last line, which reading skips). Events: the job's failures (the JobManager's
//! exception history), TaskManager container starts and deaths (OOM kills named), each dump
//! copied with the time it was written, and memory samples (the container's RSS and cgroup
//! usage; Flink's heap and non-heap).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in a collection's directory.
pub(crate) const FILE: &str = "timeline.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// The job failed (and restarted, or not) at `t`.
    Failure { job: String, t: f64 },
    /// A TaskManager container started at `t`.
    Start { taskmanager: String, t: f64 },
    /// A TaskManager container ended at `t`.
    Death {
        taskmanager: String,
        t: f64,
        oom_killed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
    },
    /// A dump was written at `t` and copied to `path` (relative to the collection).
    Dump {
        taskmanager: String,
        path: String,
        t: f64,
    },
    /// The container's memory at `t`.
    Memory {
        taskmanager: String,
        t: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        rss_kb: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup_bytes: Option<u64>,
    },
    /// Flink's view of a TaskManager's JVM memory at `t` (its REST id).
    Jvm {
        taskmanager_id: String,
        t: f64,
        heap_used: f64,
        nonheap_used: f64,
    },
}

/// Returns the events of `dir`'s timeline (none when it has none), in the order written; a
/// line that does not parse (the cut end of an interrupted write) is skipped.
pub fn read(dir: &Path) -> Result<Vec<Event>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(parse(&text))
}

/// Parses the events of a timeline's text.
pub(crate) fn parse(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends events to a timeline file, one line each, flushed per event.
pub(crate) struct Writer {
    path: PathBuf,
    file: std::fs::File,
}

impl Writer {
    pub(crate) fn open(dir: &Path) -> Result<Writer> {
        let path = dir.join(FILE);
        // A cut last line of an interrupted run ends here, so the next event starts a line.
        let ends_cut = std::fs::read(&path)
            .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
            .unwrap_or(false);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if ends_cut {
            file.write_all(b"\n")?;
        }
        Ok(Writer { path, file })
    }

    pub(crate) fn push(&mut self, e: &Event) -> Result<()> {
        let mut line = serde_json::to_vec(e)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}

/// Returns the job's failure times in a timeline, oldest first, each once.
pub fn failure_times(events: &[Event]) -> Vec<f64> {
    let mut t: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Failure { t, .. } => Some(*t),
            _ => None,
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    t
}

/// Returns `(path, time written)` of every dump copied.
pub fn dump_times(events: &[Event]) -> Vec<(String, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dump { path, t, .. } => Some((path.clone(), *t)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_a_cut_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let events = [
            Event::Failure {
                job: "j".into(),
                t: 10.5,
            },
            Event::Death {
                taskmanager: "tm".into(),
                t: 11.0,
                oom_killed: true,
                exit_code: Some(137),
            },
            Event::Dump {
                taskmanager: "tm".into(),
                path: "tm/start-1/jeprof.out.1.0.i0.heap".into(),
                t: 12.0,
            },
        ];
        let mut w = Writer::open(dir.path()).unwrap();
        for e in &events {
            w.push(e).unwrap();
        }
        drop(w);
        let mut text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"kind\":\"death\""), "{text}");
        // An interrupted append leaves half a line; the next writer starts a fresh line.
        text.push_str("{\"kind\":\"fail");
        std::fs::write(dir.path().join(FILE), &text).unwrap();
        let mut w = Writer::open(dir.path()).unwrap();
        w.push(&events[0]).unwrap();
        let back = read(dir.path()).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back[..3], events);
        assert_eq!(failure_times(&back), [10.5]);
        assert_eq!(dump_times(&back)[0].1, 12.0);
        assert!(read(&dir.path().join("none")).unwrap().is_empty());
    }
}
