//! The checks a build must pass before it reports success. They are pure functions over
//! facts read elsewhere (configure's header, ELF metadata), so each failure mode is
//! unit-tested.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The backtrace method configure chose for heap profiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unwinder {
    /// `_Unwind_Backtrace` from libgcc_s: the sane default on glibc.
    ProfLibgcc,
    /// libunwind.
    ProfLibunwind,
}

impl std::fmt::Display for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unwinder::ProfLibgcc => "prof-libgcc",
            Unwinder::ProfLibunwind => "prof-libunwind",
        })
    }
}

/// Reads configure's choice from `include/jemalloc/internal/jemalloc_internal_defs.h`.
/// `prof-gcc` (frame-pointer walking via `__builtin_return_address`) is refused: under
/// `prof:true` it segfaults bash and the JVM.
pub(crate) fn unwinder(defs_h: &str) -> Result<Unwinder> {
    let defined = |name: &str| {
        defs_h.lines().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some("#define") && words.next() == Some(name)
        })
    };
    if defined("JEMALLOC_PROF_LIBUNWIND") {
        Ok(Unwinder::ProfLibunwind)
    } else if defined("JEMALLOC_PROF_LIBGCC") {
        Ok(Unwinder::ProfLibgcc)
    } else if defined("JEMALLOC_PROF_GCC") {
        bail!(
            "configure chose the prof-gcc unwinder, which crashes programs under prof:true.\n\
             It does so when libgcc_s cannot be linked: make sure the sysroot has the suite's \
             libgcc_s package (libgcc-s1, or libgcc1 on buster)"
        )
    } else if defined("JEMALLOC_PROF") {
        bail!("configure enabled profiling without any backtrace method")
    } else {
        bail!("configure did not enable profiling (JEMALLOC_PROF is not defined)")
    }
}

/// Parses `GLIBC_2.31` into `[2, 31]`; other version names give `None`.
pub fn glibc_version(name: &str) -> Option<Vec<u32>> {
    name.strip_prefix("GLIBC_")?
        .split('.')
        .map(|p| p.parse().ok())
        .collect()
}

/// Returns the newest `GLIBC_x.y` among (file, version) needs.
pub fn max_glibc<'a>(needs: impl IntoIterator<Item = &'a (String, String)>) -> Option<String> {
    needs
        .into_iter()
        .filter_map(|(_, v)| glibc_version(v).map(|n| (n, v)))
        .max()
        .map(|(_, v)| v.clone())
}

/// Returns the (file, version) needs that the providing libraries do not define. `provided`
/// maps a library file name to the versions it defines; a file absent from it is reported
/// too.
pub(crate) fn missing_versions(
    needs: &[(String, String)],
    provided: &BTreeMap<String, Vec<String>>,
) -> Vec<(String, String)> {
    needs
        .iter()
        .filter(|(file, v)| !provided.get(file).is_some_and(|defs| defs.contains(v)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBGCC: &str = "#define JEMALLOC_PROF \n/* #undef JEMALLOC_PROF_LIBUNWIND */\n#define JEMALLOC_PROF_LIBGCC \n/* #undef JEMALLOC_PROF_GCC */\n";
    const GCC: &str = "#define JEMALLOC_PROF \n/* #undef JEMALLOC_PROF_LIBUNWIND */\n/* #undef JEMALLOC_PROF_LIBGCC */\n#define JEMALLOC_PROF_GCC \n";

    #[test]
    fn unwinder_choice() {
        assert_eq!(unwinder(LIBGCC).unwrap(), Unwinder::ProfLibgcc);
        let err = unwinder(GCC).unwrap_err().to_string();
        assert!(err.contains("prof-gcc") && err.contains("libgcc"), "{err}");
        assert!(unwinder("/* #undef JEMALLOC_PROF */").is_err());
    }

    #[test]
    fn glibc_versions_compare_numerically() {
        let needs = vec![
            ("libc.so.6".to_string(), "GLIBC_2.9".to_string()),
            ("libc.so.6".to_string(), "GLIBC_2.14".to_string()),
            ("libc.so.6".to_string(), "GLIBC_PRIVATE".to_string()),
            ("libgcc_s.so.1".to_string(), "GCC_3.3".to_string()),
        ];
        assert_eq!(max_glibc(&needs).as_deref(), Some("GLIBC_2.14"));
        assert_eq!(glibc_version("GLIBC_2.3.4"), Some(vec![2, 3, 4]));
    }

    #[test]
    fn missing_versions_are_named() {
        let needs = vec![
            ("libc.so.6".to_string(), "GLIBC_2.34".to_string()),
            ("libc.so.6".to_string(), "GLIBC_2.2.5".to_string()),
            ("libfoo.so".to_string(), "FOO_1".to_string()),
        ];
        let mut provided = BTreeMap::new();
        provided.insert(
            "libc.so.6".to_string(),
            vec!["GLIBC_2.2.5".to_string(), "GLIBC_2.31".to_string()],
        );
        assert_eq!(
            missing_versions(&needs, &provided),
            vec![
                ("libc.so.6".to_string(), "GLIBC_2.34".to_string()),
                ("libfoo.so".to_string(), "FOO_1".to_string())
            ]
        );
    }
}
