//! jemalloc heap dumps (`jeprof.out.<pid>.<seq>.i<seq>.heap`): their order, the files they
//! map, and the dump directory layout that `collect`, `e2e` and `analyze` share:
//! `DIR/*.heap` plus `DIR/root/<absolute path>` for every mapped file that is not part of
//! the image (RocksDB's JNI library, unpacked to /tmp at run time and deleted at JVM exit).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::progress::{self, Step};

/// Where mapped files that are not in the image are kept, inside a dump directory.
pub(crate) const ROOT: &str = "root";

/// Where the TaskManager writes its heap dumps, inside its container (a volume).
pub(crate) const DUMP_DIR: &str = "/jeprof";

/// What [`collect`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Collected {
    /// `out/<name>.heap`, in dump order (pid, then sequence number).
    pub dumps: Vec<PathBuf>,
    /// `out/root/<path>` of each library copied.
    pub libraries: Vec<PathBuf>,
    /// Libraries the dumps map under /tmp that are gone from the container (a JVM that
    /// has exited deleted its copy).
    pub missing: Vec<String>,
}

/// A container whose files can be listed and copied out: a pod's container (through
/// kubectl, `kubectl::PodContainer`) or a Docker container (`docker::Container`).
pub(crate) trait ContainerFiles {
    /// Returns how messages name it: `pod flink/taskmanager-…`, `container flink-jemalloc-…`.
    fn describe(&self) -> String;
    /// Returns the names in directory `dir` of the container (one level, no `.` entries).
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Copies the file `src` of the container to `dest` (its parent exists).
    fn copy_file(&self, src: &str, dest: &Path) -> Result<()>;
}

/// Copies the dumps in `dumps_dir` of the container to `out/` and the libraries they map
/// under /tmp to `out/root/<path>`. No dumps is not an error here (the caller decides); a
/// library that is gone is listed in [`Collected::missing`].
pub(crate) fn collect(c: &dyn ContainerFiles, dumps_dir: &str, out: &Path) -> Result<Collected> {
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

/// Checks, before any work, that `dir` holds at least two dumps (a difference needs two)
/// and that none is cut short: jemalloc writes a dump's `MAPPED_LIBRARIES:` section last.
pub(crate) fn check_dumps(dir: &Path) -> Result<Vec<String>> {
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

/// Returns whether `dump` is a whole jemalloc heap dump: it begins with `heap_v2/` and ends
/// with its `MAPPED_LIBRARIES:` section (written last) and a newline.
pub(crate) fn is_complete(dump: &[u8]) -> bool {
    dump.starts_with(b"heap_v2/")
        && dump.windows(18).any(|w| w == b"\nMAPPED_LIBRARIES:")
        && dump.ends_with(b"\n")
}

/// Returns the dumps in `dir` with their modification times (seconds since the epoch), in
/// order.
pub(crate) fn dump_times_in(dir: &Path) -> Result<Vec<(String, f64)>> {
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

/// Returns the dumps in `dir`, in order.
pub fn dumps_in(dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading dump directory {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Ok(heap_files(&names.join("\n")))
}

/// Returns the TaskManager container's command: `sh -c SCRIPT sh ENTRYPOINT… taskmanager`. Every
/// start of the container gets its own dump directory, `<dumps>/start-<UTC time>`, and jemalloc's
/// `prof_prefix` pointing into it (appended to `MALLOC_CONF`; jemalloc takes the last value of an
/// option). An OOM-killed container is restarted in place with the same emptyDir and its new JVM is
/// PID 1 again: with one directory for all, its `jeprof.out.1.<seq>` dumps would overwrite the dead
/// JVM's.
pub fn start_script(dumps: &str) -> String {
    format!(
        "d=\"{dumps}/start-$(date -u +%Y%m%dT%H%M%S)\"; mkdir -p \"$d\" || exit 1; \
         if [ -n \"$MALLOC_CONF\" ]; then export MALLOC_CONF=\"$MALLOC_CONF,prof_prefix:$d/jeprof.out\"; fi; \
         exec \"$@\""
    )
}

/// Returns where [`start_script`] puts the dumps of the container starts, in the order they
/// started, from an `ls -1` of the dump volume.
pub(crate) fn start_dirs(ls: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = ls
        .iter()
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .filter(|l| l.starts_with("start-") && !l.contains('/'))
        .collect();
    dirs.sort();
    dirs
}

/// Returns the dump directories of a collection (`OUT/<tm>/<start>` or `OUT/<tm>`), by
/// name, with their dumps.
pub(crate) fn dump_directories(
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

/// Returns the files a jemalloc heap profile maps: its `MAPPED_LIBRARIES:` section is the process's
/// `/proc/self/maps`; each line's sixth field onwards is the path. It keeps absolute paths only
/// (`[heap]`, `[stack]`, anonymous maps are not files), removes a ` (deleted)` suffix, and lists
/// each path once, in the order of first appearance.
pub(crate) fn mapped_libraries(dump: &str) -> Vec<String> {
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

/// Returns the path field of a `/proc/<pid>/maps` line (it may contain spaces), if any.
fn maps_path(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..5 {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    let path = rest.trim_end();
    (!path.is_empty()).then_some(path)
}

/// Returns whether a mapped path names a shared library (`*.so`, `*.so.N`).
fn is_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    name.ends_with(".so") || name.contains(".so.")
}

/// Returns whether a mapped file under `/tmp` is data, not code (the JVM's `hsperfdata`
/// counters): no frame can be in it, so its absence names nothing.
pub(crate) fn is_tmp_data(path: &str) -> bool {
    path.starts_with("/tmp/") && !is_library(path)
}

/// Returns the mapped files to copy: the shared libraries under `/tmp` (everything else is
/// part of the image; the JVM's `/tmp/hsperfdata_*` counters are mapped too, and are no
/// library).
pub(crate) fn libraries_to_copy(mapped: &[String]) -> Vec<String> {
    mapped
        .iter()
        .filter(|p| p.starts_with("/tmp/") && !p.contains("/../") && is_library(p))
        .cloned()
        .collect()
}

/// Returns the `*.heap` names in `ls -1` output, in dump order: numbers are compared as
/// numbers, so `jeprof.out.7.10.i10.heap` comes after `jeprof.out.7.9.i9.heap`.
fn heap_files(ls: &str) -> Vec<String> {
    let mut names: Vec<String> = ls
        .lines()
        .map(str::trim)
        .filter(|n| n.ends_with(".heap") && !n.contains('/') && !n.starts_with('.'))
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| natural_key(n));
    names
}

/// Returns the process id and sequence number in a dump's name
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

/// Returns the process id in a dump's name.
pub(crate) fn dump_pid(name: &str) -> Option<u64> {
    pid_and_seq(name)?.0.parse().ok()
}

/// Returns jemalloc's sequence number of a dump: its place among all the dumps its process
/// wrote.
pub(crate) fn dump_seq(name: &str) -> Option<u64> {
    pid_and_seq(name)?.1.parse().ok()
}

/// Returns the dumps of the process that wrote the most (a directory may also hold a dump of
/// a short-lived helper JVM, such as the one Flink's scripts run to size the TaskManager's
/// memory), in order, and the others, which are left out.
pub(crate) fn main_process(dumps: &[String]) -> (Vec<String>, Vec<String>) {
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
pub(crate) fn collect_from_dir(volume: &Path, rootfs: &Path, out: &Path) -> Result<()> {
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
pub(crate) fn stage_into_rootfs(dir: &Path, rootfs: &Path, inside: &str) -> Result<Vec<String>> {
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
