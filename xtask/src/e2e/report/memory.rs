//! `memory.svg`: the TaskManager's native memory and RSS against restart, per allocator.

use super::model::Report;
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
fn legend_growth(kb: Option<Fit>) -> String {
    kb.map_or(String::new(), |f| {
        format!(
            " {} MiB/restart ({})",
            f.plus_minus(1024.0, 2),
            f.trend().words()
        )
    })
}

/// Plots TaskManager native memory (solid) and RSS (dashed) against restart, per allocator,
/// each with its growth per restart ± its robust error in the legend.
pub(crate) fn memory_plot(r: &Report) -> String {
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
