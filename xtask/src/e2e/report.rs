//! The e2e report: what one run of an allocator saw (samples, growth, OOM kills, the
//! analysis), the verdict, and its two renderings, `summary.md` and `memory.svg`.

use anyhow::Result;
use serde::Serialize;
use std::path::Path;

use super::cluster::Allocator;
use super::plot::{self, Series};
use super::{flag, Driver, Mode};
use crate::analyze::Analysis;
use crate::progress;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub restart: u64,
    pub seconds: f64,
    pub rss_kb: u64,
    pub cgroup_kb: Option<u64>,
    pub heap_committed_kb: Option<u64>,
    pub nonheap_committed_kb: Option<u64>,
    pub direct_used_kb: Option<u64>,
    /// RSS minus committed heap and non-heap: malloc'ed memory, thread stacks, direct buffers.
    pub native_kb: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub rss_kb_per_restart: Option<f64>,
    pub native_kb_per_restart: Option<f64>,
    pub cgroup_kb_per_restart: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub allocator: Allocator,
    pub restarts: u64,
    pub oom_kills: u64,
    pub samples: Vec<Sample>,
    pub growth: Growth,
    /// jemalloc only: the dumps analysed with the image's jeprof.
    pub analysis: Option<Analysis>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub driver: Driver,
    pub mode: Mode,
    pub restarts_asked: u64,
    pub memory_limit_mb: u64,
    pub runs: Vec<Run>,
    pub verdict: Vec<String>,
    pub passed: bool,
    pub seconds_to_verdict: f64,
}

impl Report {
    /// `report.json`, `summary.md` and `memory.svg` into `out`, and the verdict's line.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(out.join("summary.md"), summary(self))?;
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

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

pub fn growth(samples: &[Sample]) -> Growth {
    let of = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.restart as f64, f(s)?)))
            .collect();
        slope(&pts)
    };
    Growth {
        rss_kb_per_restart: of(&|s| Some(s.rss_kb as f64)),
        native_kb_per_restart: of(&|s| s.native_kb.map(|v| v as f64)),
        cgroup_kb_per_restart: of(&|s| s.cgroup_kb.map(|v| v as f64)),
    }
}

/// What must hold for the e2e to pass; an empty list passes.
pub fn verdict(runs: &[Run], restarts_asked: u64) -> Vec<String> {
    let mut failures = Vec::new();
    for r in runs {
        let a = r.allocator.name();
        if r.restarts < restarts_asked {
            failures.push(format!("{a}: {} of {restarts_asked} restarts", r.restarts));
        }
        if r.allocator == Allocator::Jemalloc {
            match &r.analysis {
                None => failures.push(format!("{a}: no heap dumps analysed")),
                Some(an) if an.dumps.len() < 2 => {
                    failures.push(format!("{a}: only {} dump(s) analysed", an.dumps.len()))
                }
                Some(an) if !an.rocksdb_in_diff => failures.push(format!(
                    "{a}: the top sites of the difference between {} and {} name no rocksdb:: frame",
                    an.base, an.last
                )),
                Some(_) => {}
            }
        }
    }
    failures
}

fn color(a: Allocator) -> &'static str {
    match a {
        Allocator::Jemalloc => "#1f77b4",
        Allocator::Glibc => "#d62728",
    }
}

/// TaskManager native memory (solid) and RSS (dashed) against restart, per allocator.
pub fn memory_plot(r: &Report) -> String {
    let mut series = Vec::new();
    for run in &r.runs {
        let mb = |kb: f64| (kb / 1024.0).round();
        series.push(Series {
            label: format!("{} native", run.allocator.name()),
            color: color(run.allocator),
            dashed: false,
            points: run
                .samples
                .iter()
                .filter_map(|s| Some((s.restart as f64, mb(s.native_kb? as f64))))
                .collect(),
        });
        series.push(Series {
            label: format!("{} RSS", run.allocator.name()),
            color: color(run.allocator),
            dashed: true,
            points: run
                .samples
                .iter()
                .map(|s| (s.restart as f64, mb(s.rss_kb as f64)))
                .collect(),
        });
    }
    plot::line_chart(
        &format!(
            "TaskManager memory per restart (--driver {}, --mode {})",
            flag(&r.driver),
            flag(&r.mode)
        ),
        "restart",
        "MB",
        &series,
    )
}

/// kB as whole MB, or `missing`.
pub fn whole_mb(kb: Option<i64>, missing: &str) -> String {
    kb.map(|v| (v / 1024).to_string())
        .unwrap_or_else(|| missing.to_string())
}

fn mb(kb: Option<f64>) -> String {
    kb.map(|v| format!("{:+.1}", v / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "# flink-jemalloc e2e: {}\n\nImage `{}`, driver {}, mode {}, TaskManager limit {} MB, \
         {} restarts asked; {:.0} s from start to verdict.\n\n![memory](memory.svg)\n\n",
        if r.passed { "passed" } else { "FAILED" },
        r.image,
        flag(&r.driver),
        flag(&r.mode),
        r.memory_limit_mb,
        r.restarts_asked,
        r.seconds_to_verdict
    );
    s.push_str("| allocator | restarts | OOM kills | native MB/restart | RSS MB/restart | cgroup MB/restart |\n|---|---|---|---|---|---|\n");
    for run in &r.runs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            run.allocator.name(),
            run.restarts,
            run.oom_kills,
            mb(run.growth.native_kb_per_restart),
            mb(run.growth.rss_kb_per_restart),
            mb(run.growth.cgroup_kb_per_restart),
        ));
    }
    s.push_str(
        "\nGrowth is the least-squares slope over the samples. Native = RSS − committed heap − \
         committed non-heap (Flink's JVM metrics; the heap is pre-touched, so its resident size \
         is its committed size). Samples are taken within 0.5 s of each restart.\n",
    );
    for run in &r.runs {
        s.push_str(&format!(
            "\n## {}\n\n| restart | s | RSS MB | native MB | cgroup MB |\n|---|---|---|---|---|\n",
            run.allocator.name()
        ));
        for x in &run.samples {
            s.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} |\n",
                x.restart,
                x.seconds,
                x.rss_kb / 1024,
                whole_mb(x.native_kb, "n/a"),
                whole_mb(x.cgroup_kb.map(|v| v as i64), "n/a"),
            ));
        }
        if let Some(a) = &run.analysis {
            s.push_str(&format!(
                "\nTop allocation sites, `{}` minus `{}` (`jeprof --base`, {} dumps):\n\n```\n",
                a.last,
                a.base,
                a.dumps.len()
            ));
            // Lines with nothing allocated at the site itself (`0 0.0% …`) are call-graph
            // noise here; diff.txt has them all.
            for l in a.top_diff.iter().filter(|l| !l.starts_with("0 ")).take(15) {
                s.push_str(l);
                s.push('\n');
            }
            s.push_str("```\n");
        }
    }
    if !r.verdict.is_empty() {
        s.push_str("\n## Verdict failures\n\n");
        for v in &r.verdict {
            s.push_str(&format!("- {v}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_least_squares() {
        assert_eq!(
            slope(&[(0.0, 100.0), (1.0, 110.0), (2.0, 120.0)]),
            Some(10.0)
        );
        assert_eq!(slope(&[(0.0, 100.0)]), None);
        let s = |restart, rss_kb, native_kb| Sample {
            restart,
            rss_kb,
            native_kb,
            ..Default::default()
        };
        let g = growth(&[s(0, 100, Some(10)), s(1, 130, None), s(2, 160, Some(50))]);
        assert_eq!(g.rss_kb_per_restart, Some(30.0));
        assert_eq!(g.native_kb_per_restart, Some(20.0));
        assert_eq!(g.cgroup_kb_per_restart, None);
    }

    fn analysis(dumps: usize, rocksdb: bool) -> Analysis {
        Analysis {
            dumps: (0..dumps)
                .map(|i| format!("jeprof.out.1.{i}.i{i}.heap"))
                .collect(),
            base: "a".into(),
            last: "b".into(),
            top_last: vec![],
            top_diff: vec![],
            rocksdb_in_diff: rocksdb,
            missing_files: vec![],
        }
    }

    fn run(allocator: Allocator, restarts: u64, analysis: Option<Analysis>) -> Run {
        Run {
            allocator,
            restarts,
            oom_kills: 0,
            samples: vec![],
            growth: growth(&[]),
            analysis,
            seconds: 0.0,
        }
    }

    #[test]
    fn verdict_needs_restarts_dumps_and_rocksdb() {
        let good = run(Allocator::Jemalloc, 4, Some(analysis(3, true)));
        assert!(verdict(&[good.clone(), run(Allocator::Glibc, 4, None)], 4).is_empty());
        assert_eq!(verdict(&[run(Allocator::Glibc, 3, None)], 4).len(), 1);
        assert_eq!(verdict(&[run(Allocator::Jemalloc, 4, None)], 4).len(), 1);
        assert_eq!(
            verdict(&[run(Allocator::Jemalloc, 4, Some(analysis(1, true)))], 4).len(),
            1
        );
        let v = verdict(&[run(Allocator::Jemalloc, 4, Some(analysis(3, false)))], 4);
        assert!(v[0].contains("rocksdb::"), "{v:?}");
    }
}
