//! The e2e report: the scenario, what made it (the commit and the machine), what one run of
//! an allocator saw (samples, growth per restart with its autocorrelation-robust error and
//! 95% interval, OOM kills, the CPUs the TaskManager saw, the analysis with every site's
//! growth), the verdict against the scenario's expectation (`verdict`), and its
//! renderings, `summary.md` (`summary`) and `memory.svg` (`memory`); the flame graph and
//! call graph are the analysis's.

pub(crate) mod memory;
pub(crate) mod model;
pub(crate) mod summary;
pub(crate) mod verdict;

use anyhow::Result;
use std::path::Path;

use crate::e2e::driver::Driver;
use crate::e2e::scenario::Plan;
use crate::fit::ERROR_METHOD;
use crate::progress;
use crate::provenance::Provenance;
pub(crate) use memory::memory_plot;
pub(crate) use model::{growth, whole_mib, Report, RunRecord, Sample};
pub(crate) use verdict::verdict;

impl Report {
    /// Returns the report of `runs`, with the verdict of the plan's expectation.
    pub(crate) fn new(
        image: &str,
        driver: Driver,
        plan: &Plan,
        memory_limit_mb: u64,
        runs: Vec<RunRecord>,
        started: std::time::Instant,
    ) -> Report {
        let verdict = verdict(&runs, plan);
        Report {
            image: image.to_string(),
            driver,
            made_by: Provenance::here(
                &crate::project::root(),
                crate::e2e::driver::engine_version(driver),
            ),
            errors: ERROR_METHOD,
            plan: plan.clone(),
            memory_limit_mb,
            passed: verdict.is_empty(),
            verdict,
            runs,
            seconds_to_verdict: started.elapsed().as_secs_f64(),
        }
    }

    /// Writes `report.json`, `summary.md` and `memory.svg` into `out`, and notes the
    /// verdict's line.
    pub(crate) fn write(&self, out: &Path) -> Result<()> {
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(out.join("summary.md"), summary::summary(self))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::sites::{site_table, DumpPoint};
    use crate::analyze::sites::{Per, Site};
    use crate::analyze::Analysis;
    use crate::e2e::cluster::Allocator;
    use crate::e2e::scenario::{load_default, resolve, Overrides};

    #[test]
    fn growth_is_least_squares() {
        let s = |restart, rss_kb, native_kb| Sample {
            restart,
            rss_kb,
            native_kb,
            ..Default::default()
        };
        let g = growth(
            &[s(0, 100, Some(10)), s(1, 130, None), s(2, 160, Some(50))],
            Per::Restart,
        );
        assert_eq!(g.rss_kb.unwrap().slope, 30.0);
        assert_eq!(g.rss_kb.unwrap().stderr, Some(0.0));
        assert_eq!(g.native_kb.unwrap().slope, 20.0);
        assert!(g.cgroup_kb.is_none());
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["rss_kb_per_restart"]["slope"], 30.0);
    }

    #[test]
    fn steady_growth_is_per_hour_of_the_samples_times() {
        // Samples a minute apart, the native memory growing 1 MiB a minute: 60 MiB an hour.
        let s = |i: u64| Sample {
            restart: 0,
            seen_at: 1_000.0 + 60.0 * i as f64,
            seconds: 60.0 * i as f64,
            rss_kb: 900_000 + 1024 * i,
            native_kb: Some(400_000 + 1024 * i as i64),
            ..Default::default()
        };
        let mut samples: Vec<Sample> = (0..=9).map(s).collect();
        // The warm-up (the first fifth of the span) is left out, as the sites' growth
        // leaves it: a cache filling in the first minute does not count.
        samples[0].native_kb = Some(100_000);
        let g = growth(&samples, Per::Hour);
        let native = g.native_kb.unwrap();
        assert!((native.slope - 60.0 * 1024.0).abs() < 1.0, "{native:?}");
        assert_eq!(native.n, 8, "samples 2 to 9, after 108 s of warm-up");
        // A TaskManager replaced at sample 6 restarted the job: only its JVM's samples
        // count, their own warm-up left out.
        for s in samples.iter_mut().skip(6) {
            s.restart = 1;
            s.native_kb = s.native_kb.map(|v| v - 300_000);
        }
        let g = growth(&samples, Per::Hour);
        let native = g.native_kb.unwrap();
        assert_eq!(
            native.n, 3,
            "samples 7 to 9: sample 6 is the new JVM's warm-up"
        );
        assert!((native.slope - 60.0 * 1024.0).abs() < 1.0, "{native:?}");
        let json = serde_json::to_value(&g).unwrap();
        assert!(json["native_kb_per_hour"]["slope"].is_number(), "{json}");
        assert!(json.get("native_kb_per_restart").is_none(), "{json}");
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

    /// Returns the sites of dumps 0..=12 where `leak` grows by `per_restart` and a steady
    /// site does not.
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
            leaks: None,
            memory: None,
            totals: vec![],
            growing: vec![],
        }
    }

    fn run(allocator: Allocator, restarts: u64, analysis: Option<Analysis>) -> RunRecord {
        RunRecord {
            allocator,
            taskmanager_cpus: Some(2),
            expected_bytes_per_restart: Some(486400.0),
            expected_bytes_per_hour: None,
            restarts,
            restart_times: vec![],
            oom_kills: 0,
            samples: vec![],
            growth: growth(&[], Per::Restart),
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
