//! `cargo xtask analyze <dump dir> --image <layout>`: runs the image's own jeprof and binutils over
//! heap dumps inside the unpacked image (so symbols resolve against the very binaries that ran) and
//! shows the top allocation sites of the last dump, the difference from the first (or `--base`),
//! and a call-graph SVG of that difference. The dump directory is what `collect` or `e2e` writes:
//! `*.heap` plus `root/<path>` for the libraries loaded at run time (RocksDB's JNI library), which
//! are put back where the dumps say they were. It also measures every allocation site's growth
//! (`sites`): per restart given the times of the dumps and of the restarts (`e2e`), else per dump
//! (a user's dumps); and it shows the call chains of the fastest growing sites and a flame graph of
//! what grew (`flame`).

pub(crate) mod flame;
pub(crate) mod known;
pub(crate) mod memory;
pub(crate) mod sites;
pub(crate) mod story;
pub(crate) mod verdict;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::heap_profile;
use crate::progress::{self, Step};
pub(crate) use sites::Per;
use sites::{DumpPoint, Site};
pub(crate) use story::{Story, DUMP_TIMES};

#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// A dump directory: `*.heap` files and `root/` (what `collect` and `e2e` write).
    pub dumps: PathBuf,
    /// The profiled image the dumps came from, as an OCI layout (`cargo xtask image --output`).
    #[arg(long)]
    pub image: PathBuf,
    /// The dump to subtract [default: the first one].
    #[arg(long)]
    pub base: Option<String>,
    /// Output directory [default: <dumps>/analysis].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allocation sites to show.
    #[arg(long, default_value_t = 30)]
    pub top: usize,
}

/// Where the dumps are put inside the rootfs.
const INSIDE: &str = "/tmp/flink-jemalloc-dumps";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Analysis {
    pub dumps: Vec<String>,
    pub base: String,
    pub last: String,
    /// `jeprof --text` of the last dump, allocation lines.
    pub top_last: Vec<String>,
    /// `jeprof --text --base`, allocation lines.
    pub top_diff: Vec<String>,
    /// A positive line of the difference names a `rocksdb::` frame.
    pub rocksdb_in_diff: bool,
    /// Files the last dump maps that the rootfs lacks (their frames stay unnamed).
    pub missing_files: Vec<String>,
    /// What a site's growth is measured against (none when sites were not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_per: Option<Per>,
    /// The dumps read per site, with their restart (or their sequence number).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub site_dumps: Vec<(String, u64)>,
    /// The fastest growing sites (and those the focus pattern names), with their growth
    /// per restart or per dump; sites.json has them all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<Site>,
    /// The verdict in one line (none when sites were not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The sites that grow like a leak, held against the catalogue of known leaks (none
    /// when sites were not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaks: Option<known::Recognition>,
    /// What the RSS grows with (a followed collection's memory samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<memory::Attribution>,
    /// Each site dump's total live bytes (the sum of its sites).
    #[serde(skip)]
    pub totals: Vec<i64>,
    /// Every line of the difference that holds more memory (not only the top ones).
    #[serde(skip)]
    pub growing: Vec<String>,
}

/// How `analyze_in_rootfs` measures the growth of each site.
pub(crate) enum Growth<'a> {
    /// Not at all (an `e2e` run whose dumps have no times).
    No,
    /// Per restart.
    PerRestart(&'a Series<'a>),
    /// Per dump.
    PerDump,
    /// Per hour, by the dumps' times (seconds since the epoch), after the warm-up; the
    /// sites a pattern names are kept whatever their growth (an `e2e` run's leak site).
    PerHour(&'a BTreeMap<String, f64>, Option<&'a regex::Regex>),
}

/// When the dumps and the restarts happened, for the growth per restart of each site.
pub(crate) struct Series<'a> {
    /// `(restart, seen at)`, seconds since the epoch, in order.
    pub restarts: &'a [(u64, f64)],
    /// Each dump's modification time, seconds since the epoch.
    pub dump_times: &'a BTreeMap<String, f64>,
    /// Sites always kept in the analysis, with their chain (a scenario's expected site).
    pub focus: Option<&'a regex::Regex>,
    /// `(from, to)`: when the job ran with its state open. The difference ends at the last
    /// dump written in one, when there is one: dumps come in bursts of allocation, most
    /// while Flink redeploys the job, and one written then finds RocksDB closed.
    pub live: &'a [(f64, f64)],
}

impl Series<'_> {
    /// Returns `dumps` with the time each was written, in order, leaving out those without
    /// a time.
    fn timed(&self, dumps: &[String]) -> Vec<(String, f64)> {
        dumps
            .iter()
            .filter_map(|d| Some((d.clone(), *self.dump_times.get(d)?)))
            .collect()
    }
}

/// Dumps read per site at most (each a jeprof run of a few seconds), evenly spread.
const MAX_SITE_DUMPS: usize = 12;

/// Sites kept in `analysis.json` and the report besides the focused ones.
const TOP_SITES: usize = 15;

/// Returns the allocation lines of a `jeprof --text` report (after `Total:`), at most `n`.
fn top_lines(report: &str, n: usize) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("Total:"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| l.trim().to_string())
        .collect()
}

/// Returns whether a line with growth (not a negative one) names a RocksDB frame.
fn names_rocksdb(lines: &[String]) -> bool {
    lines
        .iter()
        .filter(|l| !l.starts_with('-'))
        .any(|l| l.contains("rocksdb::"))
}

pub fn run(args: AnalyzeArgs) -> Result<()> {
    if !crate::rootless::is_root() {
        // jeprof runs chrooted in the image: in a user namespace unless root.
        crate::rootless::require_userns()?;
    }
    let story = Story::read(&args.dumps)?;
    let dumps = heap_profile::check_dumps(&story.dir)?;
    let series = Series {
        restarts: &story.restarts,
        dump_times: &story.dump_times,
        focus: None,
        live: &[],
    };
    let growth = growth_of(&story, &series, &dumps);
    // The difference and its flame graph start after the warm-up, to show what grows
    // steadily.
    let base = match (&args.base, &growth) {
        (Some(b), _) => Some(b.clone()),
        (None, g) => points(&heap_profile::main_process(&dumps).0, g)
            .and_then(|p| p.dumps.first().map(|(d, _)| d.clone())),
    };
    let work = tempfile::Builder::new()
        .prefix(".flink-jemalloc-analyze-")
        .tempdir()?;
    let work_dir = work.path().to_path_buf();
    let _teardown = crate::teardown::on_interrupt(work_dir.display().to_string(), move || {
        let _ = std::fs::remove_dir_all(&work_dir);
    });
    let layout = crate::oci::open_image(&args.image, work.path())?;
    let bundle = Bundle::unpack(&layout, &work.path().join("bundle"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dumps.join("analysis"));
    let a = analyze_in_rootfs(&bundle, &story.dir, base.as_deref(), &out, args.top, growth)?;
    let mut a = a;
    a.memory = attribution(&a, &story);
    if a.memory.is_some() {
        std::fs::write(
            out.join("analysis.json"),
            serde_json::to_string_pretty(&a)? + "\n",
        )
        .with_context(|| format!("writing {}", out.join("analysis.json").display()))?;
    }
    if let Some(v) = &a.verdict {
        progress::note(format!(
            "{v}; every site in {}",
            out.join("sites.json").display()
        ));
    }
    if let Some(m) = &a.memory {
        progress::note(format!("memory: {}", m.says));
    }
    println!("{}", serde_json::to_string_pretty(&a)?);
    Ok(())
}

/// Returns what the RSS grows with, from the dumps' totals and a collection's memory
/// samples, in the analysis's unit (none per dump, or without samples).
fn attribution(a: &Analysis, story: &Story) -> Option<memory::Attribution> {
    let per = a.growth_per?;
    let native: Vec<(f64, f64)> = (a.site_dumps.iter().zip(&a.totals))
        .map(|((_, at), total)| (*at as f64, *total as f64))
        .collect();
    let (native, rss, jvm) = match per {
        Per::Restart => (
            native,
            memory::per_restart(&story.rss, &story.restarts),
            memory::per_restart(&story.jvm, &story.restarts),
        ),
        Per::Hour => {
            let t0 = *story.dump_times.get(&a.site_dumps.first()?.0)?;
            let native = native.iter().map(|(ms, v)| (ms / 3.6e6, *v)).collect();
            (
                native,
                memory::per_hour(&story.rss, t0),
                memory::per_hour(&story.jvm, t0),
            )
        }
        Per::Dump => return None,
    };
    memory::attribute(&native, &rss, &jvm, per.word())
}

/// Returns how to measure growth: per restart with three or more restarts placed among the
/// dumps, else per hour with the dumps' times, else per dump.
fn growth_of<'a>(story: &'a Story, series: &'a Series<'a>, dumps: &[String]) -> Growth<'a> {
    if !story.restarts.is_empty() {
        let main = heap_profile::main_process(dumps).0;
        if restart_points(&main, series).len() >= 3 {
            return Growth::PerRestart(series);
        }
        progress::note(
            "fewer than three of the job's restarts have a dump: growth per hour instead of per restart",
        );
    }
    if story.dump_times.is_empty() {
        Growth::PerDump
    } else {
        Growth::PerHour(&story.dump_times, None)
    }
}

/// Returns the files the last dump maps that neither the image nor the dump directory's
/// `root/` has, each named in a warning: their frames stay unnamed.
fn missing_files(rootfs: &Path, dir: &Path, last: &str) -> Result<Vec<String>> {
    let mapped = heap_profile::mapped_libraries(&String::from_utf8_lossy(
        &std::fs::read(dir.join(last)).with_context(|| format!("reading {last}"))?,
    ));
    let missing: Vec<String> = mapped
        .into_iter()
        .filter(|p| !p.starts_with("/dev/") && !p.starts_with("/memfd:"))
        .filter(|p| !heap_profile::is_tmp_data(p))
        .filter(|p| !rootfs.join(p.trim_start_matches('/')).exists())
        .collect();
    for m in &missing {
        progress::note(format!(
            "warning: {m} is mapped by the dumps but not in the image or {}/{}; its frames stay unnamed",
            dir.display(),
            heap_profile::ROOT
        ));
    }
    Ok(missing)
}

/// Runs the image's jeprof, chrooted in `rootfs`, with `args`, and returns its standard
/// output.
fn jeprof(rootfs: &Path, args: &[&str]) -> Result<String> {
    let mut argv = vec![
        "env",
        "-i",
        "PATH=/opt/jemalloc/bin:/usr/local/bin:/usr/bin:/bin",
        "jeprof",
    ];
    argv.extend(args);
    crate::rootless::run_in(
        rootfs,
        &argv,
        "running the image's jeprof (is it a profiled image?)",
    )
}

/// Returns the dump to subtract: `--base` (one of the dumps) or the first.
fn base_dump(base: Option<&str>, dumps: &[String], dir: &Path) -> Result<String> {
    let Some(b) = base else {
        return Ok(dumps[0].clone());
    };
    let name = Path::new(b)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !dumps.contains(&name) {
        bail!("--base {b} is not one of the dumps in {}", dir.display());
    }
    Ok(name)
}

/// Stages `dir` into `rootfs` and runs the rootfs's jeprof (chrooted) over the dumps;
/// writes `top.txt`, `diff.txt`, `diff.svg` (jeprof's call graph), `diff.collapsed` and
/// `flame.svg` (what grew), `sites.json` unless `growth` is `No`, and `analysis.json` to `out`.
pub(crate) fn analyze_in_rootfs(
    bundle: &Bundle,
    dir: &Path,
    base: Option<&str>,
    out: &Path,
    top: usize,
    growth: Growth,
) -> Result<Analysis> {
    let (rootfs, java) = (&bundle.rootfs(), &bundle.java());
    let staged = heap_profile::stage_into_rootfs(dir, rootfs, INSIDE)?;
    let (dumps, others) = heap_profile::main_process(&staged);
    if !others.is_empty() {
        progress::note(format!(
            "{}: left out {} dump(s) of other processes than the one with the most ({})",
            dir.display(),
            others.len(),
            others.join(", ")
        ));
    }
    if dumps.len() < 2 {
        bail!(
            "{} holds {} heap dump(s); at least two are needed for a difference \
             (lower lg_prof_interval in MALLOC_CONF or run longer)",
            dir.display(),
            dumps.len()
        );
    }
    let base = base_dump(base, &dumps, dir)?;
    let last = diff_last(&dumps, &base, &growth, dir);
    let missing_files = missing_files(rootfs, dir, &last)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (text_last, text_diff, stacks) = jeprof_outputs(rootfs, java, &base, &last, out)?;
    let picked = points(&dumps, &growth);
    let growth_per = picked.as_ref().map(|p| p.per);
    let (site_dumps, sites, totals) = match picked {
        Some(picked) => site_growth(rootfs, java, picked, dumps.len(), &stacks, out)?,
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let (verdict, leaks) = match growth_per {
        Some(per) => {
            let (v, l) = known::judge(&sites, per, bundle)?;
            (Some(v), Some(l))
        }
        None => (None, None),
    };
    let top_diff = top_lines(&text_diff, top);
    let growing: Vec<String> = top_lines(&text_diff, usize::MAX)
        .into_iter()
        .filter(|l| !l.starts_with('-'))
        .collect();
    let a = Analysis {
        rocksdb_in_diff: names_rocksdb(&growing),
        top_last: top_lines(&text_last, top),
        top_diff,
        dumps,
        base,
        last,
        missing_files,
        growth_per,
        site_dumps,
        sites,
        verdict,
        leaks,
        memory: None,
        totals,
        growing,
    };
    write(
        out,
        "analysis.json",
        (serde_json::to_string_pretty(&a)? + "\n").as_bytes(),
    )?;
    Ok(a)
}

/// Returns the difference's last dump: the last one, or, with a series that knows when the
/// job ran, the last one written while it did (a note says how many later ones are left out).
fn diff_last(dumps: &[String], base: &str, growth: &Growth, dir: &Path) -> String {
    let last = dumps[dumps.len() - 1].clone();
    let Growth::PerRestart(series) = growth else {
        return last;
    };
    let Some(running) = sites::last_within(&series.timed(dumps), base, series.live) else {
        return last;
    };
    let later = dumps.len() - 1 - dumps.iter().position(|d| *d == running).unwrap_or(0);
    if later > 0 {
        progress::note(format!(
            "{}: the difference ends at {running}, the last dump written while the job ran \
             (the {later} later one(s) were written around a restart)",
            dir.display()
        ));
    }
    running
}

fn write(out: &Path, name: &str, body: &[u8]) -> Result<()> {
    let p = out.join(name);
    std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))
}

/// Writes jeprof's views of `last` and of `last` minus `base` to `out`: `top.txt`,
/// `diff.txt`, `diff.svg` (the call graph), `diff.collapsed` and `flame.svg` (what grew);
/// returns the two texts and the collapsed stacks.
fn jeprof_outputs(
    rootfs: &Path,
    java: &str,
    base: &str,
    last: &str,
    out: &Path,
) -> Result<(String, String, Vec<sites::Stack>)> {
    let (base_in, last_in) = (format!("{INSIDE}/{base}"), format!("{INSIDE}/{last}"));
    let step = Step::start(format!("jeprof over {base} .. {last}"));
    let base_flag = format!("--base={base_in}");
    let text_last = jeprof(rootfs, &["--text", "--show_bytes", java, &last_in])?;
    let text_diff = jeprof(
        rootfs,
        &["--text", "--show_bytes", &base_flag, java, &last_in],
    )?;
    let svg = jeprof(
        rootfs,
        &["--svg", "--show_bytes", &base_flag, java, &last_in],
    )?;
    // An image built before patch 0003 has a jeprof without --collapsed: everything but the
    // flame graph and the call chains still works.
    let collapsed = match jeprof(rootfs, &["--collapsed", &base_flag, java, &last_in]) {
        Ok(c) => c,
        Err(_) => {
            progress::note(
                "this image's jeprof has no --collapsed (built before patch 0003): no flame graph \
                 or call chains; rebuild it with `cargo xtask image`",
            );
            String::new()
        }
    };
    step.done("");
    let stacks = sites::parse_collapsed(&collapsed);
    let growing = sites::growing_lines(&stacks);
    write(out, "top.txt", text_last.as_bytes())?;
    write(out, "diff.txt", text_diff.as_bytes())?;
    write(out, "diff.svg", svg.as_bytes())?;
    write(
        out,
        "diff.collapsed",
        (growing.join("\n") + "\n").as_bytes(),
    )?;
    let flame = flame::flame_graph(
        "What grew between two heap dumps",
        &format!("{last} minus {base} (jeprof --collapsed --base), bytes"),
        &growing,
    )?;
    write(out, "flame.svg", &flame)?;
    Ok((text_last, text_diff, stacks))
}

/// The dumps read per site with their restart or sequence number, the sites kept, and each
/// dump's total.
type SiteGrowth = (Vec<(String, u64)>, Vec<Site>, Vec<i64>);

/// The dumps whose sites are read, with their restart or sequence number, and the sites
/// kept whatever their growth.
struct Picked<'a> {
    per: Per,
    dumps: Vec<(String, u64)>,
    focus: Option<&'a regex::Regex>,
}

/// Returns the dumps whose sites are read for `growth`, with their restart, sequence number
/// or milliseconds since the first dump after the warm-up (per hour).
fn points<'a>(dumps: &[String], growth: &Growth<'a>) -> Option<Picked<'a>> {
    match growth {
        Growth::No => None,
        Growth::PerRestart(series) => Some(Picked {
            per: Per::Restart,
            dumps: restart_points(dumps, series),
            focus: series.focus,
        }),
        Growth::PerDump => Some(Picked {
            per: Per::Dump,
            dumps: dump_points(dumps),
            focus: None,
        }),
        Growth::PerHour(times, focus) => Some(Picked {
            per: Per::Hour,
            dumps: hour_points(dumps, times),
            focus: *focus,
        }),
    }
}

/// Returns the warm-up of a series of dumps without restarts, in seconds: the first fifth of
/// its span, at most five minutes (the JVM's class loading and compilation, RocksDB's first
/// block-cache fill).
pub(crate) fn warm_up(span: f64) -> f64 {
    (span / 5.0).min(300.0)
}

/// Returns the dumps to read for the growth per hour: those written after the warm-up, up
/// to [`MAX_SITE_DUMPS`] evenly spread, with the milliseconds since the first of them.
fn hour_points(dumps: &[String], times: &BTreeMap<String, f64>) -> Vec<(String, u64)> {
    let timed: Vec<(&String, f64)> = dumps
        .iter()
        .filter_map(|d| Some((d, *times.get(d)?)))
        .collect();
    let (Some(first), Some(last)) = (timed.first(), timed.last()) else {
        return Vec::new();
    };
    let from = first.1 + warm_up(last.1 - first.1);
    let kept: Vec<(&String, f64)> = timed.into_iter().filter(|(_, t)| *t >= from).collect();
    let t0 = kept.first().map_or(0.0, |k| k.1);
    sites::pick(kept.len(), MAX_SITE_DUMPS)
        .into_iter()
        .map(|i| {
            (
                kept[i].0.clone(),
                ((kept[i].1 - t0) * 1000.0).round() as u64,
            )
        })
        .collect()
}

/// Returns the dumps to read for the growth per restart: the last dump written while each
/// restart's job ran, up to [`MAX_SITE_DUMPS`] of them evenly spread, with their restart.
fn restart_points(dumps: &[String], series: &Series) -> Vec<(String, u64)> {
    let per_restart = sites::last_per_restart(&series.timed(dumps), series.restarts, series.live);
    sites::pick(per_restart.len(), MAX_SITE_DUMPS)
        .into_iter()
        .map(|i| per_restart[i].clone())
        .collect()
}

/// Returns the dumps to read for the growth per dump: up to [`MAX_SITE_DUMPS`] of them
/// evenly spread, with their sequence number (their place in the list where a name has none).
fn dump_points(dumps: &[String]) -> Vec<(String, u64)> {
    sites::pick(dumps.len(), MAX_SITE_DUMPS)
        .into_iter()
        .map(|i| {
            let seq = heap_profile::dump_seq(&dumps[i]).unwrap_or(i as u64);
            (dumps[i].clone(), seq)
        })
        .collect()
}

/// Measures the growth of every site over the `picked` dumps (of `total`), each read with
/// `jeprof --text`, two at a time; `sites.json` gets the whole table, and the result holds
/// the fastest growing and the focused sites with their chains.
fn site_growth(
    rootfs: &Path,
    java: &str,
    picked: Picked,
    total: usize,
    stacks: &[sites::Stack],
    out: &Path,
) -> Result<SiteGrowth> {
    let Picked {
        per,
        dumps: picked,
        focus,
    } = picked;
    let step = Step::start(format!(
        "allocation sites of {} of {total} dumps (jeprof --text each)",
        picked.len(),
    ));
    let names: Vec<&String> = picked.iter().map(|(d, _)| d).collect();
    let texts = read_dumps(rootfs, java, &names)?;
    let points: Vec<DumpPoint> = picked
        .into_iter()
        .zip(texts)
        .map(|((dump, at), text)| DumpPoint {
            dump,
            at,
            sites: sites::flat_sites(&text),
        })
        .collect();
    let mut table = sites::site_table(&points);
    for s in table.iter_mut() {
        s.chain = sites::chain_of(stacks, &s.site);
        if per == Per::Hour {
            // The fit was per millisecond.
            s.growth = s.growth.map(|g| g.scaled(3_600_000.0));
        }
    }
    step.done(format!("{} sites", table.len()));
    // Each dump with its restart, or its sequence number (`seq`) for growth per dump.
    let key = match per {
        Per::Restart => "restart",
        Per::Dump => "seq",
        Per::Hour => "ms",
    };
    let dumps: Vec<serde_json::Value> = points
        .iter()
        .map(|p| serde_json::json!({ "dump": p.dump, key: p.at, "sites": p.sites }))
        .collect();
    let json = serde_json::json!({ "per": per, "dumps": dumps, "sites": &table });
    std::fs::write(
        out.join("sites.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let kept = table
        .into_iter()
        .enumerate()
        .filter(|(i, s)| *i < TOP_SITES || focus.is_some_and(|f| f.is_match(&s.site)))
        .map(|(_, s)| s)
        .collect();
    let site_dumps = points.iter().map(|p| (p.dump.clone(), p.at)).collect();
    let totals = points.iter().map(|p| p.sites.values().sum()).collect();
    Ok((site_dumps, kept, totals))
}

/// Runs `jeprof --text --show_bytes` on each dump, two at a time (two cores; each is mostly
/// symbol lookups of one process).
fn read_dumps(rootfs: &Path, java: &str, dumps: &[&String]) -> Result<Vec<String>> {
    let one = |d: &String| {
        jeprof(
            rootfs,
            &["--text", "--show_bytes", java, &format!("{INSIDE}/{d}")],
        )
    };
    let mut texts = Vec::with_capacity(dumps.len());
    for pair in dumps.chunks(2) {
        let got: Vec<Result<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = pair.iter().map(|d| s.spawn(move || one(d))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("a jeprof thread panicked"))
                })
                .collect()
        });
        for t in got {
            texts.push(t?);
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_hour_points_leave_out_the_warm_up() {
        let dumps: Vec<String> = (0..50)
            .map(|i| format!("jeprof.out.1.{i}.i{i}.heap"))
            .collect();
        // A dump every 2 s for 100 s: the first fifth (20 s) is warm-up.
        let times: BTreeMap<String, f64> = dumps
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), 1000.0 + 2.0 * i as f64))
            .collect();
        let p = hour_points(&dumps, &times);
        assert_eq!(p.len(), MAX_SITE_DUMPS);
        assert_eq!(p[0], ("jeprof.out.1.10.i10.heap".to_string(), 0));
        assert_eq!(
            p.last().unwrap(),
            &("jeprof.out.1.49.i49.heap".to_string(), 78_000)
        );
        assert_eq!(warm_up(3600.0 * 5.0), 300.0, "at most five minutes");
    }

    #[test]
    fn top_lines_follow_total() {
        let r = "Using local file x\nTotal: 100 B\n  50  50.0%  50.0%  50 50.0% rocksdb::Arena::AllocateNewBlock\n  -5  -5.0% 45.0% -5 -5.0% os::malloc\n";
        assert_eq!(top_lines(r, 10).len(), 2);
        assert!(top_lines(r, 10)[0].ends_with("rocksdb::Arena::AllocateNewBlock"));
        assert!(names_rocksdb(&top_lines(r, 10)));
        let shrinking = vec!["-50 -50.0% 0% -50 -50% rocksdb::Arena::AllocateNewBlock".into()];
        assert!(!names_rocksdb(&shrinking));
    }
}
