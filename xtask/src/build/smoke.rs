//! The smoke gate of a build: `smoke.c` compiled against the sysroot, run by the sysroot's
//! own `ld.so` (under qemu for another CPU) with the library preloaded and profiling on, and
//! its heap profile read by the built `jeprof` (with the cross binutils for another CPU),
//! which must attribute the allocations to `smoke_alloc`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use super::logged::run_logged;
use super::sysroot::Sysroot;
use super::toolchain::{self, Toolchain};

pub(super) const SMOKE_C: &str = include_str!("smoke.c");

/// Runs the smoke gate in `work/smoke` and returns its summary: the profile and jeprof's
/// line for `smoke_alloc`.
pub(super) fn smoke(
    sh: &Shell,
    work: &Path,
    installed: &Path,
    sysroot: &Sysroot,
    tc: &Toolchain,
) -> Result<String> {
    let dir = work.join("smoke");
    let exe = compile(sh, &dir, sysroot, tc)?;
    let heap = run(sh, &dir, &exe, installed, sysroot, tc)?;
    let report = read(sh, &dir, &exe, &heap, installed, tc)?;
    let top = report
        .lines()
        .find(|l| l.contains("smoke_alloc"))
        .unwrap_or("")
        .trim();
    Ok(format!(
        "{} -> {top}",
        heap.file_name().unwrap().to_string_lossy()
    ))
}

/// Compiles `smoke.c` against the sysroot with the platform's compiler.
fn compile(sh: &Shell, dir: &Path, sysroot: &Sysroot, tc: &Toolchain) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("prof"))?;
    let source = dir.join("smoke.c");
    std::fs::write(&source, SMOKE_C)?;
    let exe = dir.join("smoke");
    let sysroot_flags = sysroot.compiler_flags();
    let cc = &tc.cc;
    run_logged(
        cmd!(sh, "{cc} {sysroot_flags...} -O1 -g -o {exe} {source}"),
        &dir.join("compile.log"),
    )
    .context("compiling the smoke program against the sysroot")?;
    Ok(exe)
}

/// Runs the program through the sysroot's own loader (under qemu for another CPU) with the
/// library preloaded and profiling on, and returns the heap profile it wrote.
fn run(
    sh: &Shell,
    dir: &Path,
    exe: &Path,
    installed: &Path,
    sysroot: &Sysroot,
    tc: &Toolchain,
) -> Result<PathBuf> {
    let prof = dir.join("prof");
    let loader = sysroot.loader();
    let libpath = sysroot.library_path();
    let lib = installed.join("lib/libjemalloc.so.2");
    let conf = format!(
        "prof:true,prof_final:true,lg_prof_sample:0,prof_prefix:{}/jeprof",
        prof.display()
    );
    // Another CPU's loader runs under qemu: `qemu-aarch64-static <loader> …`.
    let argv = [
        loader.as_os_str(),
        "--library-path".as_ref(),
        libpath.as_ref(),
        exe.as_os_str(),
    ];
    let (program, args) = match &tc.emulator {
        Some(q) => (q.as_os_str(), &argv[..]),
        None => (argv[0], &argv[1..]),
    };
    run_logged(
        cmd!(sh, "{program} {args...}")
            .env("LD_PRELOAD", &lib)
            .env("MALLOC_CONF", &conf),
        &dir.join("run.log"),
    )
    .with_context(|| {
        format!(
            "the smoke program crashed or failed under the {} loader with LD_PRELOAD={} MALLOC_CONF={conf}",
            sysroot.suite,
            lib.display()
        )
    })?;
    std::fs::read_dir(&prof)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "heap"))
        .with_context(|| {
            format!(
                "the smoke run wrote no heap profile into {} (is profiling active?)",
                prof.display()
            )
        })
}

/// Has the built `jeprof --text` read the profile (made native first when it was written
/// under qemu) and returns its report, which must name `smoke_alloc`.
fn read(
    sh: &Shell,
    dir: &Path,
    exe: &Path,
    heap: &Path,
    installed: &Path,
    tc: &Toolchain,
) -> Result<String> {
    let heap = if tc.emulator.is_some() {
        let native = heap.with_extension("native.heap");
        let text =
            std::fs::read_to_string(heap).with_context(|| format!("reading {}", heap.display()))?;
        std::fs::write(&native, toolchain::profile_as_native(&text))?;
        native
    } else {
        heap.to_path_buf()
    };
    let jeprof = installed.join("bin/jeprof");
    let tools = tc.jeprof_tools.iter().map(|p| format!("--tools={p}"));
    let report = cmd!(sh, "perl {jeprof} {tools...} --text {exe} {heap}")
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("running {} --text on {}", jeprof.display(), heap.display()))?;
    std::fs::write(dir.join("jeprof.txt"), &report)?;
    if !report.contains("smoke_alloc") {
        bail!(
            "jeprof read {} but did not attribute the allocations to smoke_alloc:\n{report}",
            heap.display()
        );
    }
    Ok(report)
}
