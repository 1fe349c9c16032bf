//! Resolves jeprof's tools (`binutils graphviz perl file`) against a base image: it follows Depends
//! and Pre-Depends (alternatives, virtual packages, version constraints, multi-arch qualifiers)
//! through a suite's `Packages` index, skipping what the base's dpkg status already satisfies.
//! Recommends are not followed. It is pure: the index and the status go in, the packages come out.
//!
//! Relations are parsed by `debian-control` and versions compared by `debversion`; the
//! walk itself is small: the first alternative that is installed, chosen, or available
//! wins, the way apt's first choice does without Recommends.

use anyhow::{bail, Context, Result};
use debian_control::lossy::{Relation, Relations};
use debian_control::relations::VersionConstraint;
use debversion::Version;
use std::collections::{BTreeMap, VecDeque};

use crate::debian::{self, PackageRecord};

/// The packages jeprof needs in the image: addr2line/nm/objdump, dot, perl, file.
pub const JEPROF_TOOLS: &[&str] = &["binutils", "graphviz", "perl", "file"];

/// What a dpkg status says is installed: versions, and what those packages provide.
#[derive(Debug, Default, Clone)]
pub struct Installed {
    pub packages: BTreeMap<String, Version>,
    pub provides: BTreeMap<String, Vec<Option<Version>>>,
}

impl Installed {
    /// Reads a dpkg `status` file (only `install ok installed` entries count).
    pub fn from_status(status: &str) -> Result<Installed> {
        let mut out = Installed::default();
        for p in debian::paragraphs(status) {
            if !p.get("Status").is_some_and(|s| s.ends_with(" installed")) {
                continue;
            }
            let (Some(name), Some(version)) = (p.get("Package"), p.get("Version")) else {
                continue;
            };
            let version: Version = version
                .parse()
                .map_err(|e| anyhow::anyhow!("dpkg status: {name} {version}: {e}"))?;
            for (v, pv) in provides(p.get("Provides").map(String::as_str).unwrap_or(""))? {
                out.provides.entry(v).or_default().push(pv);
            }
            out.packages.insert(name.clone(), version);
        }
        Ok(out)
    }
}

fn relations(field: &str, what: &str) -> Result<Relations> {
    if field.trim().is_empty() {
        return Ok(Relations(Vec::new()));
    }
    field
        .replace('\n', " ")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{what}: cannot parse `{field}`: {e}"))
}

/// Parses `Provides: a (= 1), b` into [(a, Some(1)), (b, None)].
fn provides(field: &str) -> Result<Vec<(String, Option<Version>)>> {
    Ok(relations(field, "Provides")?
        .0
        .into_iter()
        .flatten()
        .map(|r| (r.name, r.version.map(|(_, v)| v)))
        .collect())
}

fn satisfies(have: &Version, constraint: &Option<(VersionConstraint, Version)>) -> bool {
    match constraint {
        None => true,
        Some((c, want)) => match c {
            VersionConstraint::LessThan => have < want,
            VersionConstraint::LessThanEqual => have <= want,
            VersionConstraint::Equal => have == want,
            VersionConstraint::GreaterThanEqual => have >= want,
            VersionConstraint::GreaterThan => have > want,
        },
    }
}

/// A versioned dependency is satisfied by a provide only if the provide is versioned too.
fn provide_satisfies(
    provided: &Option<Version>,
    constraint: &Option<(VersionConstraint, Version)>,
) -> bool {
    match (constraint, provided) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(_), Some(v)) => satisfies(v, constraint),
    }
}

fn show(group: &[Relation]) -> String {
    group
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Returns the packages to add so that `roots` and all their Depends/Pre-Depends hold, given what
/// is installed, sorted by name. A dependency on an installed package that is too old is an error
/// (the base would need an upgrade, which a layer must not do behind dpkg's back).
pub fn resolve<'a>(
    index: &'a [PackageRecord],
    installed: &Installed,
    roots: &[&str],
    arch: &str,
) -> Result<Vec<&'a PackageRecord>> {
    let mut by_name: BTreeMap<&str, Vec<(&PackageRecord, Version)>> = BTreeMap::new();
    let mut providers: BTreeMap<String, Vec<(&PackageRecord, Option<Version>)>> = BTreeMap::new();
    for rec in index.iter().filter(|r| r.arch == arch || r.arch == "all") {
        let v: Version = rec
            .version
            .parse()
            .map_err(|e| anyhow::anyhow!("{} {}: {e}", rec.name, rec.version))?;
        by_name.entry(&rec.name).or_default().push((rec, v));
        for (name, pv) in provides(&rec.provides).with_context(|| rec.name.clone())? {
            providers.entry(name).or_default().push((rec, pv));
        }
    }
    for list in by_name.values_mut() {
        list.sort_by(|a, b| b.1.cmp(&a.1));
    }
    for list in providers.values_mut() {
        list.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    }

    let mut chosen: BTreeMap<String, (&PackageRecord, Version)> = BTreeMap::new();
    let mut queue: VecDeque<(Vec<Relation>, String)> = roots
        .iter()
        .map(|r| {
            (
                vec![Relation {
                    name: r.to_string(),
                    ..Relation::new()
                }],
                "the request".to_string(),
            )
        })
        .collect();
    while let Some((group, by)) = queue.pop_front() {
        let installed_ok = |r: &Relation| {
            installed
                .packages
                .get(&r.name)
                .is_some_and(|v| satisfies(v, &r.version))
                || installed
                    .provides
                    .get(&r.name)
                    .is_some_and(|ps| ps.iter().any(|p| provide_satisfies(p, &r.version)))
        };
        let chosen_ok = |r: &Relation| {
            chosen
                .get(&r.name)
                .is_some_and(|(_, v)| satisfies(v, &r.version))
                || chosen.values().any(|(rec, _)| {
                    provides(&rec.provides)
                        .unwrap_or_default()
                        .iter()
                        .any(|(n, pv)| *n == r.name && provide_satisfies(pv, &r.version))
                })
        };
        if group.iter().any(|r| installed_ok(r) || chosen_ok(r)) {
            continue;
        }
        let mut pick = None;
        for r in &group {
            if let Some(v) = installed.packages.get(&r.name) {
                if group.len() == 1 {
                    bail!(
                        "{by} needs {r}, but the base has {} {v}: it would have to be upgraded",
                        r.name
                    );
                }
                continue;
            }
            let real = by_name
                .get(r.name.as_str())
                .and_then(|l| l.iter().find(|(_, v)| satisfies(v, &r.version)));
            let virt = || {
                providers
                    .get(&r.name)
                    .and_then(|l| l.iter().find(|(_, pv)| provide_satisfies(pv, &r.version)))
            };
            if let Some((rec, v)) = real {
                pick = Some((*rec, v.clone()));
                break;
            }
            if let Some((rec, _)) = virt() {
                let v = by_name[rec.name.as_str()]
                    .iter()
                    .find(|(x, _)| std::ptr::eq(*x, *rec))
                    .unwrap()
                    .1
                    .clone();
                pick = Some((*rec, v));
                break;
            }
        }
        let Some((rec, v)) = pick else {
            bail!(
                "{by} needs {}, which neither the base nor the repository provides",
                show(&group)
            );
        };
        if let Some((other, _)) = chosen.get(&rec.name) {
            bail!(
                "{by} needs {} but {} {} was already chosen",
                show(&group),
                other.name,
                other.version
            );
        }
        chosen.insert(rec.name.clone(), (rec, v));
        for field in [&rec.pre_depends, &rec.depends] {
            for g in relations(field, &rec.name)?.0 {
                queue.push_back((g, format!("{} {}", rec.name, rec.version)));
            }
        }
    }
    Ok(chosen.into_values().map(|(r, _)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Hex;

    fn rec(name: &str, version: &str, arch: &str, depends: &str, provides: &str) -> PackageRecord {
        PackageRecord {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            filename: format!("pool/{name}.deb"),
            size: 1,
            sha256: Sha256Hex::of_bytes(name.as_bytes()),
            depends: depends.into(),
            pre_depends: String::new(),
            provides: provides.into(),
            multi_arch: None,
        }
    }

    fn names(v: &[&PackageRecord]) -> Vec<String> {
        v.iter().map(|r| r.name.clone()).collect()
    }

    fn index() -> Vec<PackageRecord> {
        vec![
            rec("graphviz", "2.42.2-5", "amd64", "libgvc6 (>= 2.42.2), libc6 (>= 2.14)", ""),
            rec("libgvc6", "2.42.2-5", "amd64", "libc6 (>= 2.29), libltdl7 | libltdl-fake, fonts-liberation | ttf-font", ""),
            rec("libgvc6", "2.40.1-1", "amd64", "", ""),
            rec("libltdl7", "2.4.6-15", "amd64", "", ""),
            rec("fonts-liberation", "1:1.07.4-11", "all", "", "ttf-font"),
            rec("file", "1:5.39-3", "amd64", "libmagic1 (= 1:5.39-3)", ""),
            rec("libmagic1", "1:5.39-3", "amd64", "libmagic-mgc (= 1:5.39-3)", ""),
            rec("libmagic-mgc", "1:5.39-3", "amd64", "", ""),
            rec("binutils", "2.35.2-2", "amd64", "binutils-common (= 2.35.2-2), libbinutils (>= 2.35.2-2), binutils-x86-64-linux-gnu", ""),
            rec("binutils-common", "2.35.2-2", "amd64", "", ""),
            rec("libbinutils", "2.35.2-2", "amd64", "", ""),
            rec("binutils-x86-64-linux-gnu", "2.35.2-2", "amd64", "perl:any", ""),
            rec("binutils", "2.35.2-2", "arm64", "", ""),
            rec("jeprof-helper", "1", "amd64", "awk", ""),
            rec("mawk", "1.3.4", "amd64", "", "awk"),
        ]
    }

    fn installed(status: &str) -> Installed {
        Installed::from_status(status).unwrap()
    }

    const BASE: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.31-13\n\n\
Package: perl-base\nStatus: install ok installed\nVersion: 5.32.1-4\nProvides: perlapi-5.32.1\n\n\
Package: perl\nStatus: install ok installed\nVersion: 5.32.1-4\n\n\
Package: libltdl7\nStatus: deinstall ok config-files\nVersion: 2.4.6-15\n";

    #[test]
    fn closure_skips_what_the_base_has_and_follows_alternatives() {
        let idx = index();
        let got = resolve(
            &idx,
            &installed(BASE),
            &["graphviz", "file", "binutils", "perl"],
            "amd64",
        )
        .unwrap();
        assert_eq!(
            names(&got),
            [
                "binutils",
                "binutils-common",
                "binutils-x86-64-linux-gnu",
                "file",
                "fonts-liberation",
                "graphviz",
                "libbinutils",
                "libgvc6",
                "libltdl7",
                "libmagic-mgc",
                "libmagic1"
            ]
        );
        // The newest libgvc6 satisfying (>= 2.42.2) was taken.
        assert_eq!(
            got.iter().find(|r| r.name == "libgvc6").unwrap().version,
            "2.42.2-5"
        );
        // Every package chosen is amd64 or all.
        assert!(got.iter().all(|r| r.arch == "amd64" || r.arch == "all"));
    }

    #[test]
    fn virtual_packages_are_satisfied_by_providers() {
        let idx = index();
        let got = resolve(&idx, &installed(BASE), &["jeprof-helper"], "amd64").unwrap();
        assert_eq!(names(&got), ["jeprof-helper", "mawk"]);
        let with_awk = format!("{BASE}\nPackage: original-awk\nStatus: install ok installed\nVersion: 1\nProvides: awk\n");
        let got = resolve(&idx, &installed(&with_awk), &["jeprof-helper"], "amd64").unwrap();
        assert_eq!(names(&got), ["jeprof-helper"]);
    }

    #[test]
    fn too_old_installed_packages_and_missing_ones_are_errors() {
        let idx = index();
        let old = "Package: libc6\nStatus: install ok installed\nVersion: 2.28-10\n";
        let err = resolve(&idx, &installed(old), &["graphviz"], "amd64")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("libc6 (>= 2.29)") && err.contains("2.28-10") && err.contains("upgraded"),
            "{err}"
        );
        let err = resolve(&idx, &installed(BASE), &["nonexistent"], "amd64")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nonexistent"), "{err}");
    }
}
