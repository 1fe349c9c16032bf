//! `cargo xtask leaks`: the catalogue of known Flink native-memory leaks (`e2e/leaks.toml`),
//! each with the releases it affects, the first fixed ones, its trigger, its workaround and
//! the growth measured in its recorded `e2e` run; with `--flink` (and `--conf`), which of
//! them a release and its configuration are exposed to, before anything runs.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalogue::{self, Affects, Exposed, Leak};
use crate::flink_version::FlinkVersion;

#[derive(Debug, Clone, clap::Args)]
pub struct LeaksArgs {
    /// Only this leak (like FLINK-39753).
    pub id: Option<String>,
    /// The Flink release to check (like 2.2.1): which known leaks it has.
    #[arg(long)]
    pub flink: Option<FlinkVersion>,
    /// The deployment's Flink configuration (conf/config.yaml, or conf/flink-conf.yaml
    /// before 2.0; nested or flat keys): which known leaks it triggers. Needs --flink.
    #[arg(long, requires = "flink")]
    pub conf: Option<PathBuf>,
}

pub fn run(args: LeaksArgs) -> Result<()> {
    let cat = catalogue::load_default()?;
    let conf = match &args.conf {
        Some(p) => Some(read_conf(p)?),
        None => None,
    };
    let root = crate::project::root();
    let leaks: Vec<&Leak> = match &args.id {
        Some(id) => vec![cat.get(id)?],
        None => cat.leak.iter().collect(),
    };
    let text = match args.flink {
        None => leaks
            .iter()
            .map(|l| listing(l, measured(&root, l).as_deref()))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(v) => {
            let checks: Vec<(String, bool)> =
                leaks.iter().map(|l| check(l, v, conf.as_ref())).collect();
            let hit: Vec<&str> = leaks
                .iter()
                .zip(&checks)
                .filter(|(_, (_, hit))| *hit)
                .map(|(l, _)| l.id.as_str())
                .collect();
            let what = match conf {
                Some(_) => "the configuration is or may be exposed to",
                None => "the release has",
            };
            let lines: Vec<&str> = checks.iter().map(|(t, _)| t.as_str()).collect();
            format!(
                "{}\nFlink {v}: {what} {} of the {} known leak(s){}\n",
                lines.join("\n"),
                hit.len(),
                leaks.len(),
                if hit.is_empty() {
                    String::new()
                } else {
                    format!(": {}", hit.join(", "))
                }
            )
        }
    };
    print!("{text}");
    Ok(())
}

/// Reads a Flink configuration file into flattened keys.
fn read_conf(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (--conf takes the deployment's conf/config.yaml or conf/flink-conf.yaml)",
            path.display()
        )
    })?;
    catalogue::flatten_conf(&text, path)
}

/// Returns a leak's entry in the listing.
fn listing(l: &Leak, measured: Option<&str>) -> String {
    let reproduced = match (measured, &l.report) {
        (Some(m), Some(r)) => format!("reproduced: {m} ({r})"),
        _ => "reproduced: not yet".to_string(),
    };
    let runs: Vec<String> = [
        (&l.scenario, "--scenario"),
        (&l.control, "its control --scenario"),
        (&l.fixed_run, "on a fixed release --scenario"),
    ]
    .into_iter()
    .filter_map(|(name, what)| Some(format!("{what} {}", name.as_ref()?)))
    .collect();
    let runs = if runs.is_empty() {
        String::new()
    } else {
        format!("\n  e2e: {}", runs.join(", "))
    };
    format!(
        "{} — {}\n  {}\n  affected: {}; first fixed: {} ({})\n  trigger: {}\n  workaround: {}\n  \
         grows per {}: {}\n  checked: {}\n  {reproduced}{runs}\n  {}\n",
        l.id,
        l.title,
        l.what,
        l.affected_text(),
        l.fixed_text(),
        l.fix,
        l.trigger,
        l.workaround,
        l.growth.word(),
        l.expected,
        l.checked,
        l.link
    )
}

/// Returns what a release (and its configuration) is exposed to, for one leak, and whether
/// it is (or may be).
fn check(l: &Leak, v: FlinkVersion, conf: Option<&BTreeMap<String, String>>) -> (String, bool) {
    let head = format!("{} ({})", l.id, l.title);
    let has = match l.affects(v) {
        Affects::Yes => format!("Flink {v} has it (affected: {})", l.affected_text()),
        Affects::Fixed(f) => {
            let t = format!("{head}: not exposed: Flink {v} has its fix (first fixed in {f})\n");
            return (t, false);
        }
        Affects::Before => {
            let t = format!(
                "{head}: not exposed: Flink {v} predates it (affected: {})\n",
                l.affected_text()
            );
            return (t, false);
        }
        Affects::Unchecked => format!(
            "Flink {v} is past the last release checked (affected: {}; first fixed: {}): \
             assume it has it",
            l.affected_text(),
            l.fixed_text()
        ),
    };
    let Some(conf) = conf else {
        let t = format!(
            "{head}: {has}; exposed when {}\n  workaround: {}\n",
            l.trigger, l.workaround
        );
        return (t, true);
    };
    match l.exposure(conf) {
        Exposed::Yes(why) => (
            format!(
                "{head}: EXPOSED: {has}, and the configuration triggers it ({why})\n  \
                 workaround: {}\n  {}\n",
                l.workaround, l.link
            ),
            true,
        ),
        Exposed::Depends(why) => (
            format!(
                "{head}: maybe: {has}; {why}\n  workaround: {}\n",
                l.workaround
            ),
            true,
        ),
        Exposed::No(why) => (format!("{head}: not exposed: {has}, but {why}\n"), false),
    }
}

/// Returns the leak's growth measured in its recorded run: the fastest growing site of the
/// profiling run that has its signature, `+365.0 ± 42.9 KiB per restart (95% [+180.5,
/// +549.5], R² 0.97)`.
fn measured(root: &Path, l: &Leak) -> Option<String> {
    let path = root.join(l.report.as_ref()?).join("report.json");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    report["runs"]
        .as_array()?
        .iter()
        .filter_map(|run| run["analysis"]["sites"].as_array())
        .flatten()
        .filter(|s| {
            let chain: Vec<String> = s["chain"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|f| f.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            l.matches(s["site"].as_str().unwrap_or_default(), &chain)
        })
        .filter_map(|s| {
            let g = &s["growth"];
            // MiB from 10 MiB on, as the reports write it; KiB below.
            let slope = g["slope"].as_f64()?;
            let (scale, unit) = if slope.abs() >= 10.0 * 1024.0 * 1024.0 {
                (1024.0 * 1024.0, "MiB")
            } else {
                (1024.0, "KiB")
            };
            let x = |v: &serde_json::Value| v.as_f64().map(|b| b / scale);
            let (lo, hi) = (x(&g["ci95"][0])?, x(&g["ci95"][1])?);
            Some(format!(
                "{:+.1} ± {:.1} {unit} per {} (95% [{lo:+.1}, {hi:+.1}], R² {:.2}) at {}",
                slope / scale,
                x(&g["stderr"])?,
                l.growth.word(),
                g["r2"].as_f64()?,
                s["site"].as_str()?
            ))
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_shows_the_recorded_growth_and_the_check_says_why() {
        let cat = catalogue::load_default().unwrap();
        let root = crate::project::root();
        let l = cat.get("FLINK-39923").unwrap();
        let m = measured(&root, l).unwrap();
        assert!(m.starts_with("+365.0 ± 42.9 KiB per restart"), "{m}");
        let text = listing(l, Some(&m));
        assert!(
            text.contains("affected: 2.0.0–2.3.0; first fixed: none released"),
            "{text}"
        );
        let v: FlinkVersion = "2.2.1".parse().unwrap();
        let conf = catalogue::flatten_conf(
            "state.backend.type: rocksdb\nstate.backend.rocksdb.metrics.stall-micros: true\n",
            Path::new("c"),
        )
        .unwrap();
        let (c, hit) = check(l, v, Some(&conf));
        assert!(hit);
        assert!(
            c.starts_with(
                "FLINK-39923 (RocksDB Statistics never closed): EXPOSED: Flink 2.2.1 has it"
            ),
            "{c}"
        );
        // Every scenario the catalogue names exists.
        let scenarios = crate::e2e::scenario::load_default().unwrap();
        for l in &cat.leak {
            for name in [&l.scenario, &l.control, &l.fixed_run]
                .into_iter()
                .flatten()
            {
                assert!(scenarios.get(name).is_ok(), "{}: no scenario {name}", l.id);
            }
        }
        let old: FlinkVersion = "1.20.5".parse().unwrap();
        let (c, hit) = check(l, old, Some(&conf));
        assert!(
            !hit && c.contains("not exposed: Flink 1.20.5 predates it"),
            "{c}"
        );
    }
}
