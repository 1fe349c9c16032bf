//! What a dump directory tells besides its dumps: for a `collect --follow` collection, the
//! dump directory to read (the one with the most dumps: one TaskManager JVM), the times its
//! dumps were written and the job's failures (`timeline.jsonl`); for an `e2e` run's dumps,
//! their times (`dump-times.json`).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::heap_profile;
use crate::progress;
use crate::timeline::Event;

/// The dump times a dump directory records (`e2e` writes them beside the dumps).
pub(crate) const DUMP_TIMES: &str = "dump-times.json";

/// What a dump directory tells besides its dumps.
pub(crate) struct Story {
    pub dir: PathBuf,
    pub dump_times: BTreeMap<String, f64>,
    /// `(restart, failed at)`: the job's n-th failure starts restart n.
    pub restarts: Vec<(u64, f64)>,
    /// `(time, bytes)`: the RSS of the TaskManager whose dumps these are (a collection's).
    pub rss: Vec<(f64, f64)>,
    /// `(time, bytes)`: the JVM's heap plus non-heap, when Flink listed one TaskManager.
    pub jvm: Vec<(f64, f64)>,
}

impl Story {
    pub(crate) fn read(path: &Path) -> Result<Story> {
        let events = crate::timeline::read(path)?;
        let dir = if path.is_dir() && heap_profile::dumps_in(path)?.is_empty() {
            pick_dump_directory(path)?
        } else {
            path.to_path_buf()
        };
        let mut dump_times: BTreeMap<String, f64> = BTreeMap::new();
        let rel = dir
            .strip_prefix(path)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        for (p, t) in crate::timeline::dump_times(&events) {
            let p = Path::new(&p);
            if p.parent() == Some(rel.as_path()) {
                if let Some(name) = p.file_name() {
                    dump_times.insert(name.to_string_lossy().into_owned(), t);
                }
            }
        }
        if dump_times.is_empty() {
            if let Ok(bytes) = std::fs::read(dir.join(DUMP_TIMES)) {
                dump_times = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", dir.join(DUMP_TIMES).display()))?;
            }
        }
        let restarts = crate::timeline::failure_times(&events)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i as u64 + 1, t))
            .collect();
        let tm = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let (mut rss, mut jvm) = memory_samples(&events, tm.as_deref());
        // Keep the samples of this JVM only: from its first dump to its last (a container
        // restarted in place keeps its name).
        let first = dump_times.values().copied().fold(f64::INFINITY, f64::min);
        let last = dump_times
            .values()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        rss.retain(|(t, _)| (first..=last).contains(t));
        jvm.retain(|(t, _)| (first..=last).contains(t));
        Ok(Story {
            dir,
            dump_times,
            restarts,
            rss,
            jvm,
        })
    }
}

/// `(time, bytes)` samples.
type Samples = Vec<(f64, f64)>;

/// Returns the RSS samples of TaskManager `tm` and the JVM samples when they are of one
/// TaskManager (Flink's ids are not the containers' names), `(time, bytes)`.
fn memory_samples(events: &[Event], tm: Option<&str>) -> (Samples, Samples) {
    let mut rss = Vec::new();
    let mut jvm = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for e in events {
        match e {
            Event::Memory {
                taskmanager,
                t,
                rss_kb: Some(kb),
                ..
            } if Some(taskmanager.as_str()) == tm => rss.push((*t, *kb as f64 * 1024.0)),
            Event::Jvm {
                taskmanager_id,
                t,
                heap_used,
                nonheap_used,
            } => {
                ids.insert(taskmanager_id.clone());
                jvm.push((*t, heap_used + nonheap_used));
            }
            _ => {}
        }
    }
    if ids.len() != 1 {
        jvm.clear();
    }
    (rss, jvm)
}

/// Returns a collection's dump directory with the most dumps (the latest of equals), named in
/// a note with the others, or `path` itself when it has none anywhere.
fn pick_dump_directory(path: &Path) -> Result<PathBuf> {
    let dirs = heap_profile::dump_directories(path)?;
    // With none anywhere, return the directory itself, for the dump check to say so.
    let Some(most) = dirs.values().max().copied() else {
        return Ok(path.to_path_buf());
    };
    let dir = dirs
        .iter()
        .filter(|(_, n)| **n == most)
        .map(|(d, _)| d.clone())
        .next_back()
        .expect("a directory with the most dumps");
    if dirs.len() > 1 {
        let others: Vec<String> = dirs
            .iter()
            .filter(|(d, _)| **d != dir)
            .map(|(d, n)| format!("{} ({n})", d.strip_prefix(path).unwrap_or(d).display()))
            .collect();
        progress::note(format!(
            "reading {} ({most} dumps, one TaskManager JVM); the others: {} (pass one to read it)",
            dir.display(),
            others.join(", ")
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_is_read_from_its_largest_dump_directory_with_its_timeline() {
        use crate::timeline::{Event, Writer};
        let out = tempfile::tempdir().unwrap();
        let heap = "heap_v2/1\n\nMAPPED_LIBRARIES:\n";
        let mut w = Writer::open(out.path()).unwrap();
        for (start, n) in [("start-a", 3), ("start-b", 5)] {
            for i in 0..n {
                let rel = format!("tm_1/{start}/jeprof.out.1.{i}.i{i}.heap");
                let f = out.path().join(&rel);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(&f, heap).unwrap();
                w.push(&Event::Dump {
                    taskmanager: "tm_1".into(),
                    path: rel,
                    t: 100.0 + i as f64,
                })
                .unwrap();
            }
        }
        for t in [101.5, 102.5, 99.0] {
            w.push(&Event::Failure { job: "j".into(), t }).unwrap();
        }
        let story = Story::read(out.path()).unwrap();
        assert_eq!(story.dir, out.path().join("tm_1/start-b"));
        assert_eq!(story.dump_times.len(), 5);
        assert_eq!(story.dump_times["jeprof.out.1.4.i4.heap"], 104.0);
        assert_eq!(story.restarts, [(1, 99.0), (2, 101.5), (3, 102.5)]);
        assert!(story.rss.is_empty() && story.jvm.is_empty());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(Story::read(empty.path()).unwrap().dir, empty.path());
    }
}
