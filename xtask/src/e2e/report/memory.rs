//! `memory.svg`: the TaskManager's native memory and RSS against restart (against minutes
//! in `steady` mode), per allocator.

use super::model::{Report, Sample};
use crate::analyze::sites::Per;
use crate::e2e::cluster::Allocator;
use crate::fit::Fit;
use crate::plot::{self, Series};
use crate::progress::flag;

/// Returns a colour per allocator: jemalloc blue, its baseline light blue, glibc red, two
/// arenas orange.
fn color(a: Allocator) -> &'static str {
    match a {
        Allocator::Jemalloc => "#1f77b4",
        Allocator::JemallocNonprof => "#17becf",
        Allocator::Glibc => "#d62728",
        Allocator::GlibcArenas2 => "#ff7f0e",
    }
}

/// Formats a legend's growth: ` +0.46 ± 0.44 MiB/restart (no trend shown)`, or nothing.
fn legend_growth(kb: Option<Fit>, per: Per) -> String {
    kb.map_or(String::new(), |f| {
        format!(
            " {} MiB/{} ({})",
            f.plus_minus(1024.0, 2),
            per.word(),
            f.trend().words()
        )
    })
}

/// Plots TaskManager native memory (solid) and RSS (dashed) against restart (minutes in
/// `steady` mode), per allocator, each with its growth ± its robust error in the legend.
pub(crate) fn memory_plot(r: &Report) -> String {
    let per = r.plan.mode.per();
    let mut series = Vec::new();
    for run in &r.runs {
        let mib = |kb: f64| (kb / 1024.0).round();
        let x = |s: &Sample| match per {
            Per::Hour => (s.seen_at - run.samples[0].seen_at) / 60.0,
            _ => s.restart as f64,
        };
        series.push(Series {
            label: format!(
                "{} native{}",
                run.allocator.name(),
                legend_growth(run.growth.native_kb, per)
            ),
            color: color(run.allocator),
            dashed: false,
            points: run
                .samples
                .iter()
                .filter_map(|s| Some((x(s), mib(s.native_kb? as f64))))
                .collect(),
        });
        series.push(Series {
            label: format!(
                "{} RSS{}",
                run.allocator.name(),
                legend_growth(run.growth.rss_kb, per)
            ),
            color: color(run.allocator),
            dashed: true,
            points: run
                .samples
                .iter()
                .map(|s| (x(s), mib(s.rss_kb as f64)))
                .collect(),
        });
    }
    plot::line_chart(
        &format!(
            "TaskManager memory per {} ({}, --driver {}, --mode {})",
            if per == Per::Hour {
                "minute"
            } else {
                "restart"
            },
            r.plan.scenario,
            flag(&r.driver),
            flag(&r.plan.mode)
        ),
        if per == Per::Hour {
            "minutes"
        } else {
            "restart"
        },
        "MiB",
        &series,
    )
}
