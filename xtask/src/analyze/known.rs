//! The growing sites held against the catalogue of known leaks (`e2e/leaks.toml`): a site
//! that grows by what the verdict calls a leak and has a catalogued leak's signature, on a
//! release that leak affects, is named with its evidence, releases, fix and workaround; one
//! that matches nothing is reported as unknown, with its call chain, for reporting upstream.

use anyhow::Result;
use serde::Serialize;

use super::sites::{self, Per, Site};
use super::verdict::{material, verdict};
use crate::bundle::Bundle;
use crate::catalogue::{Affects, Catalogue, Leak};
use crate::flink_version::FlinkVersion;
use crate::progress;

/// Returns the verdict line, with the known leak its leading site is (or that it is none),
/// and what the catalogue says of every site that grows like a leak, for the image's Flink.
pub(crate) fn judge(sites: &[Site], per: Per, bundle: &Bundle) -> Result<(String, Recognition)> {
    let cat = crate::catalogue::load_default()?;
    let r = recognise(&cat, sites, per, image_flink(bundle));
    let v = verdict(sites, per);
    let about = sites
        .first()
        .filter(|s| s.grows())
        .and_then(|s| r.about(&s.site));
    let v = match about {
        // Slower than the bar here, and still a leak the catalogue knows.
        Some(a) if v.starts_with("no leak: ") => format!("{v}; yet it has the signature of {a}"),
        Some(a) => format!("{v}; {a}"),
        None => v,
    };
    Ok((v, r))
}

/// Returns the image's Flink release, from its flink-dist jar (none, with a note, when it
/// has none that names one).
fn image_flink(bundle: &Bundle) -> Option<FlinkVersion> {
    let v = bundle
        .flink_dist()
        .and_then(|d| crate::flink_version::flink_version(&d));
    match v {
        Ok(v) => Some(v),
        Err(e) => {
            progress::note(format!(
                "known leaks are matched without the release: {e:#}"
            ));
            None
        }
    }
}

/// A known leak recognised in the dumps.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KnownLeak {
    pub id: String,
    pub title: String,
    pub link: String,
    /// The evidence: the growing site, its growth and its call chain.
    pub site: String,
    pub growth: String,
    pub chain: Vec<String>,
    pub affected: String,
    pub fixed_in: String,
    pub fix: String,
    pub workaround: String,
    /// Why the release could not be placed (the image's Flink unknown, or past the
    /// releases checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A growing site that matches no known leak on this release.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UnknownSite {
    pub site: String,
    pub growth: String,
    pub chain: Vec<String>,
    /// A catalogued leak whose frames it has, but whose fix this release carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the catalogue says of the growing sites.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Recognition {
    pub known: Vec<KnownLeak>,
    pub unknown: Vec<UnknownSite>,
}

impl Recognition {
    /// Returns what the verdict adds about its leading site: the known leak it is, or that
    /// it is none of them.
    pub(crate) fn about(&self, site: &str) -> Option<String> {
        if let Some(k) = self.known.iter().find(|k| k.site == site) {
            return Some(format!(
                "known leak {} ({}; affected {}, first fixed: {}; workaround: {})",
                k.id, k.title, k.affected, k.fixed_in, k.workaround
            ));
        }
        let u = self.unknown.iter().find(|u| u.site == site)?;
        Some(match &u.note {
            Some(n) => format!(
                "no known leak on this release ({n}); report it upstream with its call chain"
            ),
            None => "it matches no known leak: report it upstream with its call chain (sites.json)"
                .into(),
        })
    }
}

/// Holds every site that grows steadily (its 95% interval above zero) against the
/// catalogue, for the image's Flink when known: one with a catalogued leak's signature, on a
/// release that leak affects, is named whatever its size (the signature is the evidence);
/// any other is reported as unknown only when it grows like a leak (its interval's lower
/// end at or above what the verdict calls material; any steady growth per dump).
pub(crate) fn recognise(
    cat: &Catalogue,
    sites: &[Site],
    per: Per,
    flink: Option<FlinkVersion>,
) -> Recognition {
    let bar = material(per).unwrap_or(0.0);
    let mut r = Recognition::default();
    for s in sites.iter().filter(|s| s.grows()) {
        let growth = sites::growth_text(s, per.word());
        // A site whose chain jeprof did not name (`--collapsed` spells some frames apart
        // from `--text`) belongs to a leak already named by its frame alone.
        let matching: Vec<&Leak> = cat
            .leak
            .iter()
            .filter(|l| {
                l.matches(&s.site, &s.chain)
                    || (s.chain.is_empty()
                        && r.known.iter().any(|k| k.id == l.id)
                        && l.matches_site(&s.site))
            })
            .collect();
        let mut fixed_here = Vec::new();
        let mut named = false;
        for l in matching {
            let note = match flink.map(|v| (v, l.affects(v))) {
                None => Some(
                    "the image's Flink release is unknown: check it against the affected releases"
                        .to_string(),
                ),
                Some((_, Affects::Yes)) => None,
                Some((v, Affects::Unchecked)) => Some(format!(
                    "Flink {v} is past the releases checked; it is likely to have it"
                )),
                Some((v, Affects::Fixed(f))) => {
                    fixed_here.push(format!(
                        "it has the frames of {}, whose fix Flink {v} carries (first fixed in {f})",
                        l.id
                    ));
                    continue;
                }
                Some((v, Affects::Before)) => {
                    fixed_here.push(format!(
                        "it has the frames of {}, which Flink {v} predates",
                        l.id
                    ));
                    continue;
                }
            };
            named = true;
            // Its first (steadiest) site is its evidence; another of its sites is no news.
            if r.known.iter().any(|k| k.id == l.id) {
                continue;
            }
            r.known.push(KnownLeak {
                id: l.id.clone(),
                title: l.title.clone(),
                link: l.link.clone(),
                site: s.site.clone(),
                growth: growth.clone(),
                chain: s.chain.clone(),
                affected: l.affected_text(),
                fixed_in: l.fixed_text(),
                fix: l.fix.clone(),
                workaround: l.workaround.clone(),
                note,
            });
        }
        if !named && s.at_least() >= bar {
            r.unknown.push(UnknownSite {
                site: s.site.clone(),
                growth,
                chain: s.chain.clone(),
                note: (!fixed_here.is_empty()).then(|| fixed_here.join("; ")),
            });
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the sites of a recorded run's profiling analysis.
    fn recorded(dir: &str) -> Vec<Site> {
        let runs = sites::recorded(&crate::project::root().join(dir)).unwrap();
        assert_eq!(runs.len(), 1, "{dir}: one profiling run");
        runs.into_iter().next().unwrap().sites
    }

    #[test]
    fn a_recorded_leak_is_named_and_a_clean_run_names_nothing() {
        let cat = crate::catalogue::load_default().unwrap();
        let v = |s: &str| Some(s.parse::<FlinkVersion>().unwrap());
        let leak = recorded("e2e/report/flink-39923");
        let r = recognise(&cat, &leak, Per::Restart, v("2.2.1"));
        assert_eq!(r.known.len(), 1, "{r:?}");
        let k = &r.known[0];
        assert_eq!(
            (k.id.as_str(), k.site.as_str()),
            ("FLINK-39923", "rocksdb::port::cacheline_aligned_alloc")
        );
        assert!(
            k.growth.starts_with("+365.0 ± 42.9 KiB per restart"),
            "{}",
            k.growth
        );
        assert!(r.unknown.is_empty(), "{r:?}");
        let about = r.about(&k.site).unwrap();
        assert!(
            about.starts_with(
                "known leak FLINK-39923 (RocksDB Statistics never closed; affected 2.0.0–2.3.0"
            ),
            "{about}"
        );
        // The same growth on a release the leak predates is not called FLINK-39923.
        let r = recognise(&cat, &leak, Per::Restart, v("1.20.5"));
        assert!(r.known.is_empty());
        assert!(r.unknown[0]
            .note
            .as_deref()
            .unwrap()
            .contains("which Flink 1.20.5 predates"));
        // An unknown release still names it, saying so.
        let r = recognise(&cat, &leak, Per::Restart, None);
        assert!(r.known[0].note.is_some());
        // FLINK-40327's options on 2.2.1 (its steady run, per hour), named though under the
        // bar of a leak per hour.
        let options = recorded("e2e/report/flink-40327");
        let r = recognise(&cat, &options, Per::Hour, v("2.2.1"));
        let ids: Vec<&str> = r.known.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["FLINK-40327"], "{r:?}");
        assert!(r.unknown.is_empty(), "{r:?}");
        assert!(recognise(&cat, &options, Per::Hour, v("1.20.5"))
            .known
            .is_empty());
        // FLINK-39753's block caches on 2.2.1, named; the same sites on 2.3.0 are not.
        let compactor = recorded("e2e/report/flink-39753");
        let r = recognise(&cat, &compactor, Per::Restart, v("2.2.1"));
        let ids: Vec<&str> = r.known.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["FLINK-39753"], "{r:?}");
        assert_eq!(r.known[0].site, "rocksdb::UncompressBlockData");
        assert!(r.unknown.is_empty(), "its other sites are no news: {r:?}");
        let r = recognise(&cat, &compactor, Per::Restart, v("2.3.0"));
        assert!(r.known.is_empty(), "{r:?}");
        // FLINK-21986's block caches on 1.10.3, named; the same sites on 1.11.4 are not.
        let caches = recorded("e2e/report/flink-21986");
        let r = recognise(&cat, &caches, Per::Restart, v("1.10.3"));
        let ids: Vec<&str> = r.known.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["FLINK-21986"], "{r:?}");
        assert!(r.known[0].site.starts_with("rocksdb::Uncompress"), "{r:?}");
        let r = recognise(&cat, &caches, Per::Restart, v("1.11.4"));
        assert!(r.known.is_empty(), "{r:?}");
        let note = r.unknown[0].note.as_deref().unwrap();
        assert!(
            note.contains("FLINK-21986, whose fix Flink 1.11.4 carries"),
            "{note}"
        );
        // The controls, the fixed releases and the recipe's 1.10.3 run: nothing grows like
        // a leak.
        for (dir, flink) in [
            ("e2e/report/flink-39923-control", "2.2.1"),
            ("e2e/report", "1.10.3"),
            ("e2e/report/flink-39753-control", "2.2.1"),
            ("e2e/report/flink-39753-fixed", "2.3.0"),
            // FLINK-39753 on 1.20.4: a GC frees the leaked options (finalizers).
            ("e2e/report/flink-39753-1.20.4", "1.20.4"),
        ] {
            let r = recognise(&cat, &recorded(dir), Per::Restart, v(flink));
            assert!(r.known.is_empty() && r.unknown.is_empty(), "{dir}: {r:?}");
        }
        // FLINK-40327's control, per hour of its steady load: the block cache filling is
        // no leak.
        let control = recorded("e2e/report/flink-40327-control");
        let r = recognise(&cat, &control, Per::Hour, v("2.2.1"));
        assert!(r.known.is_empty() && r.unknown.is_empty(), "{r:?}");
    }

    #[test]
    fn a_growing_site_without_a_signature_is_unknown() {
        let cat = crate::catalogue::load_default().unwrap();
        let xy: Vec<(f64, f64)> = (0..12)
            .map(|i| {
                (
                    i as f64,
                    1e6 + 800_000.0 * i as f64 + if i % 2 == 0 { 5e3 } else { -5e3 },
                )
            })
            .collect();
        let s = Site {
            site: "my::Cache::Insert".into(),
            first_bytes: 1_000_000,
            last_bytes: 9_800_000,
            growth: crate::fit::fit(&xy),
            chain: vec!["my::Cache::Insert".into(), "Java_my_Cache_put".into()],
        };
        let r = recognise(&cat, &[s], Per::Restart, Some("2.2.1".parse().unwrap()));
        assert!(r.known.is_empty());
        assert_eq!(r.unknown[0].chain[1], "Java_my_Cache_put");
        assert!(r
            .about("my::Cache::Insert")
            .unwrap()
            .contains("matches no known leak"));
    }
}
