//! The compilers, configure flags and runner of a build for a target platform: this
//! machine's `gcc` for its own platform; for another one (`--platform linux/arm64` on
//! x86-64) Debian's cross compiler (`aarch64-linux-gnu-gcc`), configure's `--host`, qemu's
//! user-mode emulator for the smoke run and the cross binutils for jeprof.

use anyhow::{bail, Result};
use std::path::PathBuf;

use crate::kubectl::find_on_path;
use crate::spec::PlatformSpec;

/// How one platform is built here.
#[derive(Debug, Clone)]
pub(crate) struct Toolchain {
    /// `linux/arm64`.
    pub platform: String,
    pub spec: PlatformSpec,
    /// `gcc`, or `aarch64-linux-gnu-gcc`.
    pub cc: String,
    pub cxx: String,
    /// What runs the target's programs here: nothing natively, `qemu-aarch64-static` for
    /// another CPU.
    pub emulator: Option<PathBuf>,
    /// jeprof's `--tools` prefix for another CPU's binaries (`/usr/bin/aarch64-linux-gnu-`).
    pub jeprof_tools: Option<String>,
}

impl Toolchain {
    /// Returns the toolchain for `platform`, or an error naming the packages that are missing.
    pub(crate) fn for_platform(platform: &str, spec: &PlatformSpec) -> Result<Toolchain> {
        if !spec.is_cross() {
            return Ok(Toolchain {
                platform: platform.to_string(),
                spec: spec.clone(),
                cc: "gcc".into(),
                cxx: "g++".into(),
                emulator: None,
                jeprof_tools: None,
            });
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let t = &spec.triplet;
        let cpu = spec.cpu();
        let (cc, cxx, nm) = (format!("{t}-gcc"), format!("{t}-g++"), format!("{t}-nm"));
        let qemu = format!("qemu-{cpu}-static");
        // Each tool looked up once: where it is, or missing.
        let found: Vec<(&String, Option<std::path::PathBuf>)> = [&cc, &cxx, &nm, &qemu]
            .into_iter()
            .map(|tool| (tool, find_on_path(tool, &path)))
            .collect();
        let missing: Vec<String> = found
            .iter()
            .filter(|(_, at)| at.is_none())
            .map(|(tool, _)| tool.to_string())
            .collect();
        if !missing.is_empty() {
            let deb = t.replace('_', "-");
            bail!(
                "building for {platform} on this {} machine needs {}: apt-get install \
                 gcc-{deb} g++-{deb} qemu-user-static (Debian's cross compiler and binutils, and \
                 qemu to run the smoke program)",
                std::env::consts::ARCH,
                missing.join(", ")
            );
        }
        let at = |i: usize| found[i].1.clone().expect("checked above");
        let (nm_path, emulator) = (at(2), at(3));
        let prefix = nm_path
            .to_string_lossy()
            .strip_suffix("nm")
            .map(str::to_string);
        Ok(Toolchain {
            platform: platform.to_string(),
            spec: spec.clone(),
            cc,
            cxx,
            emulator: Some(emulator),
            jeprof_tools: prefix,
        })
    }

    /// Returns configure's flags for the platform: `--host=<triplet>` for a cross build,
    /// then the platform's own (`--with-lg-page=16`).
    pub(crate) fn configure_flags(&self) -> Vec<String> {
        self.spec
            .is_cross()
            .then(|| format!("--host={}", self.spec.triplet))
            .into_iter()
            .chain(self.spec.configure_flags.iter().cloned())
            .collect()
    }
}

/// Returns a heap profile written under qemu's user-mode emulation as one written natively
/// reads. qemu's `/proc/self/maps` shows the guest's code without `x` (`r--p`, `---p`), and
/// jeprof takes a library's addresses from its executable mappings only, so it named no
/// function at all; here every file-backed mapping that is not writable gets `r-xp` (a
/// lookup finds the one whose range holds the address, with its file offset).
pub(crate) fn profile_as_native(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut maps = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("MAPPED_LIBRARIES:") {
            maps = true;
        } else if maps {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let file_backed = fields.len() >= 6 && fields[5].starts_with('/');
            if file_backed && (fields[1] == "r--p" || fields[1] == "---p") {
                out.push_str(&line.replacen(fields[1], "r-xp", 1));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(triplet: &str) -> PlatformSpec {
        PlatformSpec {
            arch: "x".into(),
            triplet: triplet.into(),
            loader: "lib/ld.so".into(),
            configure_flags: vec!["--with-lg-page=16".into()],
            dev_links: vec![],
        }
    }

    #[test]
    fn a_profile_written_under_qemu_maps_its_code_executable() {
        let heap = "heap_v2/524288\n  t*: 1: 64 [1: 64]\nMAPPED_LIBRARIES:\n\
            5502836000-5502837000 r--p 00000000 fe:00 11242673                       /tmp/smoke\n\
            5502837000-5502855000 ---p 00001000 fe:00 11242673                       /tmp/smoke\n\
            5502856000-5502857000 rw-p 00010000 fe:00 11242673                       /tmp/smoke\n\
            5502857000-550285d000 rw-p 00000000 00:00 0 \n\
            5502835000-5502836000 r--p 00000000 00:00 0 \n";
        let native = profile_as_native(heap);
        let lines: Vec<&str> = native.lines().collect();
        assert_eq!(lines[..2], ["heap_v2/524288", "  t*: 1: 64 [1: 64]"]);
        assert!(lines[3].starts_with("5502836000-5502837000 r-xp 00000000 fe:00 11242673  "));
        assert!(lines[4].contains(" r-xp 00001000 ") && lines[4].ends_with("/tmp/smoke"));
        // Writable and anonymous mappings stay as they were.
        assert!(lines[5].contains(" rw-p "));
        assert!(lines[7].contains(" r--p 00000000 00:00 0"));
        assert_eq!(native.len(), heap.len());
    }

    #[test]
    fn the_own_platform_builds_natively_and_another_names_its_packages() {
        let own = spec(&PlatformSpec::host_triplet());
        let t = Toolchain::for_platform("own", &own).unwrap();
        assert_eq!((t.cc.as_str(), t.emulator.is_none()), ("gcc", true));
        assert_eq!(t.configure_flags(), ["--with-lg-page=16"]);
        let e = Toolchain::for_platform("linux/riscv64", &spec("riscv64-linux-gnu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("riscv64-linux-gnu-gcc")
                && e.contains(
                    "apt-get install gcc-riscv64-linux-gnu g++-riscv64-linux-gnu qemu-user-static"
                ),
            "{e}"
        );
    }
}
