//! `summary.md`, the e2e report for people: the scenario and its verdict, what made it
//! (commit and machine), the growth per restart of every allocator with its robust error,
//! 95% interval and what that says (grows, shrinks, no trend shown), the samples, and for
//! the profiling run the allocation sites that grew (per restart, with R² and the leading
//! site's call chain, the known leaks they are or that they are none), the flame graph and
//! jeprof's difference.

use std::fmt::Write;

use super::model::{whole_mib, Report, RunRecord};
use super::verdict::fastest_match;
use crate::analyze::known::Recognition;
use crate::analyze::sites::Per;
use crate::analyze::sites::Site;
use crate::analyze::Analysis;
use crate::fit::Fit;
use crate::progress::flag;

/// Formats KiB per restart as MiB: `+1.20 ± 0.30 [-0.10, +2.50] no trend shown`.
fn mib(kb: Option<Fit>) -> String {
    kb.map_or("n/a".into(), |f| {
        format!(
            "{} {} {}",
            f.plus_minus(1024.0, 2),
            f.interval(1024.0, 2),
            f.trend().words()
        )
    })
}

fn kib(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

pub(crate) fn summary(r: &Report) -> String {
    let p = &r.plan;
    let per = p.mode.per();
    let pace = match per {
        Per::Hour => format!(
            "{} minutes of steady load without restarts, a sample every {} ms",
            p.minutes, p.fail_every_ms
        ),
        _ => format!(
            "{} restarts asked, a failure every {} ms",
            p.restarts, p.fail_every_ms
        ),
    };
    let mut s = format!(
        "# flink-jemalloc e2e: {} — {}\n\n{}\n\nImage `{}` (Flink {}), driver {}, mode {}, {pace}, \
         TaskManager limit {} MiB; {:.0} s from start to verdict.\n\n\
         Made by {}.\n\n",
        p.scenario,
        if r.passed { "passed" } else { "FAILED" },
        p.about,
        r.image,
        p.flink,
        flag(&r.driver),
        flag(&p.mode),
        r.memory_limit_mb,
        r.seconds_to_verdict,
        r.made_by.line()
    );
    s.push_str(&expectation(r));
    s.push_str("![memory](memory.svg)\n\n");
    let u = per.word();
    let _ = write!(
        s,
        "| allocator | restarts | OOM kills | native MiB/{u} | RSS MiB/{u} | cgroup MiB/{u} |\n\
         |---|---|---|---|---|---|\n",
    );
    for run in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            run.allocator.name(),
            run.restarts,
            run.oom_kills,
            mib(run.growth.native_kb),
            mib(run.growth.rss_kb),
            mib(run.growth.cgroup_kb),
        );
    }
    let _ = writeln!(
        s,
        "\nGrowth is the least-squares slope over the samples ± a standard error that holds when \
         successive samples are correlated (equal-weighted cosine), with its 95% interval; an \
         allocator grows when the whole interval is above zero. Native = RSS − committed heap − \
         committed non-heap (Flink's JVM metrics; the heap is pre-touched, so its resident size \
         is its committed size). {}",
        match per {
            Per::Hour => "Samples are taken every interval of the steady load.",
            _ => "Samples are taken within a second of each restart.",
        }
    );
    for run in &r.runs {
        s.push_str(&samples(run));
        if let Some(a) = &run.analysis {
            s.push_str(&sites_section(r, run, a));
        }
    }
    if !r.verdict.is_empty() {
        s.push_str("\n## Verdict failures\n\n");
        for v in &r.verdict {
            let _ = writeln!(s, "- {v}");
        }
    }
    s
}

/// Returns what the scenario expected, in words.
fn expectation(r: &Report) -> String {
    let e = &r.plan.expect;
    let mut s = String::new();
    if let Some(p) = &e.in_diff {
        let _ = writeln!(
            s,
            "Expected: a frame matching `{p}` among the sites that hold more memory in the last dump \
             than in the first (below): the profiler attributes the job's native memory. This is \
             not a growth test; the growth is in the table."
        );
    }
    let profiling = r.runs.iter().find(|run| run.allocator.profiles());
    let expected = profiling.and_then(|run| run.expected_bytes());
    let u = r.plan.mode.per().word();
    let with = match r.plan.mode.per() {
        Per::Hour => "with time under a steady load",
        _ => "with restarts",
    };
    if let (Some(site), Some(bytes)) = (&e.site, expected) {
        let cpus = profiling
            .and_then(|run| run.taskmanager_cpus)
            .map_or("CPUs unknown, 8 core slots assumed".to_string(), |c| {
                format!("the TaskManager saw {c} CPUs")
            });
        let _ = if e.grows {
            writeln!(
                s,
                "Expected: a site matching `{site}` growing {with} (its 95% interval above \
                 zero, R² ≥ {}), {} KiB per {u}, {} ({cpus}).",
                e.min_r2,
                kib(bytes as i64),
                e.bound.words()
            )
        } else {
            writeln!(
                s,
                "Expected (control): no site matching `{site}` growing by {} KiB per {u} or more ({cpus}).",
                kib(bytes as i64 / 4)
            )
        };
    }
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

fn samples(run: &RunRecord) -> String {
    let first = if run.growth.per == Per::Hour {
        "restarts so far"
    } else {
        "restart"
    };
    let mut s = format!(
        "\n## {}\n\n| {first} | s | RSS MiB | native MiB | cgroup MiB |\n|---|---|---|---|---|\n",
        run.allocator.name()
    );
    for x in &run.samples {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {} | {} |",
            x.restart,
            x.seconds,
            x.rss_kb / 1024,
            whole_mib(x.native_kb, "n/a"),
            whole_mib(x.cgroup_kb.map(|v| v as i64), "n/a"),
        );
    }
    s
}

fn site_row(site: &Site) -> String {
    let g = site.growth;
    format!(
        "| `{}` | {} | {} | {} | {} | {} |",
        site.site,
        kib(site.first_bytes),
        kib(site.last_bytes),
        g.map_or("n/a".into(), |f| f.plus_minus(1024.0, 1)),
        g.map_or("n/a".into(), |f| f.interval(1024.0, 1)),
        g.and_then(|g| g.r2)
            .map_or("n/a".into(), |r2| format!("{r2:.2}")),
    )
}

/// Returns the head of the sites' table, in the analysis's unit.
fn sites_table_head(a: &Analysis) -> String {
    let (u, read) = match a.growth_per {
        Some(Per::Hour) => (
            "hour",
            "spread over the steady load after its warm-up (the first fifth)",
        ),
        _ => (
            "restart",
            "one per restart: the last written while that restart's job ran",
        ),
    };
    format!(
        "\nAllocation sites by growth per {u} ({} of {} dumps read, {read}; least squares ± \
         robust standard error, 95% interval):\n\n\
         | site | first dump KiB | last dump KiB | KiB/{u} | 95% interval | R² |\n\
         |---|---|---|---|---|---|\n",
        a.site_dumps.len(),
        a.dumps.len()
    )
}

/// Returns the section with the sites that grew per restart (or hour), the leading site's chain, the
/// flame graph and jeprof's diff.
fn sites_section(r: &Report, run: &RunRecord, a: &Analysis) -> String {
    let name = run.allocator.name();
    let mut s = String::new();
    if !a.sites.is_empty() {
        s.push_str(&sites_table_head(a));
        let focus = r
            .plan
            .expect
            .site
            .as_deref()
            .and_then(|p| regex::Regex::new(p).ok());
        let is_focus = |site: &Site| focus.as_ref().is_some_and(|f| f.is_match(&site.site));
        // Show the ten fastest, and the scenario's site wherever it is (a control's row is
        // the point).
        for (i, site) in a.sites.iter().enumerate() {
            if i < 10 || is_focus(site) {
                s.push_str(&site_row(site));
                s.push('\n');
            }
        }
        let lead = r
            .plan
            .expect
            .site
            .as_deref()
            .and_then(|p| fastest_match(&a.sites, p))
            .or(a.sites.first());
        if let Some(lead) = lead.filter(|l| !l.chain.is_empty()) {
            let _ = write!(
                s,
                "\nCall chain of `{}` (the heaviest growing stack, from `jeprof --collapsed`):\n\n```\n{}\n```\n",
                lead.site,
                lead.chain
                    .iter()
                    .take(16)
                    .enumerate()
                    .map(|(i, f)| format!("{}{f}", "  ".repeat(i.min(1)) + if i > 0 { "← " } else { "" }))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    if let Some(k) = &a.leaks {
        s.push_str(&known_section(k));
    }
    let _ = write!(
        s,
        "\nWhat grew from `{}` to `{}`: [flame graph](analysis/{name}/flame.svg) (inferno, \
         interactive), [call graph](analysis/{name}/diff.svg) (jeprof), top sites (`jeprof --base`, \
         {} dumps):\n\n```\n",
        a.base,
        a.last,
        a.dumps.len()
    );
    // Lines with nothing allocated at the site itself (`0 0.0% …`) are call-graph noise here;
    // diff.txt has them all.
    for l in a.top_diff.iter().filter(|l| !l.starts_with("0 ")).take(15) {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("```\n");
    s
}

/// Returns what the catalogue of known leaks says of the growing sites.
fn known_section(k: &Recognition) -> String {
    let mut s = String::from("\nKnown leaks (`e2e/leaks.toml`, `cargo xtask leaks`): ");
    if k.known.is_empty() && k.unknown.is_empty() {
        s.push_str("no site grows like a leak, so none is named.\n");
        return s;
    }
    s.push('\n');
    for l in &k.known {
        let _ = writeln!(
            s,
            "- **[{}]({})** {}: `{}` grows {}. Affected {}; first fixed: {} ({}). Workaround: {}.{}",
            l.id,
            l.link,
            l.title,
            l.site,
            l.growth,
            l.affected,
            l.fixed_in,
            l.fix,
            l.workaround,
            l.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    for u in &k.unknown {
        let _ = writeln!(
            s,
            "- unknown: `{}` grows {} and matches no known leak{}: report it upstream with its call chain ({}).",
            u.site,
            u.growth,
            u.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
            u.chain.iter().take(6).cloned().collect::<Vec<_>>().join(" ← ")
        );
    }
    s
}
