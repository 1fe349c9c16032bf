//! The report of `bench --profiling-cost`: each configuration's figures over its runs
//! (per run the mean over its windows; with one run, its windows), the ratios to
//! `jemalloc-nonprof` and `glibc`, the table of `summary.md`, the throughput plot, and the
//! report directory written whole.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::cost_model::{Config, RunRecord};
use super::stats::{self, Estimate, Window};
use crate::plot;
use crate::provenance::Provenance;

/// One configuration's figures over its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub config: Config,
    pub malloc_conf: String,
    pub runs: usize,
    pub throughput: Option<Estimate>,
    pub cpu_per_million: Option<Estimate>,
    pub rss_mib: Option<Estimate>,
    pub native_mib: Option<Estimate>,
    pub dumps_per_hour: Option<Estimate>,
    pub dump_mib_per_hour: Option<Estimate>,
    /// Throughput and CPU per record as ratios to `jemalloc-nonprof` and to `glibc`.
    pub throughput_vs_nonprof: Option<Estimate>,
    pub throughput_vs_glibc: Option<Estimate>,
    pub cpu_vs_nonprof: Option<Estimate>,
    pub cpu_vs_glibc: Option<Estimate>,
    pub rss_vs_nonprof: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CostReport {
    pub image: String,
    pub flink: String,
    pub keys: u64,
    pub taskmanager_limit_mib: u64,
    pub warm_up_seconds: f64,
    pub window_seconds: f64,
    pub windows: u32,
    pub rows: Vec<Row>,
    pub runs: Vec<RunRecord>,
    pub made_by: Provenance,
}

/// Returns each configuration's figures: per run, the mean over its windows (runs are the
/// independent measurements); with one run, its windows. Then it adds the ratios.
pub(crate) fn rows(configs: &[Config], runs: &[RunRecord]) -> Vec<Row> {
    let mut rows: Vec<Row> = configs.iter().map(|&c| row(c, runs)).collect();
    add_ratios(&mut rows);
    rows
}

fn row(c: Config, runs: &[RunRecord]) -> Row {
    let of: Vec<&RunRecord> = runs.iter().filter(|r| r.config == c).collect();
    let per_run = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<Estimate> {
        stats::estimate(&of.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let windowed = |f: fn(&Window) -> f64| match of.as_slice() {
        [one] => stats::estimate(&one.windows.iter().map(f).collect::<Vec<_>>()),
        _ => per_run(&|r| {
            stats::estimate(&r.windows.iter().map(f).collect::<Vec<_>>()).map(|e| e.mean)
        }),
    };
    let mib = |kb: f64| kb / 1024.0;
    Row {
        config: c,
        malloc_conf: c.malloc_conf(),
        runs: of.len(),
        throughput: windowed(|w| w.throughput),
        cpu_per_million: windowed(|w| w.cpu_per_million),
        rss_mib: per_run(&|r| stats::mean_of(&r.samples, |s| s.rss_kb.map(|v| v as f64)).map(mib)),
        native_mib: per_run(&|r| {
            stats::mean_of(&r.samples, |s| s.native_kb.map(|v| v as f64)).map(mib)
        }),
        dumps_per_hour: per_run(&|r| stats::per_hour(&r.samples, |s| s.dumps as f64)),
        dump_mib_per_hour: per_run(&|r| {
            stats::per_hour(&r.samples, |s| s.dump_bytes as f64 / 1048576.0)
        }),
        throughput_vs_nonprof: None,
        throughput_vs_glibc: None,
        cpu_vs_nonprof: None,
        cpu_vs_glibc: None,
        rss_vs_nonprof: None,
    }
}

/// Adds the ratios to `jemalloc-nonprof` and `glibc`, where they ran; a ratio to itself is
/// exactly 1 (its errors are one and the same).
fn add_ratios(rows: &mut [Row]) {
    let find = |c: Config| rows.iter().find(|r| r.config == c).cloned();
    let (nonprof, glibc) = (find(Config::JemallocNonprof), find(Config::Glibc));
    let vs = |a: &Option<Estimate>, b: Option<&Option<Estimate>>, same: bool| match (a, b) {
        (Some(a), _) if same => Some(Estimate {
            mean: 1.0,
            stderr: None,
            ci95: None,
            n: a.n,
        }),
        (Some(a), Some(Some(b))) => stats::ratio(a, b),
        _ => None,
    };
    let (n, g) = (nonprof.as_ref(), glibc.as_ref());
    for r in rows.iter_mut() {
        let (is_n, is_g) = (
            r.config == Config::JemallocNonprof,
            r.config == Config::Glibc,
        );
        r.throughput_vs_nonprof = vs(&r.throughput, n.map(|n| &n.throughput), is_n);
        r.throughput_vs_glibc = vs(&r.throughput, g.map(|g| &g.throughput), is_g);
        r.cpu_vs_nonprof = vs(&r.cpu_per_million, n.map(|n| &n.cpu_per_million), is_n);
        r.cpu_vs_glibc = vs(&r.cpu_per_million, g.map(|g| &g.cpu_per_million), is_g);
        r.rss_vs_nonprof = vs(&r.rss_mib, n.map(|n| &n.rss_mib), is_n);
    }
}

/// Returns the table of `summary.md`.
pub(crate) fn table(rows: &[Row]) -> String {
    let e = |x: &Option<Estimate>, d: usize| x.map_or("–".to_string(), |x| x.plus_minus(d));
    let mut out = String::from(
        "| allocator | MALLOC_CONF | runs | records/s | ÷ jemalloc-nonprof | ÷ glibc | CPU s per M records | ÷ jemalloc-nonprof | ÷ glibc | RSS MiB | ÷ jemalloc-nonprof | native MiB | dumps/h | dump MiB/h |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.config.name(),
            r.malloc_conf,
            r.runs,
            e(&r.throughput, 0),
            e(&r.throughput_vs_nonprof, 3),
            e(&r.throughput_vs_glibc, 3),
            e(&r.cpu_per_million, 2),
            e(&r.cpu_vs_nonprof, 3),
            e(&r.cpu_vs_glibc, 3),
            e(&r.rss_mib, 0),
            e(&r.rss_vs_nonprof, 3),
            e(&r.native_mib, 0),
            e(&r.dumps_per_hour, 1),
            e(&r.dump_mib_per_hour, 1),
        ));
    }
    out
}

fn summary(report: &CostReport) -> String {
    format!(
        "# flink-jemalloc: what profiling costs\n\n\
         Image `{}` (Flink {}), the e2e RocksDB job unthrottled and without failures ({} keys, \
         a RocksDB read and write per record), one TaskManager (limit {} MiB, one slot) per run; \
         {} s of warm-up, then {} windows of {} s.\n\n\
         Made by {}.\n\n\
         ![throughput](throughput.svg)\n\n{}\n\
         Each figure is the mean over the runs of each run's mean over its windows, ± its \
         standard error (with one run: over its windows); records/s and CPU per record are \
         least-squares slopes of Flink's `numRecordsIn` of the state operator and the \
         container's cgroup CPU time over each window's samples. Ratios carry both errors \
         (relative errors in quadrature). Native = RSS − committed heap − committed non-heap. \
         Runs went in rounds, each round's order rotated.\n",
        report.image,
        report.flink,
        report.keys,
        report.taskmanager_limit_mib,
        report.warm_up_seconds,
        report.windows,
        report.window_seconds,
        report.made_by.line(),
        table(&report.rows),
    )
}

/// Plots throughput per window, one line per configuration (the mean over its runs per
/// window).
fn throughput_svg(report: &CostReport) -> String {
    const COLORS: [&str; 8] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let series: Vec<plot::Series> = report
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let runs: Vec<&RunRecord> = report
                .runs
                .iter()
                .filter(|r| r.config == row.config)
                .collect();
            let points = (0..report.windows as usize)
                .filter_map(|w| {
                    let v: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r.windows.get(w).map(|x| x.throughput))
                        .collect();
                    let mean = stats::estimate(&v)?.mean;
                    Some(((w as f64 + 0.5) * report.window_seconds, mean))
                })
                .collect();
            plot::Series {
                label: row.config.name(),
                color: COLORS[i % COLORS.len()],
                dashed: row.config.sampling().is_none(),
                points,
            }
        })
        .collect();
    plot::line_chart(
        "RocksDB job throughput per allocator",
        "seconds after the warm-up",
        "records per second",
        &series,
    )
}

/// Writes `cost.json`, `summary.md` and `throughput.svg` into a new directory, then puts
/// it in place of `dir` (an earlier report gives way only now).
pub(crate) fn write_report(report: &CostReport, dir: &Path, work: &Path) -> Result<()> {
    let tmp = work.join("report");
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(
        tmp.join("cost.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    std::fs::write(tmp.join("summary.md"), summary(report))?;
    std::fs::write(tmp.join("throughput.svg"), throughput_svg(report))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Sample;

    fn run(config: Config, round: u32, records_per_s: f64, cpu_rate: f64) -> RunRecord {
        let samples: Vec<Sample> = (0..=12)
            .map(|i| {
                let t = 5.0 * i as f64;
                Sample {
                    t,
                    records: records_per_s * t,
                    cpu_seconds: cpu_rate * t,
                    rss_kb: Some(1024 * 1000),
                    native_kb: Some(1024 * 200),
                    dumps: i / 4,
                    dump_bytes: 1048576 * (i / 4),
                }
            })
            .collect();
        let windows = stats::windows(&samples, 30.0, 2);
        RunRecord {
            config,
            round,
            samples,
            windows,
        }
    }

    #[test]
    fn rows_give_every_column_and_the_ratios() {
        let runs = vec![
            run(Config::JemallocNonprof, 0, 10_000.0, 1.0),
            run(Config::JemallocNonprof, 1, 10_400.0, 1.0),
            run(Config::JemallocSample17, 0, 9_000.0, 1.0),
            run(Config::JemallocSample17, 1, 9_300.0, 1.0),
            run(Config::Glibc, 0, 9_800.0, 1.0),
        ];
        let rows = rows(
            &[
                Config::Glibc,
                Config::JemallocNonprof,
                Config::JemallocSample17,
            ],
            &runs,
        );
        let dense = &rows[2];
        assert_eq!(dense.runs, 2);
        assert_eq!(dense.throughput.unwrap().mean, 9_150.0);
        let r = dense.throughput_vs_nonprof.unwrap();
        assert!((r.mean - 9_150.0 / 10_200.0).abs() < 1e-9);
        assert!(r.stderr.unwrap() > 0.0);
        assert!(dense.cpu_per_million.unwrap().mean > 100.0);
        assert_eq!(dense.dumps_per_hour.unwrap().mean, 3.0 * 3600.0 / 60.0);
        assert_eq!(dense.rss_mib.unwrap().mean, 1000.0);
        assert_eq!(dense.native_mib.unwrap().mean, 200.0);
        assert!(
            rows[0].throughput.unwrap().n == 2,
            "one run of glibc: its two windows"
        );
        let t = table(&rows);
        assert_eq!(t.lines().count(), 2 + 3);
        let header_cells = t.lines().next().unwrap().matches('|').count();
        for line in t.lines() {
            assert_eq!(line.matches('|').count(), header_cells, "{line}");
        }
        assert_eq!(
            rows[1].throughput_vs_nonprof.unwrap().plus_minus(3),
            "1.000"
        );
        assert!(t.contains("| jemalloc-sample17 | `prof:true,lg_prof_sample:17,lg_prof_interval:30` | 2 | 9150 ± 150 |"), "{t}");
    }
}
