//! The catalogue of known Flink native-memory leaks (`e2e/leaks.toml`): per leak the
//! releases it affects and the first fixed ones, its trigger and workaround, the
//! configuration that exposes a deployment to it ([`Leak::exposure`]) and the jeprof
//! signature that recognises its growth ([`Leak::matches`]).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::flink_version::FlinkVersion;

/// `e2e/leaks.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Catalogue {
    pub leak: Vec<Leak>,
}

/// What a leak grows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum GrowsWith {
    /// Each keyed-backend rebuild (failover restart, cancel and resubmit, rescale).
    Restart,
    /// Time under steady load.
    Hour,
}

impl GrowsWith {
    pub(crate) fn word(self) -> &'static str {
        match self {
            GrowsWith::Restart => "restart",
            GrowsWith::Hour => "hour",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Leak {
    pub id: String,
    pub title: String,
    pub link: String,
    pub what: String,
    /// Inclusive `[first, last]` ranges of affected releases.
    pub affected: Vec<[String; 2]>,
    /// The first fixed release of each line that has one.
    pub fixed_in: Vec<String>,
    pub fix: String,
    pub checked: String,
    pub trigger: String,
    pub workaround: String,
    pub growth: GrowsWith,
    pub expected: String,
    #[serde(default)]
    pub scenario: Option<String>,
    #[serde(default)]
    pub control: Option<String>,
    /// The leak's scenario on a release with its fix.
    #[serde(default)]
    pub fixed_run: Option<String>,
    /// The recorded run, relative to the project root.
    #[serde(default)]
    pub report: Option<String>,
    pub exposure: Exposure,
    pub signature: Signature,
}

/// What the Flink configuration must hold for the leak to happen.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exposure {
    #[serde(default)]
    pub backend: Vec<String>,
    #[serde(default)]
    pub any_true: Vec<String>,
    #[serde(default)]
    pub positive: Vec<String>,
    #[serde(default)]
    pub job: Option<String>,
}

/// How the leak's growth looks in jeprof.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signature {
    pub site: String,
    #[serde(default)]
    pub chain: Option<String>,
}

/// Whether a release has a leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Affects {
    /// It is in an affected range.
    Yes,
    /// It has the fix (the first fixed release of its line, or a later one).
    Fixed(String),
    /// It predates the leak.
    Before,
    /// It is past the last affected release of its line, with no fix named for that line
    /// (a later release than the catalogue has checked).
    Unchecked,
}

/// Whether a deployment is exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exposed {
    /// Yes, for the reason given.
    Yes(String),
    /// No, for the reason given.
    No(String),
    /// It depends on what the configuration cannot tell.
    Depends(String),
}

fn version(v: &str) -> FlinkVersion {
    // Checked when the catalogue is loaded.
    v.parse().unwrap_or(FlinkVersion {
        major: 0,
        minor: 0,
        patch: 0,
    })
}

impl Catalogue {
    /// Reads and checks `path`: every version parses, every pattern compiles, ids are unique.
    pub(crate) fn load(path: &Path) -> Result<Catalogue> {
        let c: Catalogue = crate::spec::read_checked_toml(path, "the leak catalogue")?;
        let mut seen = std::collections::BTreeSet::new();
        for l in &c.leak {
            let ctx = || format!("{}: leak {}", path.display(), l.id);
            if !seen.insert(&l.id) {
                bail!("{}: listed twice", ctx());
            }
            for v in l.affected.iter().flatten().chain(&l.fixed_in) {
                v.parse::<FlinkVersion>().with_context(ctx)?;
            }
            for [a, b] in &l.affected {
                if version(a) > version(b) {
                    bail!("{}: affected range [{a}, {b}] runs backwards", ctx());
                }
            }
            for p in std::iter::once(&l.signature.site).chain(&l.signature.chain) {
                regex::Regex::new(p).with_context(ctx)?;
            }
        }
        Ok(c)
    }

    /// Returns the leak called `id` (case-insensitive), or an error listing them.
    pub(crate) fn get(&self, id: &str) -> Result<&Leak> {
        self.leak
            .iter()
            .find(|l| l.id.eq_ignore_ascii_case(id))
            .with_context(|| {
                format!(
                    "no leak `{id}` in the catalogue; it has: {}",
                    self.leak
                        .iter()
                        .map(|l| l.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// Loads `e2e/leaks.toml` of this checkout.
pub(crate) fn load_default() -> Result<Catalogue> {
    Catalogue::load(&crate::project::root().join("e2e/leaks.toml"))
}

impl Leak {
    /// Returns the affected releases for people: `1.20.0–1.20.4, 2.0.0–2.2.1`.
    pub(crate) fn affected_text(&self) -> String {
        self.affected
            .iter()
            .map(|[a, b]| {
                if a == b {
                    a.clone()
                } else {
                    format!("{a}–{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Returns the first fixed releases for people, or `none released`.
    pub(crate) fn fixed_text(&self) -> String {
        if self.fixed_in.is_empty() {
            "none released".into()
        } else {
            self.fixed_in.join(", ")
        }
    }

    /// Returns whether release `v` has the leak.
    pub(crate) fn affects(&self, v: FlinkVersion) -> Affects {
        let line = |x: FlinkVersion| (x.major, x.minor);
        if self
            .affected
            .iter()
            .any(|[a, b]| version(a) <= v && v <= version(b))
        {
            return Affects::Yes;
        }
        if let Some(f) = self.fixed_in.iter().find(|f| {
            let f = version(f);
            line(f) == line(v) && f <= v
        }) {
            return Affects::Fixed(f.clone());
        }
        let first = self.affected.iter().map(|[a, _]| version(a)).min();
        if first.is_none_or(|first| v < first) {
            return Affects::Before;
        }
        // A release of a later line than any affected one is fixed when its line, or an
        // earlier line past the affected ones, has a fixed release at or below it.
        let last = self.affected.iter().map(|[_, b]| version(b)).max();
        if let Some(f) = self
            .fixed_in
            .iter()
            .filter(|f| last.is_some_and(|l| version(f) > l) && version(f) <= v)
            .max_by_key(|f| version(f))
        {
            return Affects::Fixed(f.clone());
        }
        Affects::Unchecked
    }

    /// Returns whether a deployment with this flattened configuration is exposed.
    pub(crate) fn exposure(&self, conf: &BTreeMap<String, String>) -> Exposed {
        let e = &self.exposure;
        if !e.backend.is_empty() {
            let key = ["state.backend.type", "state.backend"]
                .into_iter()
                .find(|k| conf.contains_key(*k));
            let want = e.backend.join(" or ");
            match key {
                None => {
                    return Exposed::Depends(format!(
                        "the configuration names no state backend; exposed if the job sets {want} \
                         in code"
                    ))
                }
                Some(k) => {
                    let v = conf[k].trim().to_ascii_lowercase();
                    let named = e.backend.contains(&v)
                        // A 1.x class name, like org.apache.flink.contrib.streaming.state.RocksDBStateBackendFactory.
                        || e.backend.iter().any(|b| v.contains(b.as_str()));
                    if !named {
                        return Exposed::No(format!("{k} is {v}, not {want}"));
                    }
                }
            }
        }
        let mut why: Vec<String> = Vec::new();
        if !e.any_true.is_empty() {
            let on: Vec<&String> = e
                .any_true
                .iter()
                .filter(|k| {
                    conf.get(*k)
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
                })
                .collect();
            if on.is_empty() {
                return Exposed::No(format!(
                    "none of its {} options is true (such as {})",
                    e.any_true.len(),
                    e.any_true[0]
                ));
            }
            why.push(format!(
                "{} true",
                on.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !e.positive.is_empty() {
            let on: Vec<String> = e
                .positive
                .iter()
                .filter_map(|k| {
                    let v = conf.get(k)?;
                    above_zero(v).then(|| format!("{k} is {v}"))
                })
                .collect();
            if on.is_empty() {
                return Exposed::No(format!(
                    "{} is 0 or unset (the default, off)",
                    e.positive.join(", ")
                ));
            }
            why.extend(on);
        }
        if let Some(b) = e.backend.first().filter(|_| why.is_empty()) {
            why.push(format!("the state backend is {b}"));
        }
        match &e.job {
            Some(j) => Exposed::Depends(format!("{}; exposed if {j}", why.join(", "))),
            None => Exposed::Yes(why.join(", ")),
        }
    }

    /// Returns whether a site's frame has the leak's signature (its chain aside).
    pub(crate) fn matches_site(&self, site: &str) -> bool {
        regex::Regex::new(&self.signature.site).is_ok_and(|s| s.is_match(site))
    }

    /// Returns whether a growing site with this call chain (site first) has the leak's
    /// signature.
    pub(crate) fn matches(&self, site: &str, chain: &[String]) -> bool {
        let re = |p: &str| regex::Regex::new(p).ok();
        if !self.matches_site(site) {
            return false;
        }
        match self.signature.chain.as_deref().and_then(re) {
            None => true,
            Some(c) => chain.iter().any(|f| c.is_match(f)),
        }
    }
}

/// Returns whether an option's value is above zero: a number, or a duration with its unit
/// (`10 s`, `1min`, `500ms`).
fn above_zero(v: &str) -> bool {
    let digits: String = v
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse::<f64>().is_ok_and(|n| n > 0.0)
}

/// Flattens a Flink configuration file (1.x's flat `flink-conf.yaml`, 2.x's nested
/// `config.yaml`, or a mix) into `key → value` with dotted keys.
pub(crate) fn flatten_conf(text: &str, path: &Path) -> Result<BTreeMap<String, String>> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).with_context(|| {
        format!(
            "{} is not YAML: give the Flink configuration file (conf/config.yaml, or \
             conf/flink-conf.yaml before 2.0)",
            path.display()
        )
    })?;
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    Ok(out)
}

fn flatten(prefix: &str, v: &serde_yaml_ng::Value, out: &mut BTreeMap<String, String>) {
    use serde_yaml_ng::Value;
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = match k {
                    Value::String(s) => s.clone(),
                    other => scalar(other),
                };
                flatten(&join(&k), v, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

fn scalar(v: &serde_yaml_ng::Value) -> String {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> FlinkVersion {
        s.parse().unwrap()
    }

    #[test]
    fn the_catalogue_loads_and_places_releases() {
        let c = load_default().unwrap();
        let l = c.get("flink-39753").unwrap();
        assert_eq!(l.affects(v("1.19.3")), Affects::Before);
        assert_eq!(l.affects(v("1.20.0")), Affects::Yes);
        assert_eq!(l.affects(v("1.20.5")), Affects::Fixed("1.20.5".into()));
        assert_eq!(l.affects(v("2.2.1")), Affects::Yes);
        assert_eq!(l.affects(v("2.3.0")), Affects::Fixed("2.3.0".into()));
        assert_eq!(l.affects(v("2.4.0")), Affects::Fixed("2.3.0".into()));
        let l = c.get("FLINK-21986").unwrap();
        assert_eq!(l.affects(v("1.10.3")), Affects::Yes);
        assert_eq!(l.affects(v("1.11.4")), Affects::Fixed("1.11.4".into()));
        assert_eq!(l.affects(v("1.12.2")), Affects::Yes);
        assert_eq!(l.affects(v("1.20.1")), Affects::Fixed("1.13.0".into()));
        let l = c.get("FLINK-39923").unwrap();
        assert_eq!(l.affects(v("1.20.5")), Affects::Before);
        assert_eq!(l.affects(v("2.3.0")), Affects::Yes);
        assert_eq!(l.affects(v("2.4.0")), Affects::Unchecked);
        let e = c.get("FLINK-1").unwrap_err().to_string();
        assert!(e.contains("FLINK-39923, FLINK-39753"), "{e}");
    }

    #[test]
    fn exposure_reads_nested_and_flat_configuration() {
        let c = load_default().unwrap();
        let nested = "state:\n  backend:\n    type: rocksdb\n    rocksdb:\n      metrics:\n        block-cache-hit: true\n";
        let conf = flatten_conf(nested, Path::new("config.yaml")).unwrap();
        assert_eq!(
            conf["state.backend.rocksdb.metrics.block-cache-hit"],
            "true"
        );
        let l = c.get("FLINK-39923").unwrap();
        assert!(matches!(l.exposure(&conf), Exposed::Yes(w) if w.contains("block-cache-hit true")));
        let flat =
            "state.backend: rocksdb\nstate.backend.rocksdb.manual-compaction.min-interval: 10 s\n";
        let conf = flatten_conf(flat, Path::new("flink-conf.yaml")).unwrap();
        assert!(
            matches!(l.exposure(&conf), Exposed::No(w) if w.contains("none of its 11 options"))
        );
        let compactor = c.get("FLINK-39753").unwrap();
        assert!(matches!(compactor.exposure(&conf), Exposed::Yes(w) if w.contains("is 10 s")));
        let off = flatten_conf(
            "state.backend.type: rocksdb\nstate.backend.rocksdb.manual-compaction.min-interval: 0\n",
            Path::new("c"),
        )
        .unwrap();
        assert!(matches!(compactor.exposure(&off), Exposed::No(_)));
        let hashmap = flatten_conf("state.backend.type: hashmap\n", Path::new("c")).unwrap();
        assert!(matches!(compactor.exposure(&hashmap), Exposed::No(w) if w.contains("hashmap")));
        let none = BTreeMap::new();
        assert!(matches!(compactor.exposure(&none), Exposed::Depends(_)));
        let forst = flatten_conf("state.backend.type: forst\n", Path::new("c")).unwrap();
        let e = c.get("FLINK-40327").unwrap().exposure(&forst);
        assert!(
            matches!(&e, Exposed::Depends(w) if w.contains("enableAsyncState")),
            "{e:?}"
        );
        assert!(flatten_conf("a: [", Path::new("bad.yaml"))
            .unwrap_err()
            .to_string()
            .contains("bad.yaml is not YAML"));
    }

    #[test]
    fn signatures_need_the_site_and_a_frame_of_the_chain() {
        let c = load_default().unwrap();
        let l = c.get("FLINK-39923").unwrap();
        let chain: Vec<String> = [
            "rocksdb::port::cacheline_aligned_alloc",
            "rocksdb::CoreLocalArray::CoreLocalArray",
            "rocksdb::StatisticsImpl::StatisticsImpl",
        ]
        .map(String::from)
        .to_vec();
        assert!(l.matches("rocksdb::port::cacheline_aligned_alloc", &chain));
        // A cached block's memory is another leak's signature.
        let block = [
            "rocksdb::UncompressBlockData",
            "rocksdb::UncompressSerializedBlock",
            "rocksdb::BlockFetcher::ReadBlockContents",
        ]
        .map(String::from)
        .to_vec();
        assert!(!l.matches("rocksdb::UncompressBlockData", &block));
        let compactor = c.get("FLINK-39753").unwrap();
        assert!(compactor.matches("rocksdb::UncompressBlockData", &block));
        assert!(!compactor.matches("rocksdb::UncompressBlockData", &chain));
        assert!(!l.matches("os::malloc", &chain));
        assert!(
            above_zero("1min") && above_zero("0.5 s") && !above_zero("0") && !above_zero("0 ms")
        );
    }
}
