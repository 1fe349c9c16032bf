//! `cargo xtask leaks`: the catalogue of known Flink native-memory leaks (`e2e/leaks.toml`),
//! each with the releases it affects, the first fixed ones, its trigger, its workaround and
//! the growth measured in its recorded `e2e` run; with `--flink` (and `--conf`), which of
//! them a release and its configuration are exposed to, before anything runs.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::analyze::sites;
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
        Some(v) => exposure(&leaks, v, conf.as_ref()),
    };
    print!("{text}");
    Ok(())
}

/// Returns what a release (and its configuration) is exposed to, leak by leak, and a last
/// line naming the leaks it is (or may be) exposed to.
fn exposure(leaks: &[&Leak], v: FlinkVersion, conf: Option<&BTreeMap<String, String>>) -> String {
    let checks: Vec<(String, bool)> = leaks.iter().map(|l| check(l, v, conf)).collect();
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

/// Returns the leak's growth measured in its recorded run: the first site of its analysis
/// with the leak's signature, in the report's words (`+365.0 ± 42.9 KiB per restart, 95%
/// [+180.5, +549.5]: grows, R² 0.97`), and where.
fn measured(root: &Path, l: &Leak) -> Option<String> {
    let runs = sites::recorded(&root.join(l.report.as_ref()?)).ok()?;
    runs.iter().find_map(|run| {
        let s = run.sites.iter().find(|s| l.matches(&s.site, &s.chain))?;
        Some(format!(
            "{} at {}",
            sites::growth_text(s, run.growth_per.word()),
            s.site
        ))
    })
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
        // In the unit of the recorded run: FLINK-40327's steady run, per hour.
        let m = measured(&root, cat.get("FLINK-40327").unwrap()).unwrap();
        assert!(m.contains(" MiB per hour, 95% "), "{m}");
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
