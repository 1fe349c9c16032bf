//! Allocation sites over a series of heap dumps, pure: the flat bytes per site of each
//! dump's `jeprof --text`, the restart each dump was written in (from its time and the
//! times the restarts were seen), and per site the bytes at the first and last dump and the
//! least-squares growth per restart (or per dump) with its standard error and R², sorted by
//! growth. The call chain of a site comes from jeprof's collapsed stacks (`--collapsed`,
//! root first). A recorded `e2e` report's sites are read back with [`recorded`].

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::fit::{fit, Fit};

/// Returns the flat bytes per allocation site of a `jeprof --text --show_bytes` report: the
/// lines after `Total:`, `flat flat% sum% cum cum% name` (a name may contain spaces).
pub(crate) fn flat_sites(report: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for line in report
        .lines()
        .skip_while(|l| !l.starts_with("Total:"))
        .skip(1)
    {
        let Some(flat) = line
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<f64>().ok())
        else {
            continue;
        };
        let mut rest = line.trim_start();
        for _ in 0..5 {
            rest = match rest.find(char::is_whitespace) {
                Some(end) => rest[end..].trim_start(),
                None => "",
            };
        }
        if !rest.is_empty() && flat != 0.0 {
            *out.entry(rest.to_string()).or_insert(0) += flat as i64;
        }
    }
    out
}

/// Returns the restart a dump written at `t` belongs to: the last restart seen at or before
/// `t` (`restarts` are `(restart, seen at)` in order; before the first, restart 0).
pub(crate) fn restart_at(restarts: &[(u64, f64)], t: f64) -> u64 {
    restarts
        .iter()
        .take_while(|(_, at)| *at <= t)
        .last()
        .map_or(0, |(r, _)| *r)
}

/// Returns the dumps to read, one per restart at the same phase of each: the last dump written
/// while that restart's job ran (within one of `live`, `(from, to)`), so every point holds the
/// state the restart built and none the moment Flink redeploys the job; a restart with no dump in
/// its window has no point. Without `live` (restarts whose times alone are known), it takes the
/// last dump written before the next restart. Dumps from before the job ran (the first restart's
/// time) are left out; the result is `(dump, restart)` in order. `dumps` are `(name, written at)`
/// in dump order.
pub(crate) fn last_per_restart(
    dumps: &[(String, f64)],
    restarts: &[(u64, f64)],
    live: &[(f64, f64)],
) -> Vec<(String, u64)> {
    let start = restarts.first().map_or(f64::MIN, |r| r.1);
    let running = |t: f64| live.is_empty() || live.iter().any(|(from, to)| *from <= t && t < *to);
    let mut per: BTreeMap<u64, &String> = BTreeMap::new();
    for (name, t) in dumps.iter().filter(|(_, t)| *t >= start && running(*t)) {
        per.insert(restart_at(restarts, *t), name);
    }
    per.into_iter().map(|(r, n)| (n.clone(), r)).collect()
}

/// Returns the last dump written within one of `windows` (`(from, to)`) and after `base` in
/// dump order, when there is one: `dumps` are `(name, written at)` in dump order.
pub(crate) fn last_within(
    dumps: &[(String, f64)],
    base: &str,
    windows: &[(f64, f64)],
) -> Option<String> {
    let after_base = dumps.iter().skip_while(|(n, _)| n != base).skip(1);
    after_base
        .filter(|(_, t)| windows.iter().any(|(from, to)| from <= t && t < to))
        .last()
        .map(|(n, _)| n.clone())
}

/// The unit of a site's growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Per {
    /// Restarts of the job, placed by the dumps' and the restarts' times (`e2e`).
    Restart,
    /// Dumps, by jemalloc's sequence number: with interval dumps, each
    /// 2^`lg_prof_interval` bytes allocated after the one before (a user's dumps).
    Dump,
    /// Hours, by the times the dumps were written (a user's dumps with times and no
    /// failure times).
    Hour,
}

impl Per {
    /// Returns the unit in words: `restart`, `dump`, `hour`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Per::Restart => "restart",
            Per::Dump => "dump",
            Per::Hour => "hour",
        }
    }
}

/// Names a frame of jeprof's collapsed stacks as `--text` names it: as jeprof's own
/// `ShortFunctionName` does, it removes argument lists, template arguments and the
/// `<address>` it appends, then a leading return type, and writes an inlined frame's
/// `[inline]` as ` (inline)`.
fn short_name(frame: &str) -> String {
    static ARGS: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\([^()]*\)(\s*const)?").expect("a regex"));
    static TEMPLATE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"<[^<>]*>").expect("a regex"));
    static LEADING_TYPE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^.*\s+(\w+::)").expect("a regex"));
    let (frame, inline) = match frame.trim().strip_suffix("[inline]") {
        Some(f) => (f, " (inline)"),
        None => (frame.trim(), ""),
    };
    let mut f = frame.to_string();
    for re in [&*ARGS, &*TEMPLATE] {
        while re.is_match(&f) {
            f = re.replace_all(&f, "").into_owned();
        }
    }
    let f = LEADING_TYPE.replace(&f, "$1");
    format!("{f}{inline}")
}

/// Returns up to `max` (at least 2) of `n` items, evenly spread, the first and last always
/// included.
pub(crate) fn pick(n: usize, max: usize) -> Vec<usize> {
    let max = max.max(2);
    if n <= max {
        return (0..n).collect();
    }
    let mut out: Vec<usize> = (0..max)
        .map(|i| (i as f64 * (n - 1) as f64 / (max - 1) as f64).round() as usize)
        .collect();
    out.dedup();
    out
}

/// One dump: when (its restart, or its sequence number) and its sites.
#[derive(Debug, Clone)]
pub(crate) struct DumpPoint {
    pub dump: String,
    pub at: u64,
    pub sites: BTreeMap<String, i64>,
}

/// An allocation site over the dumps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Site {
    pub site: String,
    pub first_bytes: i64,
    pub last_bytes: i64,
    /// Bytes per restart (or per dump), least squares over every dump read (a dump
    /// without the site counts as 0).
    pub growth: Option<Fit>,
    /// The heaviest growing call chain ending in the site, the site first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

/// One analysed run of a recorded `e2e` report: the unit of its sites' growth, and the sites.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RecordedRun {
    pub growth_per: Per,
    pub sites: Vec<Site>,
}

/// Returns the analysed runs (the profiling allocators') of the `e2e` report in `dir`, as
/// its `report.json` keeps them (`runs[].analysis`).
pub(crate) fn recorded(dir: &Path) -> Result<Vec<RecordedRun>> {
    let path = dir.join("report.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    report["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|run| !run["analysis"].is_null())
        .map(|run| {
            serde_json::from_value(run["analysis"].clone())
                .with_context(|| format!("{}: a run's analysis", path.display()))
        })
        .collect()
}

impl Site {
    pub(crate) fn slope(&self) -> f64 {
        self.growth.map_or(0.0, |g| g.slope)
    }

    /// Returns whether it grows: the whole 95% interval of its slope is above zero.
    pub(crate) fn grows(&self) -> bool {
        self.growth.is_some_and(|g| g.grows())
    }

    /// Returns what it grows by at least, at 95%: the interval's lower end (growing sites
    /// only).
    pub(crate) fn at_least(&self) -> f64 {
        self.growth
            .and_then(|g| g.ci95)
            .map_or(f64::NEG_INFINITY, |(lo, _)| lo)
    }
}

/// Orders the site table: the sites that grow first, by what they grow by at least
/// (steady growth before large but noisy growth: the JVM's warm-up and its collections make
/// big sites swing), then the others by slope.
fn by_evidence(a: &Site, b: &Site) -> std::cmp::Ordering {
    b.grows()
        .cmp(&a.grows())
        .then_with(|| match a.grows() {
            true => b.at_least().total_cmp(&a.at_least()),
            false => b.slope().total_cmp(&a.slope()),
        })
        .then(a.site.cmp(&b.site))
}

/// Formats a site's growth for people: `+516.7 ± 10.4 KiB per dump, 95% [+490.0, +543.4]:
/// grows, R² 1.00` (the interval and R² from three dumps).
pub(crate) fn growth_text(site: &Site, unit: &str) -> String {
    let Some(g) = site.growth else {
        return "no line".into();
    };
    // Use MiB from 10 MiB on (a site's growth per hour), KiB below.
    let (scale, name) = if g.slope.abs() >= 10.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else {
        (1024.0, "KiB")
    };
    let mut t = format!("{} {name} per {unit}", g.plus_minus(scale, 1));
    if g.ci95.is_some() {
        t += &format!(", 95% {}: {}", g.interval(scale, 1), g.trend().words());
    }
    // Two points are always on a line: R² says something from three on.
    if let Some(r2) = g.r2.filter(|_| g.n >= 3) {
        t += &format!(", R² {r2:.2}");
    }
    t
}

/// Returns every site of any dump with its growth: those that grow first, by what they grow
/// by at least; then the others, by slope.
pub(crate) fn site_table(points: &[DumpPoint]) -> Vec<Site> {
    let names: BTreeSet<&String> = points.iter().flat_map(|p| p.sites.keys()).collect();
    let bytes = |p: &DumpPoint, n: &str| p.sites.get(n).copied().unwrap_or(0);
    let mut out: Vec<Site> = names
        .into_iter()
        .map(|n| {
            let xy: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.at as f64, bytes(p, n) as f64))
                .collect();
            Site {
                site: n.clone(),
                first_bytes: points.first().map_or(0, |p| bytes(p, n)),
                last_bytes: points.last().map_or(0, |p| bytes(p, n)),
                growth: fit(&xy),
                chain: Vec::new(),
            }
        })
        .collect();
    out.sort_by(by_evidence);
    out
}

/// A collapsed stack: its frames, root first, and its bytes.
pub(crate) type Stack = (Vec<String>, i64);

/// Parses collapsed stacks (`root;…;leaf count` lines) as (frames root first, by their short
/// names, count), sums the stacks that are the same by those names, and sorts them by stack
/// (jeprof prints them in hash order).
pub(crate) fn parse_collapsed(text: &str) -> Vec<Stack> {
    let mut sum: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    for l in text.lines() {
        let Some((stack, n)) = l.trim_end().rsplit_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<i64>() else {
            continue;
        };
        *sum.entry(stack.split(';').map(short_name).collect())
            .or_insert(0) += n;
    }
    sum.into_iter().collect()
}

/// Returns the heaviest growing stack whose leaf is `site`, leaf first.
pub(crate) fn chain_of(stacks: &[Stack], site: &str) -> Vec<String> {
    stacks
        .iter()
        .filter(|(frames, n)| *n > 0 && frames.last().is_some_and(|f| f == site))
        .max_by_key(|(_, n)| *n)
        .map(|(frames, _)| frames.iter().rev().cloned().collect())
        .unwrap_or_default()
}

/// Returns the collapsed lines that grew (a flame graph has no negative widths), sorted.
pub(crate) fn growing_lines(stacks: &[Stack]) -> Vec<String> {
    stacks
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(frames, n)| format!("{} {n}", frames.join(";")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Using local file /opt/java/openjdk/bin/java.\n\
        Total: 1500000 B\n\
        \x20 972800  64.9%  64.9%   972800  64.9% rocksdb::port::cacheline_aligned_alloc\n\
        \x20 500000  33.3%  98.2%   500000  33.3% operator new[]\n\
        \x20      0   0.0%  98.2%   972800  64.9% rocksdb::StatisticsImpl::StatisticsImpl\n";

    #[test]
    fn flat_bytes_per_site() {
        let s = flat_sites(TEXT);
        assert_eq!(s["rocksdb::port::cacheline_aligned_alloc"], 972800);
        assert_eq!(s["operator new[]"], 500000);
        assert!(!s.contains_key("rocksdb::StatisticsImpl::StatisticsImpl"));
        assert!(flat_sites("no total\n 1 1% 1% 1 1% x\n").is_empty());
    }

    #[test]
    fn dumps_fall_between_restarts() {
        let seen = [(0, 100.0), (1, 104.0), (3, 112.0)];
        assert_eq!(restart_at(&seen, 99.0), 0);
        assert_eq!(restart_at(&seen, 104.0), 1);
        assert_eq!(restart_at(&seen, 111.9), 1);
        assert_eq!(restart_at(&seen, 500.0), 3);
        assert_eq!(pick(3, 10), vec![0, 1, 2]);
        assert_eq!(pick(10, 4), vec![0, 3, 6, 9]);
        assert_eq!(pick(100, 2), vec![0, 99]);
    }

    #[test]
    fn a_leak_grows_linearly_and_comes_first() {
        let point = |restart: u64, leak: i64, steady: i64| DumpPoint {
            dump: format!("d{restart}"),
            at: restart,
            sites: [("leak".to_string(), leak), ("steady".to_string(), steady)]
                .into_iter()
                .filter(|(_, b)| *b != 0)
                .collect(),
        };
        let pts: Vec<DumpPoint> = (0..6)
            .map(|r| {
                point(
                    r,
                    486400 * (r as i64 + 1),
                    1_000_000 + (r as i64 % 2) * 5000,
                )
            })
            .chain([point(6, 486400 * 7, 0)])
            .collect();
        let t = site_table(&pts);
        assert_eq!(t[0].site, "leak");
        let g = t[0].growth.unwrap();
        assert!(
            (g.slope - 486400.0).abs() < 1.0 && g.r2.unwrap() > 0.999,
            "{g:?}"
        );
        assert_eq!((t[0].first_bytes, t[0].last_bytes), (486400, 486400 * 7));
        assert_eq!(t[1].last_bytes, 0);
        assert_eq!(
            growth_text(&t[0], "dump"),
            "+475.0 ± 0.0 KiB per dump, 95% [+475.0, +475.0]: grows, R² 1.00"
        );
        let two = site_table(&pts[..2]);
        assert_eq!(growth_text(&two[0], "restart"), "+475.0 KiB per restart");
        let mut hourly = t[0].clone();
        hourly.growth = hourly.growth.map(|g| g.scaled(100.0));
        let text = growth_text(&hourly, "hour");
        assert!(
            text.starts_with("+46.4 ± 0.0 MiB per hour, 95% [+46.4, +46.4]"),
            "{text}"
        );
    }

    /// `analyze` of the dumps of a `flink-39923` run recorded at commit 48e8949 (no restart
    /// times: growth per dump, twelve dumps by sequence number), four sites of its
    /// `sites.json`. The JVM's
    /// `os::malloc` grows most on average (its warm-up), but only the leak grows steadily:
    /// it leads; by slope it came third.
    #[test]
    fn the_recorded_leak_leads_the_warm_up_by_evidence() {
        let seq = [0u64, 7, 14, 20, 27, 34, 41, 48, 55, 61, 68, 75];
        let series: [(&str, [i64; 12]); 4] = [
            (
                "os::malloc@c218c0",
                [
                    0, 0, 93326912, 140121312, 140121312, 140121312, 140121312, 140121312,
                    140121312, 140121312, 140121312, 140121312,
                ],
            ),
            (
                "os::malloc@c21a20",
                [
                    0, 0, 32758090, 45106476, 28693517, 25831966, 44685337, 42685801, 28435652,
                    45457129, 25341781, 27102419,
                ],
            ),
            (
                "rocksdb::port::cacheline_aligned_alloc",
                [
                    0, 0, 0, 0, 534069, 2136279, 3877923, 4272558, 5340698, 6548272, 7476977,
                    9079187,
                ],
            ),
            (
                "rocksdb::Arena::AllocateNewBlock",
                [
                    0, 0, 0, 0, 0, 8391423, 1048927, 17831773, 6293567, 12587134, 0, 0,
                ],
            ),
        ];
        let points: Vec<DumpPoint> = seq
            .iter()
            .enumerate()
            .map(|(i, at)| DumpPoint {
                dump: format!("jeprof.out.1.{at}.i{at}.heap"),
                at: *at,
                sites: series
                    .iter()
                    .filter(|(_, b)| b[i] != 0)
                    .map(|(n, b)| (n.to_string(), b[i]))
                    .collect(),
            })
            .collect();
        let t = site_table(&points);
        assert_eq!(t[0].site, "rocksdb::port::cacheline_aligned_alloc");
        assert!(t[0].grows());
        assert!(t[1..].iter().all(|s| !s.grows()), "{t:?}");
        assert!(
            t[1].slope() > t[0].slope(),
            "the warm-up is larger on average"
        );
    }

    #[test]
    fn one_dump_per_restart_after_the_job_started() {
        let dumps: Vec<(String, f64)> = [
            ("startup", 90.0),
            ("a", 100.5),
            ("b", 101.0),
            ("c", 104.5),
            ("d", 113.0),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .collect();
        let seen = [(0, 100.0), (1, 104.0), (3, 112.0)];
        assert_eq!(
            last_per_restart(&dumps, &seen, &[]),
            vec![
                ("b".to_string(), 0),
                ("c".to_string(), 1),
                ("d".to_string(), 3)
            ]
        );
        // With the job's live windows: `b` was written while restart 0's job ran, `c` in
        // restart 1's redeploy (before its window opened), `d` in restart 3's window.
        let live = [(100.0, 103.5), (106.0, 111.5), (114.0, f64::INFINITY)];
        let dumps = [dumps.clone(), vec![("e".to_string(), 114.5)]].concat();
        assert_eq!(
            last_per_restart(&dumps, &seen, &live),
            vec![("b".to_string(), 0), ("e".to_string(), 3)]
        );
    }

    #[test]
    fn the_difference_ends_at_the_last_dump_written_while_the_job_ran() {
        // The matrix run that failed its verdict: the last dump (i14) was written 0.6 s
        // after the last failure, while Flink redeployed the job with RocksDB closed.
        let dumps: Vec<(String, f64)> =
            [("i0", 96.4), ("i11", 101.5), ("i13", 107.6), ("i14", 112.1)]
                .iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect();
        let live = [(100.7, 103.6), (105.5, 111.0), (112.3, f64::INFINITY)];
        assert_eq!(last_within(&dumps, "i0", &live), Some("i13".to_string()));
        let open = [(100.7, f64::INFINITY)];
        assert_eq!(last_within(&dumps, "i0", &open), Some("i14".to_string()));
        // No dump in a window after the base gives None: the caller keeps the last dump.
        assert_eq!(last_within(&dumps, "i0", &[]), None);
        assert_eq!(last_within(&dumps, "i13", &live), None);
        assert_eq!(last_within(&dumps, "gone", &open), None);
    }

    #[test]
    fn frames_by_their_short_names() {
        assert_eq!(
            short_name("rocksdb::port::cacheline_aligned_alloc(unsigned long)<0000000000692040>"),
            "rocksdb::port::cacheline_aligned_alloc"
        );
        assert_eq!(
            short_name("rocksdb_open_helper(JNIEnv_*, std::function<rocksdb::Status (int)>)<00ab>"),
            "rocksdb_open_helper"
        );
        assert_eq!(short_name("rocksdb::Foo::bar() const"), "rocksdb::Foo::bar");
        assert_eq!(
            short_name(
                "rocksdb::CoreLocalArray<rocksdb::StatisticsImpl::StatisticsData>::CoreLocalArray()"
            ),
            "rocksdb::CoreLocalArray::CoreLocalArray"
        );
        assert_eq!(
            short_name("void rocksdb::Foo::bar(int)"),
            "rocksdb::Foo::bar"
        );
        assert_eq!(short_name("os::malloc@c218c0"), "os::malloc@c218c0");
        assert_eq!(short_name("??:0"), "??:0");
        // As jeprof's ShortFunctionName has it.
        assert_eq!(
            short_name("std::less<int>::operator()"),
            "std::less::operator"
        );
        assert_eq!(
            short_name("rocksdb::Foo::get(int)[inline]"),
            "rocksdb::Foo::get (inline)"
        );
    }

    #[test]
    fn chains_from_collapsed_stacks() {
        let stacks = parse_collapsed(
            "Java_org_rocksdb_Statistics_newStatistics;rocksdb::StatisticsImpl::StatisticsImpl;rocksdb::port::cacheline_aligned_alloc 972800\n\
             main;rocksdb::port::cacheline_aligned_alloc(unsigned long)<0000000000692040> 1000\n\
             main;rocksdb::port::cacheline_aligned_alloc 500\n\
             main;os::malloc -2000\n",
        );
        assert_eq!(
            chain_of(&stacks, "rocksdb::port::cacheline_aligned_alloc"),
            vec![
                "rocksdb::port::cacheline_aligned_alloc",
                "rocksdb::StatisticsImpl::StatisticsImpl",
                "Java_org_rocksdb_Statistics_newStatistics"
            ]
        );
        assert!(chain_of(&stacks, "os::malloc").is_empty());
        assert_eq!(growing_lines(&stacks).len(), 2);
        assert!(growing_lines(&stacks)
            .contains(&"main;rocksdb::port::cacheline_aligned_alloc 1500".to_string()));
    }
}
