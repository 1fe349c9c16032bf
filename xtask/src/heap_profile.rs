//! jemalloc heap dumps (`jeprof.out.<pid>.<seq>.i<seq>.heap`): their order, the files they
//! map, and the dump directory layout that `collect`, `e2e` and `analyze` share:
//! `DIR/*.heap` plus `DIR/root/<absolute path>` for every mapped file that is not part of
//! the image (RocksDB's JNI library, unpacked to /tmp at run time and deleted at JVM exit).

use anyhow::{Context, Result};
use std::path::Path;

/// Where mapped files that are not in the image are kept, inside a dump directory.
pub const ROOT: &str = "root";

/// Dump file names, by sequence number (`ls` would put `.10.` before `.2.`); other names
/// are dropped.
pub fn sorted_dumps(names: &[String]) -> Vec<String> {
    let seq = |n: &str| {
        n.rsplit('.')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let mut v: Vec<String> = names
        .iter()
        .filter(|n| n.ends_with(".heap"))
        .cloned()
        .collect();
    v.sort_by_key(|n| (seq(n), n.clone()));
    v
}

/// The dumps in `dir`, in order.
pub fn dumps_in(dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading dump directory {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Ok(sorted_dumps(&names))
}

/// The files named in a dump's `MAPPED_LIBRARIES:` section (a copy of the process's
/// `/proc/self/maps`), once each, in order.
pub fn mapped_files(dump: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in dump
        .lines()
        .skip_while(|l| l.trim() != "MAPPED_LIBRARIES:")
        .skip(1)
    {
        // address perms offset dev inode path
        let path = line.split_whitespace().nth(5);
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    out
}

/// The mapped files worth keeping beside the dumps: those the runtime unpacked to /tmp.
pub fn runtime_files(mapped: &[String]) -> Vec<String> {
    mapped
        .iter()
        .filter(|p| p.starts_with("/tmp/"))
        .cloned()
        .collect()
}

/// Copies the dumps of `volume` to `out/` and the run-time files they map, read from
/// `rootfs`, to `out/root/<path>`.
pub fn collect_from_dir(volume: &Path, rootfs: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut wanted: Vec<String> = Vec::new();
    for d in dumps_in(volume)? {
        let from = volume.join(&d);
        let text = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        for f in runtime_files(&mapped_files(&String::from_utf8_lossy(&text))) {
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
    fn dumps_sort_by_sequence_not_text() {
        let names: Vec<String> = [
            "jeprof.out.77.10.i10.heap",
            "jeprof.out.77.2.i2.heap",
            "x.sym",
            "jeprof.out.1.0.i0.heap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            sorted_dumps(&names),
            [
                "jeprof.out.1.0.i0.heap",
                "jeprof.out.77.2.i2.heap",
                "jeprof.out.77.10.i10.heap"
            ]
        );
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

    #[test]
    fn mapped_files_come_from_the_maps_section() {
        let dump = "heap_v2/131072\n  t*: 98: 7424784 [0: 0]\n@ 0x1 0x2\n  t*: 1: 8 [0: 0]\n\n\
MAPPED_LIBRARIES:\n\
e0000000-ffe00000 rw-p 00000000 00:00 0 \n\
ffe00000-ffe48000 rw-p 00b14000 fe:00 5443827                            /usr/lib/jvm/java-11-openjdk-amd64/lib/server/classes.jsa\n\
7f00-7f10 r-xp 00000000 fe:00 12 /tmp/rocksdb-lib-6d07/librocksdbjni-linux64.so\n\
7f10-7f20 r--p 00010000 fe:00 12 /tmp/rocksdb-lib-6d07/librocksdbjni-linux64.so\n\
7f20-7f30 rw-p 00000000 00:00 0 [heap]\n";
        let mapped = mapped_files(dump);
        assert_eq!(
            mapped,
            [
                "/usr/lib/jvm/java-11-openjdk-amd64/lib/server/classes.jsa",
                "/tmp/rocksdb-lib-6d07/librocksdbjni-linux64.so"
            ]
        );
        assert_eq!(
            runtime_files(&mapped),
            ["/tmp/rocksdb-lib-6d07/librocksdbjni-linux64.so"]
        );
    }
}
