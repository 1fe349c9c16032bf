//! The e2e scenarios (`e2e/scenarios.toml`): the job's Flink configuration per API
//! generation, and per scenario the Flink versions it applies to, the restart mode and
//! pace, the profiling rates and what the report must show (a pattern among the growing
//! sites, or a leak site that grows linearly, or, for a control, does not). [`resolve`]
//! merges a scenario with the command line's flags into the [`Plan`] of a run.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::analyze::sites::Per;
use crate::flink_version::FlinkVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The job throws every --fail-every-ms; Flink restarts it in the same TaskManager.
    Injected,
    /// Every --fail-every-ms the job is cancelled over REST and submitted again.
    CancelResubmit,
    /// Every --fail-every-ms the TaskManager is killed (SIGKILL) and replaced.
    TmKill,
    /// No restarts: the job runs for --minutes under its steady load, a sample every
    /// --fail-every-ms, and growth is per hour (a leak per read, not per restart).
    Steady,
}

impl Mode {
    /// Returns the unit of a run's growth: per restart, or per hour in `steady` mode.
    pub(crate) fn per(self) -> Per {
        if self == Mode::Steady {
            Per::Hour
        } else {
            Per::Restart
        }
    }
}

/// `e2e/scenarios.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenarios {
    pub common: Common,
    pub scenario: BTreeMap<String, Scenario>,
}

/// The Flink configuration of every run, by the file the release reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Common {
    /// Releases before 1.19: the flat `conf/flink-conf.yaml`.
    pub flink_conf_yaml: BTreeMap<String, String>,
    /// 1.19 on: the standard YAML `conf/config.yaml`, where a flat key beside a nested one
    /// (`state.backend` and `state.backend.rocksdb.*`) makes the file unreadable.
    pub config_yaml: BTreeMap<String, String>,
}

/// The first release whose distribution reads `conf/config.yaml` (FLIP-366).
const FIRST_CONFIG_YAML: FlinkVersion = FlinkVersion {
    major: 1,
    minor: 19,
    patch: 0,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    pub about: String,
    /// `[lowest, newest]` Flink version it applies to.
    pub flink: [String; 2],
    pub mode: Mode,
    #[serde(default)]
    pub restarts: u64,
    /// `steady` mode: how long the job runs.
    #[serde(default)]
    pub minutes: u64,
    pub fail_every_ms: u64,
    pub lg_prof_interval: u32,
    pub lg_prof_sample: u32,
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
    /// Arguments the job gets besides its pace (`--async-state true`).
    #[serde(default)]
    pub job_args: Vec<String>,
    pub expect: Expect,
}

/// What the report must show.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// A frame pattern among the growing sites of the first-to-last difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_diff: Option<String>,
    /// The leak's allocation site, a pattern over the site's frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The leak's expected growth per restart (on a machine of at most 8 CPUs where it
    /// scales with RocksDB's core slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_restart: Option<u64>,
    /// `steady` mode: the leak's expected growth per hour of the job's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_hour: Option<u64>,
    /// What the expected growth scales with on the machine that runs the TaskManager.
    #[serde(default, skip_serializing_if = "Scale::is_none")]
    pub scale: Scale,
    /// Whether the expected bytes are a size or a floor.
    #[serde(default, skip_serializing_if = "Bound::is_about")]
    pub bound: Bound,
    /// Whether the site grows (a leak) or must not (its control).
    #[serde(default = "yes")]
    pub grows: bool,
    /// The least R² of the site's linear fit.
    #[serde(default = "default_r2")]
    pub min_r2: f64,
}

/// How a leak's growth is held against its expected bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Bound {
    /// Within a factor of 2 of them (a leak of a fixed size per restart).
    #[default]
    About,
    /// At least half of them (a leak that keeps what a cache held, which grows with what
    /// the job read in that restart).
    AtLeast,
}

impl Bound {
    fn is_about(&self) -> bool {
        *self == Bound::About
    }

    /// Returns whether `slope` is out of the bound of `expected`.
    pub(crate) fn misses(self, slope: f64, expected: f64) -> bool {
        slope < expected / 2.0 || (self == Bound::About && slope > expected * 2.0)
    }

    /// Returns the bound in words, after the expected size.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Bound::About => "within a factor of 2",
            Bound::AtLeast => "at least half of it",
        }
    }
}

/// What a leak's size depends on besides the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scale {
    /// Nothing: `bytes_per_restart` as it is.
    #[default]
    None,
    /// RocksDB's `CoreLocalArray` (per-core statistics): one block per core slot; the slots
    /// are the smallest power of two at or above the CPUs `std::thread::hardware_concurrency`
    /// reports, at least 8; `bytes_per_restart` is for 8 slots.
    RocksdbCoreSlots,
}

impl Scale {
    fn is_none(&self) -> bool {
        *self == Scale::None
    }
}

/// Returns RocksDB's core slots for `cpus` CPUs: the smallest power of two ≥ `cpus`, at
/// least 8 (`CoreLocalArray`'s constructor starts its size shift at 3).
fn rocksdb_core_slots(cpus: u32) -> u32 {
    cpus.next_power_of_two().max(8)
}

impl Expect {
    /// Returns the leak's expected bytes per restart (per hour in `steady` mode) on a
    /// TaskManager that sees `cpus` CPUs (assuming 8 core slots when that is unknown).
    pub(crate) fn expected_bytes(&self, cpus: Option<u32>) -> Option<f64> {
        let bytes = self.bytes_per_restart.or(self.bytes_per_hour)? as f64;
        Some(match self.scale {
            Scale::None => bytes,
            Scale::RocksdbCoreSlots => {
                bytes * f64::from(rocksdb_core_slots(cpus.unwrap_or(8))) / 8.0
            }
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

fn default_r2() -> f64 {
    0.9
}

impl Scenarios {
    /// Reads and checks `path`: every pattern compiles, every version parses, a site has
    /// its bytes per restart (per hour in `steady` mode), a `steady` scenario its minutes.
    pub(crate) fn load(path: &Path) -> Result<Scenarios> {
        let s: Scenarios = crate::spec::read_checked_toml(path, "the e2e scenarios")?;
        for (name, sc) in &s.scenario {
            let ctx = || format!("{}: scenario {name}", path.display());
            for v in &sc.flink {
                v.parse::<FlinkVersion>().with_context(ctx)?;
            }
            for p in [&sc.expect.in_diff, &sc.expect.site].into_iter().flatten() {
                regex::Regex::new(p).with_context(ctx)?;
            }
            let (per_restart, per_hour) = (sc.expect.bytes_per_restart, sc.expect.bytes_per_hour);
            match (sc.mode, sc.expect.site.is_some()) {
                (Mode::Steady, true) if per_hour.is_none() || per_restart.is_some() => {
                    bail!("{}: a steady scenario's expect.site needs expect.bytes_per_hour (and no bytes_per_restart)", ctx())
                }
                (Mode::Steady, _) if sc.minutes == 0 || sc.restarts > 0 => {
                    bail!(
                        "{}: a steady scenario runs for `minutes`, without `restarts`",
                        ctx()
                    )
                }
                (Mode::Steady, _) => {}
                (_, true) if per_restart.is_none() || per_hour.is_some() => {
                    bail!("{}: expect.site needs expect.bytes_per_restart (bytes_per_hour is for mode = \"steady\")", ctx())
                }
                _ => {}
            }
        }
        Ok(s)
    }

    /// Returns the scenario called `name`, or an error listing them.
    pub(crate) fn get(&self, name: &str) -> Result<&Scenario> {
        self.scenario.get(name).with_context(|| {
            format!(
                "no e2e scenario `{name}`; the scenarios are: {}",
                self.scenario.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// What the command line says, each `None` taken from the scenario.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub mode: Option<Mode>,
    pub restarts: Option<u64>,
    pub minutes: Option<u64>,
    pub fail_every_ms: Option<u64>,
    pub lg_prof_interval: Option<u32>,
}

/// A run's scenario, resolved for its image.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    pub scenario: String,
    pub about: String,
    pub flink: String,
    pub mode: Mode,
    pub restarts: u64,
    /// `steady` mode: how long the job runs (its samples are --fail-every-ms apart).
    #[serde(skip_serializing_if = "is_zero")]
    pub minutes: u64,
    pub fail_every_ms: u64,
    pub lg_prof_interval: u32,
    pub lg_prof_sample: u32,
    /// The common configuration of the job's generation, then the scenario's (which wins
    /// for a key both set).
    pub conf: Vec<(String, String)>,
    /// The scenario's job arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub job_args: Vec<String>,
    pub expect: Expect,
}

/// Returns the plan of scenario `name` for an image of Flink `flink`; an image outside the
/// scenario's versions is an error (below the lowest) or a warning (past the newest: the
/// leak may be fixed there).
pub(crate) fn resolve(
    all: &Scenarios,
    name: &str,
    flink: FlinkVersion,
    o: &Overrides,
) -> Result<(Plan, Option<String>)> {
    let sc = all.get(name)?;
    let lowest: FlinkVersion = sc.flink[0].parse()?;
    let newest: FlinkVersion = sc.flink[1].parse()?;
    if flink < lowest {
        bail!(
            "scenario {name} needs Flink {} or later; the image has Flink {flink}: build one with \
             `cargo xtask image --flink <version>`",
            sc.flink[0]
        );
    }
    let warning = (flink > newest).then(|| {
        format!(
            "scenario {name} is about Flink {} to {}; the image has Flink {flink}, where it may \
             not reproduce",
            sc.flink[0], sc.flink[1]
        )
    });
    let common = if flink >= FIRST_CONFIG_YAML {
        &all.common.config_yaml
    } else {
        &all.common.flink_conf_yaml
    };
    let Pace {
        mode,
        restarts,
        minutes,
        fail_every_ms,
    } = pace(sc, name, o)?;
    let conf = common
        .iter()
        .filter(|(k, _)| !sc.conf.contains_key(*k))
        .chain(&sc.conf)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((
        Plan {
            scenario: name.to_string(),
            about: sc.about.clone(),
            flink: flink.to_string(),
            mode,
            restarts,
            minutes,
            fail_every_ms,
            lg_prof_interval: o.lg_prof_interval.unwrap_or(sc.lg_prof_interval),
            lg_prof_sample: sc.lg_prof_sample,
            conf,
            job_args: sc.job_args.clone(),
            expect: sc.expect.clone(),
        },
        warning,
    ))
}

/// How a run goes: its mode, and its restarts or minutes and their period.
struct Pace {
    mode: Mode,
    restarts: u64,
    minutes: u64,
    fail_every_ms: u64,
}

/// Returns the run's [`Pace`]: the flags over the scenario's, refused in one line when they
/// do not fit the mode or the scenario's expected growth is in another unit.
fn pace(sc: &Scenario, name: &str, o: &Overrides) -> Result<Pace> {
    let mode = o.mode.unwrap_or(sc.mode);
    let fail_every_ms = o.fail_every_ms.unwrap_or(sc.fail_every_ms);
    let (restarts, minutes) = match mode {
        Mode::Steady => (0, o.minutes.unwrap_or(sc.minutes)),
        _ => (o.restarts.unwrap_or(sc.restarts), 0),
    };
    match (mode, o.restarts, o.minutes) {
        (Mode::Steady, Some(_), _) => {
            bail!("--restarts is for the restart modes; --mode steady runs for --minutes")
        }
        (Mode::Steady, _, _) if minutes == 0 => {
            bail!("--mode steady runs the job for --minutes N: give it the minutes")
        }
        (Mode::Steady, _, _) if fail_every_ms < 1000 => bail!(
            "--fail-every-ms {fail_every_ms}: in --mode steady it is the time between samples, \
             at least 1000"
        ),
        (m, _, Some(_)) if m != Mode::Steady => {
            bail!("--minutes is for --mode steady; the restart modes run for --restarts")
        }
        _ => {}
    }
    if sc.mode == Mode::Steady && mode != Mode::Steady && restarts == 0 {
        bail!("scenario {name} runs in --mode steady (it has no restarts): drop --mode, or give --restarts");
    }
    let e = &sc.expect;
    if e.site.is_some() {
        match (mode.per(), e.bytes_per_restart, e.bytes_per_hour) {
            (Per::Hour, _, None) => bail!(
                "scenario {name} expects its leak's growth per restart; --mode steady measures \
                 it per hour: run it in its own mode ({})",
                crate::progress::flag(&sc.mode)
            ),
            (Per::Restart, None, _) => bail!(
                "scenario {name} expects its leak's growth per hour of a steady load: run it \
                 in --mode steady"
            ),
            _ => {}
        }
    }
    Ok(Pace {
        mode,
        restarts,
        minutes,
        fail_every_ms,
    })
}

/// Loads `e2e/scenarios.toml` of this checkout.
pub(crate) fn load_default() -> Result<Scenarios> {
    Scenarios::load(&crate::project::root().join("e2e/scenarios.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenarios_file_resolves() {
        let all = load_default().unwrap();
        let two: FlinkVersion = "2.2.1".parse().unwrap();
        let one: FlinkVersion = "1.10.3".parse().unwrap();
        let (p, w) = resolve(&all, "flink-39923", two, &Overrides::default()).unwrap();
        assert!(w.is_none());
        assert_eq!(p.mode, Mode::Injected);
        assert!(p.lg_prof_sample <= 17);
        let conf: BTreeMap<_, _> = p.conf.iter().cloned().collect();
        assert_eq!(conf["state.backend.type"], "rocksdb");
        assert_eq!(
            conf["state.backend.rocksdb.metrics.block-cache-hit"],
            "true"
        );
        assert!(p.expect.grows && p.expect.site.is_some());
        let (c, _) = resolve(&all, "flink-39923-control", two, &Overrides::default()).unwrap();
        assert!(!c.expect.grows);
        assert!(!c.conf.iter().any(|(k, _)| k.contains("metrics")));
        // The leak scenario refuses 1.x and warns past its newest version.
        let e = resolve(&all, "flink-39923", one, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("needs Flink 2.0"), "{e}");
        let (_, w) = resolve(
            &all,
            "flink-39923",
            "2.4.0".parse().unwrap(),
            &Overrides::default(),
        )
        .unwrap();
        assert!(w.unwrap().contains("may not reproduce"));
        // 1.x gets the 1.x keys; flags win over the scenario.
        let o = Overrides {
            restarts: Some(3),
            mode: Some(Mode::TmKill),
            ..Default::default()
        };
        let (r, _) = resolve(&all, "restart-growth", one, &o).unwrap();
        assert_eq!((r.restarts, r.mode), (3, Mode::TmKill));
        assert!(r
            .conf
            .iter()
            .any(|(k, v)| k == "state.backend" && v == "rocksdb"));
        let e = resolve(&all, "nope", one, &o).unwrap_err().to_string();
        assert!(e.contains("restart-growth"), "{e}");
        // 1.20 reads config.yaml: no flat state.backend beside the nested keys of
        // FLINK-39753's control.
        let (t, _) = resolve(
            &all,
            "flink-39753-control",
            "1.20.4".parse().unwrap(),
            &Overrides::default(),
        )
        .unwrap();
        assert!(t.conf.iter().all(|(k, _)| k != "state.backend"));
        assert!(t
            .conf
            .iter()
            .any(|(k, v)| k == "state.backend.type" && v == "rocksdb"));
    }

    #[test]
    fn the_leak_expected_scales_with_the_taskmanagers_cpus() {
        assert_eq!(
            [1, 2, 8, 9, 16, 17, 64].map(rocksdb_core_slots),
            [8, 8, 8, 16, 16, 32, 64]
        );
        let all = load_default().unwrap();
        let (p, _) = resolve(
            &all,
            "flink-39923",
            "2.2.1".parse().unwrap(),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(p.expect.scale, Scale::RocksdbCoreSlots);
        // 475 KiB on up to 8 CPUs (and when the count is unknown), twice that on 9–16.
        for (cpus, kib) in [
            (Some(2), 475.0),
            (Some(8), 475.0),
            (None, 475.0),
            (Some(16), 950.0),
        ] {
            assert_eq!(
                p.expect.expected_bytes(cpus),
                Some(kib * 1024.0),
                "{cpus:?}"
            );
        }
        let plain = Expect {
            bytes_per_restart: Some(1000),
            ..Default::default()
        };
        assert_eq!(plain.expected_bytes(Some(64)), Some(1000.0));
        assert_eq!(Expect::default().expected_bytes(Some(2)), None);
    }

    #[test]
    fn a_steady_scenario_runs_for_minutes_and_expects_growth_per_hour() {
        let all = load_default().unwrap();
        let two: FlinkVersion = "2.2.1".parse().unwrap();
        let (p, _) = resolve(&all, "flink-40327", two, &Overrides::default()).unwrap();
        assert_eq!(
            (p.mode, p.restarts, p.mode.per()),
            (Mode::Steady, 0, Per::Hour)
        );
        assert!(p.minutes > 0 && p.expect.bytes_per_hour.is_some());
        let o = Overrides {
            minutes: Some(2),
            restarts: Some(9),
            ..Default::default()
        };
        let e = resolve(&all, "flink-40327", two, &o).unwrap_err();
        assert!(
            e.to_string()
                .contains("--restarts is for the restart modes"),
            "{e}"
        );
        let o = Overrides {
            minutes: Some(2),
            ..Default::default()
        };
        let (p, _) = resolve(&all, "flink-40327", two, &o).unwrap();
        assert_eq!((p.minutes, p.restarts), (2, 0));
        let e = resolve(
            &all,
            "restart-growth",
            two,
            &Overrides {
                minutes: Some(2),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("--minutes is for --mode steady"),
            "{e}"
        );
        let e = resolve(
            &all,
            "flink-40327",
            two,
            &Overrides {
                fail_every_ms: Some(10),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 1000"), "{e}");
        // A per-restart expectation cannot be held against growth per hour, nor back.
        let steady = Overrides {
            mode: Some(Mode::Steady),
            minutes: Some(2),
            ..Default::default()
        };
        let e = resolve(&all, "flink-39923", two, &steady).unwrap_err();
        assert!(e.to_string().contains("per restart"), "{e}");
        let injected = Overrides {
            mode: Some(Mode::Injected),
            ..Default::default()
        };
        let e = resolve(&all, "flink-40327", two, &injected).unwrap_err();
        assert!(e.to_string().contains("--mode steady"), "{e}");
        // A scenario without a leak site runs steady for the minutes it is given.
        let e = resolve(
            &all,
            "restart-growth",
            two,
            &Overrides {
                mode: Some(Mode::Steady),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--minutes"), "{e}");
        let (p, _) = resolve(&all, "restart-growth", two, &steady).unwrap();
        assert_eq!((p.restarts, p.minutes), (0, 2));
    }

    #[test]
    fn a_bad_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.toml");
        std::fs::write(
            &p,
            "[common]\nflink-conf-yaml = {}\nconfig-yaml = {}\n[scenario.x]\nabout = 1\n",
        )
        .unwrap();
        let e = Scenarios::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("s.toml line 5") && e.contains("git checkout"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[common]\nflink-conf-yaml = {}\nconfig-yaml = {}\n[scenario.x]\nabout = \"\"\nflink = [\"1.0\", \"2.0\"]\n\
             mode = \"injected\"\nrestarts = 1\nfail_every_ms = 1\nlg_prof_interval = 1\n\
             lg_prof_sample = 1\n[scenario.x.expect]\nsite = \"(\"\nbytes_per_restart = 1\n",
        )
        .unwrap();
        assert!(Scenarios::load(&p).is_err());
    }

    #[test]
    fn a_floor_has_no_ceiling() {
        let mib = 1024.0 * 1024.0;
        assert!(Bound::About.misses(100.0 * mib, 32.0 * mib));
        assert!(!Bound::AtLeast.misses(100.0 * mib, 32.0 * mib));
        assert!(Bound::AtLeast.misses(15.0 * mib, 32.0 * mib));
        let all = load_default().unwrap();
        assert_eq!(all.get("flink-39753").unwrap().expect.bound, Bound::AtLeast);
        assert_eq!(all.get("flink-39923").unwrap().expect.bound, Bound::About);
    }
}
