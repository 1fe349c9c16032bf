//! The e2e report: the scenario, what made it (the commit and the machine), what one run of
//! an allocator saw (samples, growth per restart with its autocorrelation-robust error and
//! 95% interval, OOM kills, the CPUs the TaskManager saw, the analysis with every site's
//! growth), the verdict against the scenario's expectation, and its renderings,
//! `summary.md` and `memory.svg` (the flame graph and call graph are the analysis's).

use anyhow::Result;
use serde::Serialize;
use std::path::Path;

use super::cluster::Allocator;
use super::plot::{self, Series};
use super::scenario::{Expect, Plan};
use super::{flag, Driver, E2eArgs};
use crate::analyze::sites::Site;
use crate::analyze::Analysis;
use crate::fit::{fit, Fit, ERROR_METHOD};
use crate::progress;
use crate::provenance::Provenance;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub restart: u64,
    /// When the restart was seen, seconds since the epoch (dumps are placed by it).
    pub seen_at: f64,
    pub seconds: f64,
    pub rss_kb: u64,
    pub cgroup_kb: Option<u64>,
    pub heap_committed_kb: Option<u64>,
    pub nonheap_committed_kb: Option<u64>,
    pub direct_used_kb: Option<u64>,
    /// RSS minus committed heap and non-heap: malloc'ed memory, thread stacks, direct buffers.
    pub native_kb: Option<i64>,
}

/// Growth per restart, kB, least squares over the samples, with robust errors.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub rss_kb_per_restart: Option<Fit>,
    pub native_kb_per_restart: Option<Fit>,
    pub cgroup_kb_per_restart: Option<Fit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub allocator: Allocator,
    /// The CPUs the TaskManager saw (RocksDB's core slots follow them).
    pub taskmanager_cpus: Option<u32>,
    /// The profiling run of a scenario with a leak site: the bytes per restart expected on
    /// this TaskManager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bytes_per_restart: Option<f64>,
    pub restarts: u64,
    /// `(restart, seconds since the epoch)`: when each happened (dumps are placed by it).
    pub restart_times: Vec<(u64, f64)>,
    pub oom_kills: u64,
    pub samples: Vec<Sample>,
    pub growth: Growth,
    /// The profiling jemalloc only: the dumps analysed with the image's jeprof.
    pub analysis: Option<Analysis>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub driver: Driver,
    /// The commit and the machine that made this report.
    pub made_by: Provenance,
    /// What the ± and the intervals of every growth figure are.
    pub errors: &'static str,
    /// The scenario as run: its name, Flink, mode, restarts, configuration, expectation.
    pub plan: Plan,
    pub memory_limit_mb: u64,
    pub runs: Vec<Run>,
    pub verdict: Vec<String>,
    pub passed: bool,
    pub seconds_to_verdict: f64,
}

impl Report {
    /// The report of `runs`, with the verdict of the plan's expectation.
    pub fn new(
        image: &str,
        driver: Driver,
        plan: &Plan,
        args: &E2eArgs,
        runs: Vec<Run>,
        started: std::time::Instant,
    ) -> Report {
        let verdict = verdict(&runs, plan);
        Report {
            image: image.to_string(),
            driver,
            made_by: Provenance::here(&crate::project::root(), super::engine_version(driver)),
            errors: ERROR_METHOD,
            plan: plan.clone(),
            memory_limit_mb: args.memory_limit_mb,
            passed: verdict.is_empty(),
            verdict,
            runs,
            seconds_to_verdict: started.elapsed().as_secs_f64(),
        }
    }

    /// `report.json`, `summary.md` and `memory.svg` into `out`, and the verdict's line.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(out.join("summary.md"), super::summary::summary(self))?;
        std::fs::write(out.join("memory.svg"), memory_plot(self))?;
        progress::note(format!(
            "report: {} — {} in {:.0} s from start to verdict",
            out.display(),
            if self.passed { "PASSED" } else { "FAILED" },
            self.seconds_to_verdict
        ));
        Ok(())
    }
}

pub fn growth(samples: &[Sample]) -> Growth {
    let of = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.restart as f64, f(s)?)))
            .collect();
        fit(&pts)
    };
    Growth {
        rss_kb_per_restart: of(&|s| Some(s.rss_kb as f64)),
        native_kb_per_restart: of(&|s| s.native_kb.map(|v| v as f64)),
        cgroup_kb_per_restart: of(&|s| s.cgroup_kb.map(|v| v as f64)),
    }
}

/// What must hold for the e2e to pass; an empty list passes.
pub fn verdict(runs: &[Run], plan: &Plan) -> Vec<String> {
    let mut failures = Vec::new();
    for r in runs {
        let a = r.allocator.name();
        if r.restarts < plan.restarts {
            failures.push(format!("{a}: {} of {} restarts", r.restarts, plan.restarts));
        }
        if !r.allocator.profiles() {
            continue;
        }
        match &r.analysis {
            None => failures.push(format!("{a}: no heap dumps analysed")),
            Some(an) if an.dumps.len() < 2 => {
                failures.push(format!("{a}: only {} dump(s) analysed", an.dumps.len()))
            }
            Some(an) => failures.extend(expectations(
                an,
                &plan.expect,
                r.expected_bytes_per_restart,
                a,
            )),
        }
    }
    failures
}

fn kib(bytes: f64) -> String {
    format!("{:.0} KiB", bytes / 1024.0)
}

/// The matching site that grows fastest.
pub fn fastest_match<'a>(sites: &'a [Site], pattern: &str) -> Option<&'a Site> {
    let re = regex::Regex::new(pattern).ok()?;
    sites
        .iter()
        .filter(|s| re.is_match(&s.site))
        .max_by(|a, b| a.slope().total_cmp(&b.slope()))
}

/// What the scenario expects of a profiling run's analysis, as failures; `expected` is the
/// leak's bytes per restart on this run's TaskManager.
pub fn expectations(an: &Analysis, e: &Expect, expected: Option<f64>, who: &str) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(p) = &e.in_diff {
        let re = regex::Regex::new(p).ok();
        // Every growing line of the difference (the top ones where that is all there is).
        let lines = if an.growing.is_empty() {
            &an.top_diff
        } else {
            &an.growing
        };
        let named = lines
            .iter()
            .filter(|l| !l.starts_with('-'))
            .any(|l| re.as_ref().is_some_and(|re| re.is_match(l)));
        if !named {
            f.push(format!(
                "{who}: no frame matching {p} among the sites that hold more memory in {} than in {} \
                 (is the profiler attributing the job's native memory?)",
                an.last, an.base
            ));
        }
    }
    let (Some(p), Some(expected)) = (&e.site, expected) else {
        return f;
    };
    if an.sites.is_empty() {
        f.push(format!(
            "{who}: no growth per site (the dumps carry no times)"
        ));
        return f;
    }
    let best = fastest_match(&an.sites, p);
    match (e.grows, best) {
        (true, None) => f.push(format!("{who}: no allocation site matches {p}")),
        (true, Some(s)) => {
            let r2 = s.growth.and_then(|g| g.r2).unwrap_or(0.0);
            let points = s.growth.map_or(0, |g| g.n);
            if points < 3 {
                f.push(format!(
                    "{who}: {} was read in {points} dump(s); a line needs 3 or more (run more restarts)",
                    s.site
                ));
            } else if !s.grows() {
                f.push(format!(
                    "{who}: {} is not shown to grow: {} KiB per restart, 95% interval {} holds zero",
                    s.site,
                    s.growth.map_or("n/a".into(), |g| g.plus_minus(1024.0, 1)),
                    s.growth.map_or("n/a".into(), |g| g.interval(1024.0, 1)),
                ));
            } else if r2 < e.min_r2 {
                f.push(format!(
                    "{who}: {} grows {} per restart with R² {r2:.2}, under {}: not linear",
                    s.site,
                    kib(s.slope()),
                    e.min_r2
                ));
            }
            if s.slope() < expected / 2.0 || s.slope() > expected * 2.0 {
                f.push(format!(
                    "{who}: {} grows {} per restart; expected {} (within a factor of 2)",
                    s.site,
                    kib(s.slope()),
                    kib(expected)
                ));
            }
        }
        (false, Some(s)) if s.slope() >= expected / 4.0 => f.push(format!(
            "{who}: {} grows {} per restart in the control; it must stay under {}",
            s.site,
            kib(s.slope()),
            kib(expected / 4.0)
        )),
        (false, _) => {}
    }
    f
}

/// A colour per allocator: jemalloc blue, its baseline light blue, glibc red, two arenas orange.
fn color(a: Allocator) -> &'static str {
    match a {
        Allocator::Jemalloc => "#1f77b4",
        Allocator::JemallocNonprof => "#17becf",
        Allocator::Glibc => "#d62728",
        Allocator::GlibcArenas2 => "#ff7f0e",
    }
}

/// A legend's growth: ` +0.46 ± 0.44 MiB/restart (no trend shown)`, or nothing.
fn legend_growth(kb: Option<Fit>) -> String {
    kb.map_or(String::new(), |f| {
        format!(
            " {} MiB/restart ({})",
            f.plus_minus(1024.0, 2),
            f.trend().words()
        )
    })
}

/// TaskManager native memory (solid) and RSS (dashed) against restart, per allocator, each
/// with its growth per restart ± its robust error in the legend.
pub fn memory_plot(r: &Report) -> String {
    let mut series = Vec::new();
    for run in &r.runs {
        let mib = |kb: f64| (kb / 1024.0).round();
        series.push(Series {
            label: format!(
                "{} native{}",
                run.allocator.name(),
                legend_growth(run.growth.native_kb_per_restart)
            ),
            color: color(run.allocator),
            dashed: false,
            points: run
                .samples
                .iter()
                .filter_map(|s| Some((s.restart as f64, mib(s.native_kb? as f64))))
                .collect(),
        });
        series.push(Series {
            label: format!(
                "{} RSS{}",
                run.allocator.name(),
                legend_growth(run.growth.rss_kb_per_restart)
            ),
            color: color(run.allocator),
            dashed: true,
            points: run
                .samples
                .iter()
                .map(|s| (s.restart as f64, mib(s.rss_kb as f64)))
                .collect(),
        });
    }
    plot::line_chart(
        &format!(
            "TaskManager memory per restart ({}, --driver {}, --mode {})",
            r.plan.scenario,
            flag(&r.driver),
            flag(&r.plan.mode)
        ),
        "restart",
        "MiB",
        &series,
    )
}

/// KiB as whole MiB, or `missing`.
pub fn whole_mib(kb: Option<i64>, missing: &str) -> String {
    kb.map(|v| (v / 1024).to_string())
        .unwrap_or_else(|| missing.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::sites::{site_table, DumpPoint};
    use crate::e2e::scenario::{load_default, resolve, Overrides};

    #[test]
    fn growth_is_least_squares() {
        let s = |restart, rss_kb, native_kb| Sample {
            restart,
            rss_kb,
            native_kb,
            ..Default::default()
        };
        let g = growth(&[s(0, 100, Some(10)), s(1, 130, None), s(2, 160, Some(50))]);
        assert_eq!(g.rss_kb_per_restart.unwrap().slope, 30.0);
        assert_eq!(g.rss_kb_per_restart.unwrap().stderr, Some(0.0));
        assert_eq!(g.native_kb_per_restart.unwrap().slope, 20.0);
        assert!(g.cgroup_kb_per_restart.is_none());
    }

    fn plan(name: &str) -> Plan {
        let flink = if name == "restart-growth" {
            "1.10.3"
        } else {
            "2.2.1"
        };
        resolve(
            &load_default().unwrap(),
            name,
            flink.parse().unwrap(),
            &Overrides::default(),
        )
        .unwrap()
        .0
    }

    /// Dumps 0..=12 where `leak` grows by `per_restart` and a steady site does not.
    fn sites(per_restart: i64, leak: &str) -> Vec<Site> {
        let pts: Vec<DumpPoint> = (0..=12u64)
            .map(|r| DumpPoint {
                dump: format!("d{r}"),
                at: r,
                sites: [
                    (leak.to_string(), per_restart * (r as i64 + 1)),
                    ("rocksdb::Arena::AllocateNewBlock".into(), 67108864),
                ]
                .into_iter()
                .filter(|(_, b)| *b > 0)
                .collect(),
            })
            .collect();
        site_table(&pts)
    }

    fn analysis(dumps: usize, diff: &str, sites: Vec<Site>) -> Analysis {
        Analysis {
            dumps: (0..dumps)
                .map(|i| format!("jeprof.out.1.{i}.i{i}.heap"))
                .collect(),
            base: "a".into(),
            last: "b".into(),
            top_last: vec![],
            top_diff: vec![diff.to_string()],
            rocksdb_in_diff: diff.contains("rocksdb::"),
            missing_files: vec![],
            growth_per: Some(crate::analyze::Per::Restart),
            site_dumps: vec![],
            sites,
            verdict: None,
            memory: None,
            totals: vec![],
            growing: vec![],
        }
    }

    fn run(allocator: Allocator, restarts: u64, analysis: Option<Analysis>) -> Run {
        Run {
            allocator,
            taskmanager_cpus: Some(2),
            expected_bytes_per_restart: Some(486400.0),
            restarts,
            restart_times: vec![],
            oom_kills: 0,
            samples: vec![],
            growth: growth(&[]),
            analysis,
            seconds: 0.0,
        }
    }

    #[test]
    fn restart_growth_needs_restarts_dumps_and_rocksdb() {
        let p = plan("restart-growth");
        let diff = "67108864 33.9% 98.6% 67108864 33.9% rocksdb::Arena::AllocateNewBlock";
        let good = run(Allocator::Jemalloc, 6, Some(analysis(3, diff, vec![])));
        assert!(verdict(&[good, run(Allocator::Glibc, 6, None)], &p).is_empty());
        assert_eq!(verdict(&[run(Allocator::Glibc, 3, None)], &p).len(), 1);
        assert_eq!(
            verdict(&[run(Allocator::GlibcArenas2, 6, None)], &p).len(),
            0
        );
        assert_eq!(verdict(&[run(Allocator::Jemalloc, 6, None)], &p).len(), 1);
        let one = run(Allocator::Jemalloc, 6, Some(analysis(1, diff, vec![])));
        assert_eq!(verdict(&[one], &p).len(), 1);
        let none = run(
            Allocator::Jemalloc,
            6,
            Some(analysis(3, "5 1% 1% 5 1% os::malloc", vec![])),
        );
        let v = verdict(&[none], &p);
        assert!(v[0].contains("rocksdb::"), "{v:?}");
    }

    #[test]
    fn a_leak_is_named_and_its_control_is_clean() {
        let (leak, control) = (plan("flink-39923"), plan("flink-39923-control"));
        let site = "rocksdb::port::cacheline_aligned_alloc";
        let at = |per: i64, name: &str| {
            run(
                Allocator::Jemalloc,
                leak.restarts,
                Some(analysis(13, "", sites(per, name))),
            )
        };
        assert!(verdict(&[at(486400, site)], &leak).is_empty());
        // Twice too slow, or not there at all.
        let v = verdict(&[at(200000, site)], &leak);
        assert!(v[0].contains("expected 475 KiB"), "{v:?}");
        let v = verdict(&[at(486400, "os::malloc")], &leak);
        assert!(v[0].contains("no allocation site matches"), "{v:?}");
        // The control passes without the site, and fails if it grows.
        assert!(verdict(&[at(486400, "os::malloc")], &control).is_empty());
        let v = verdict(&[at(486400, site)], &control);
        assert!(v[0].contains("in the control"), "{v:?}");
        // On a TaskManager that sees 32 CPUs RocksDB keeps 32 core slots: four times the
        // bytes, which pass there and fail where 8 slots are expected.
        let mut wide = at(4 * 486400, site);
        assert!(verdict(std::slice::from_ref(&wide), &leak)[0].contains("expected 475 KiB"));
        wide.expected_bytes_per_restart = leak.expect.expected_bytes(Some(32));
        assert!(verdict(&[wide], &leak).is_empty());
        // A site whose line wanders about zero is not shown to grow, whatever its R².
        let wandering: Vec<DumpPoint> = [2i64, 9, 1, 8, 3, 9]
            .iter()
            .enumerate()
            .map(|(r, k)| DumpPoint {
                dump: format!("d{r}"),
                at: r as u64,
                sites: [(site.to_string(), 486400 * k)].into_iter().collect(),
            })
            .collect();
        let noisy = run(
            Allocator::Jemalloc,
            16,
            Some(analysis(13, "", site_table(&wandering))),
        );
        let v = verdict(&[noisy], &leak);
        assert!(v[0].contains("not shown to grow"), "{v:?}");
        // Without times there is no growth per site to judge.
        let bare = run(Allocator::Jemalloc, 16, Some(analysis(13, "", vec![])));
        assert!(verdict(&[bare], &leak)[0].contains("no growth per site"));
    }
}
