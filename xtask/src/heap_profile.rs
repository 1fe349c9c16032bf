//! jemalloc heap dumps (`jeprof.out.<pid>.<seq>.i<seq>.heap`): their order, the files they
//! map, and the dump directory layout that `collect`, `e2e` and `analyze` share:
//! `DIR/*.heap` plus `DIR/root/<absolute path>` for every mapped file that is not part of
//! the image (RocksDB's JNI library, unpacked to /tmp at run time and deleted at JVM exit).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where mapped files that are not in the image are kept, inside a dump directory.
pub const ROOT: &str = "root";

/// Checks, before any work, that `dir` holds at least two dumps (a difference needs two)
/// and that none is cut short: jemalloc writes a dump's `MAPPED_LIBRARIES:` section last.
pub fn check_dumps(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory of heap dumps: pass what `cargo xtask collect --out` wrote",
            dir.display()
        );
    }
    let dumps = dumps_in(dir)?;
    if dumps.len() < 2 {
        bail!(
            "{} holds {} heap dump(s) (jeprof.out.*.heap); at least two are needed for a \
             difference: collect more (lower lg_prof_interval in MALLOC_CONF, or run longer)",
            dir.display(),
            dumps.len()
        );
    }
    for d in &dumps {
        let path = dir.join(d);
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if !is_complete(&text) {
            bail!(
                "{} is truncated or not a jemalloc heap dump (it must begin with heap_v2/ and end \
                 with its MAPPED_LIBRARIES section): copy it again, or move it out of {}",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(dumps)
}

/// Whether `dump` is a whole jemalloc heap dump: it begins with `heap_v2/` and ends with its
/// `MAPPED_LIBRARIES:` section (written last) and a newline.
pub fn is_complete(dump: &[u8]) -> bool {
    dump.starts_with(b"heap_v2/")
        && dump.windows(18).any(|w| w == b"\nMAPPED_LIBRARIES:")
        && dump.ends_with(b"\n")
}

/// The dumps in `dir` with their modification times (seconds since the epoch), in order.
pub fn dump_times_in(dir: &Path) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for name in dumps_in(dir)? {
        let path = dir.join(&name);
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading the time of {}", path.display()))?;
        let secs = modified
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        out.push((name, secs));
    }
    Ok(out)
}

/// The dumps in `dir`, in order.
pub fn dumps_in(dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading dump directory {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Ok(heap_files(&names.join("\n")))
}

/// The TaskManager container's command: `sh -c SCRIPT sh ENTRYPOINT… taskmanager`. Every
/// start of the container gets its own dump directory, `<dumps>/start-<UTC time>`, and
/// jemalloc's `prof_prefix` pointing into it (appended to `MALLOC_CONF`; jemalloc takes the
/// last value of an option). An OOM-killed container is restarted in place with the same
/// emptyDir and its new JVM is PID 1 again: with one directory for all, its
/// `jeprof.out.1.<seq>` dumps would overwrite the dead JVM's.
pub fn start_script(dumps: &str) -> String {
    format!(
        "d=\"{dumps}/start-$(date -u +%Y%m%dT%H%M%S)\"; mkdir -p \"$d\" || exit 1; \
         if [ -n \"$MALLOC_CONF\" ]; then export MALLOC_CONF=\"$MALLOC_CONF,prof_prefix:$d/jeprof.out\"; fi; \
         exec \"$@\""
    )
}

/// Where [`start_script`] puts the dumps of the container starts, in the order they
/// started, from an `ls -1` of the dump volume.
pub fn start_dirs(ls: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = ls
        .iter()
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .filter(|l| l.starts_with("start-") && !l.contains('/'))
        .collect();
    dirs.sort();
    dirs
}

/// The dump directories of a collection (`OUT/<tm>/<start>` or `OUT/<tm>`), by name, with
/// their dumps.
pub fn dump_directories(
    out: &Path,
) -> Result<std::collections::BTreeMap<std::path::PathBuf, usize>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        let n = dumps_in(&d)?.len();
        if n > 0 {
            found.insert(d.clone(), n);
        }
        if d.components().count() - out.components().count() < 2 {
            for e in std::fs::read_dir(&d)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && name != ROOT && !name.starts_with('.') {
                    stack.push(e.path());
                }
            }
        }
    }
    Ok(found)
}

/// The files a jemalloc heap profile maps: its `MAPPED_LIBRARIES:` section is the process's
/// `/proc/self/maps`; each line's sixth field onwards is the path. Absolute paths only
/// (`[heap]`, `[stack]`, anonymous maps are not files), a ` (deleted)` suffix removed, each
/// path once, in the order of first appearance.
pub fn mapped_libraries(dump: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(start) = dump.find("MAPPED_LIBRARIES:") else {
        return out;
    };
    for line in dump[start..].lines().skip(1) {
        let Some(path) = maps_path(line) else {
            continue;
        };
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if path.starts_with('/') && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// The path field of a `/proc/<pid>/maps` line (it may contain spaces), if any.
fn maps_path(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..5 {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    let path = rest.trim_end();
    (!path.is_empty()).then_some(path)
}

/// Whether a mapped path names a shared library (`*.so`, `*.so.N`).
pub fn is_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    name.ends_with(".so") || name.contains(".so.")
}

/// Whether a mapped file under `/tmp` is data, not code (the JVM's `hsperfdata` counters):
/// no frame can be in it, so its absence names nothing.
pub fn is_tmp_data(path: &str) -> bool {
    path.starts_with("/tmp/") && !is_library(path)
}

/// The mapped files to copy: the shared libraries under `/tmp` (everything else is part of
/// the image; the JVM's `/tmp/hsperfdata_*` counters are mapped too, and are no library).
pub fn libraries_to_copy(mapped: &[String]) -> Vec<String> {
    mapped
        .iter()
        .filter(|p| p.starts_with("/tmp/") && !p.contains("/../") && is_library(p))
        .cloned()
        .collect()
}

/// The `*.heap` names in `ls -1` output, in dump order: numbers compared as numbers, so
/// `jeprof.out.7.10.i10.heap` comes after `jeprof.out.7.9.i9.heap`.
pub fn heap_files(ls: &str) -> Vec<String> {
    let mut names: Vec<String> = ls
        .lines()
        .map(str::trim)
        .filter(|n| n.ends_with(".heap") && !n.contains('/') && !n.starts_with('.'))
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| natural_key(n));
    names
}

/// The process id and sequence number in a dump's name
/// (`<prefix>.<pid>.<seq>.<kind>.heap`), as written.
fn pid_and_seq(name: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = name.strip_suffix(".heap")?.rsplit('.').collect();
    // Reversed: <kind>, <seq>, <pid>, ...
    match parts[..] {
        // i<n>: interval, f: final, m<n>: manual, u<n>: high-water mark.
        [kind, seq, pid, ..] if kind.starts_with(['i', 'f', 'm', 'u']) => Some((pid, seq)),
        _ => None,
    }
}

/// The process id in a dump's name.
pub fn dump_pid(name: &str) -> Option<u64> {
    pid_and_seq(name)?.0.parse().ok()
}

/// jemalloc's sequence number of a dump: its place among all the dumps its process wrote.
pub fn dump_seq(name: &str) -> Option<u64> {
    pid_and_seq(name)?.1.parse().ok()
}

/// The dumps of the process that wrote the most (a directory may also hold a dump of a
/// short-lived helper JVM, such as the one Flink's scripts run to size the TaskManager's
/// memory), in order, and the others left out.
pub fn main_process(dumps: &[String]) -> (Vec<String>, Vec<String>) {
    let mut count: std::collections::BTreeMap<Option<u64>, usize> = Default::default();
    for d in dumps {
        *count.entry(dump_pid(d)).or_insert(0) += 1;
    }
    let main = count.iter().max_by_key(|(_, n)| **n).map(|(p, _)| *p);
    dumps
        .iter()
        .cloned()
        .partition(|d| Some(dump_pid(d)) == main)
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Chunk {
    Num(u64),
    Text(String),
}

fn natural_key(s: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut digits = false;
    let flush = |cur: &mut String, digits: bool, out: &mut Vec<Chunk>| {
        if cur.is_empty() {
            return;
        }
        out.push(match (digits, cur.parse()) {
            (true, Ok(n)) => Chunk::Num(n),
            _ => Chunk::Text(cur.clone()),
        });
        cur.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() != digits {
            flush(&mut cur, digits, &mut out);
            digits = c.is_ascii_digit();
        }
        cur.push(c);
    }
    flush(&mut cur, digits, &mut out);
    out
}

/// Copies the dumps of `volume` to `out/` and the run-time files they map, read from
/// `rootfs`, to `out/root/<path>`.
pub fn collect_from_dir(volume: &Path, rootfs: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut wanted: Vec<String> = Vec::new();
    for d in dumps_in(volume)? {
        let from = volume.join(&d);
        let text = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        for f in libraries_to_copy(&mapped_libraries(&String::from_utf8_lossy(&text))) {
            if !wanted.contains(&f) {
                wanted.push(f);
            }
        }
        std::fs::copy(&from, out.join(&d))
            .with_context(|| format!("copying {} to {}", from.display(), out.display()))?;
    }
    for f in wanted {
        let rel = f.trim_start_matches('/');
        let (from, to) = (rootfs.join(rel), out.join(ROOT).join(rel));
        if from.is_file() && !to.exists() {
            std::fs::create_dir_all(to.parent().expect("a file path"))?;
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Puts a dump directory's `root/` files over `rootfs` and its dumps into
/// `rootfs/<inside>`, so that jeprof run in the rootfs finds both. Only files are copied:
/// directories that exist keep their modes (the image's /tmp stays 1777).
pub fn stage_into_rootfs(dir: &Path, rootfs: &Path, inside: &str) -> Result<Vec<String>> {
    let root = dir.join(ROOT);
    if root.is_dir() {
        copy_files(&root, rootfs)?;
    }
    let dest = rootfs.join(inside.trim_start_matches('/'));
    std::fs::create_dir_all(&dest)?;
    let dumps = dumps_in(dir)?;
    for d in &dumps {
        std::fs::copy(dir.join(d), dest.join(d))
            .with_context(|| format!("copying {d} into {}", dest.display()))?;
    }
    Ok(dumps)
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            if !dst.is_dir() {
                std::fs::create_dir(&dst).with_context(|| format!("creating {}", dst.display()))?;
            }
            copy_files(&src, &dst)?;
        } else if e.file_type()?.is_file() {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_process_is_the_one_with_most_dumps() {
        assert_eq!(dump_pid("jeprof.out.1.10.i10.heap"), Some(1));
        assert_eq!(dump_pid("jeprof.26469.0.f.heap"), Some(26469));
        assert_eq!(dump_pid("x.heap"), None);
        assert_eq!(dump_seq("jeprof.out.1.10.i10.heap"), Some(10));
        assert_eq!(dump_seq("jeprof.26469.3.f.heap"), Some(3));
        assert_eq!(dump_seq("x.heap"), None);
        let d: Vec<String> = [
            "jeprof.out.1.0.i0.heap",
            "jeprof.out.1.1.i1.heap",
            "jeprof.out.498.0.i0.heap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (main, other) = main_process(&d);
        assert_eq!(main, d[..2].to_vec());
        assert_eq!(other, vec!["jeprof.out.498.0.i0.heap".to_string()]);
    }

    #[test]
    fn staging_keeps_existing_directory_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let (dir, rootfs) = (t.path().join("dumps"), t.path().join("rootfs"));
        std::fs::create_dir_all(dir.join("root/tmp/rocksdb-lib-1")).unwrap();
        std::fs::write(
            dir.join("root/tmp/rocksdb-lib-1/librocksdbjni-linux64.so"),
            "elf",
        )
        .unwrap();
        std::fs::write(dir.join("jeprof.out.1.0.i0.heap"), "heap_v2/1").unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let dumps = stage_into_rootfs(&dir, &rootfs, "/tmp/d").unwrap();
        assert_eq!(dumps, ["jeprof.out.1.0.i0.heap"]);
        assert!(rootfs
            .join("tmp/rocksdb-lib-1/librocksdbjni-linux64.so")
            .is_file());
        assert!(rootfs.join("tmp/d/jeprof.out.1.0.i0.heap").is_file());
        let mode = std::fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }
}
