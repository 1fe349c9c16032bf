//! The verdict: every run saw the restarts asked for, and the profiling run shows what the
//! scenario expects (a growing site named, or none for a control).

use super::model::RunRecord;
use crate::analyze::sites::Per;
use crate::analyze::sites::Site;
use crate::analyze::Analysis;
use crate::e2e::scenario::{Expect, Mode, Plan};

/// Returns what fails the scenario's expectation, one line each; an empty list passes.
pub(crate) fn verdict(runs: &[RunRecord], plan: &Plan) -> Vec<String> {
    let mut failures = Vec::new();
    for r in runs {
        let a = r.allocator.name();
        if r.restarts < plan.restarts {
            failures.push(format!("{a}: {} of {} restarts", r.restarts, plan.restarts));
        }
        // A steady run's last sample comes within one period of its end, and nothing
        // restarted its job.
        let ran = r.samples.last().map_or(0.0, |s| s.seconds);
        if plan.mode == Mode::Steady
            && ran + plan.fail_every_ms as f64 / 1000.0 < plan.minutes as f64 * 60.0
        {
            failures.push(format!(
                "{a}: {:.1} of {} minutes of steady load (raise --timeout-secs)",
                ran / 60.0,
                plan.minutes
            ));
        }
        let restarted = r.samples.last().map_or(0, |s| s.restart);
        if plan.mode == Mode::Steady && (restarted > 0 || r.oom_kills > 0) {
            failures.push(format!(
                "{a}: the job restarted {restarted} time(s) during the steady load ({} OOM \
                 kill(s)): its growth is that of the last JVM only",
                r.oom_kills
            ));
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
                r.expected_bytes(),
                plan.mode.per(),
                a,
            )),
        }
    }
    failures
}

fn kib(bytes: f64) -> String {
    format!("{:.0} KiB", bytes / 1024.0)
}

/// Returns the matching site that grows fastest.
pub(crate) fn fastest_match<'a>(sites: &'a [Site], pattern: &str) -> Option<&'a Site> {
    let re = regex::Regex::new(pattern).ok()?;
    sites
        .iter()
        .filter(|s| re.is_match(&s.site))
        .max_by(|a, b| a.slope().total_cmp(&b.slope()))
}

/// Returns the failure when no growing line of the first-to-last difference names a frame
/// matching `p` (the top lines where no line grows).
fn in_diff_failure(an: &Analysis, p: &str, who: &str) -> Option<String> {
    let re = regex::Regex::new(p).ok();
    let lines = if an.growing.is_empty() {
        &an.top_diff
    } else {
        &an.growing
    };
    let named = lines
        .iter()
        .filter(|l| !l.starts_with('-'))
        .any(|l| re.as_ref().is_some_and(|re| re.is_match(l)));
    (!named).then(|| {
        format!(
            "{who}: no frame matching {p} among the sites that hold more memory in {} than in {} \
             (is the profiler attributing the job's native memory?)",
            an.last, an.base
        )
    })
}

/// Checks what the scenario expects of a profiling run's analysis and returns the failures;
/// `expected` is the leak's bytes per restart (per hour in `steady` mode) on this run's
/// TaskManager.
fn expectations(
    an: &Analysis,
    e: &Expect,
    expected: Option<f64>,
    per: Per,
    who: &str,
) -> Vec<String> {
    let u = per.word();
    let mut f: Vec<String> = e
        .in_diff
        .as_deref()
        .and_then(|p| in_diff_failure(an, p, who))
        .into_iter()
        .collect();
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
                    "{who}: {} was read in {points} dump(s); a line needs 3 or more (run more {})",
                    s.site,
                    if per == Per::Hour {
                        "minutes"
                    } else {
                        "restarts"
                    }
                ));
            } else if !s.grows() {
                f.push(format!(
                    "{who}: {} is not shown to grow: {} KiB per {u}, 95% interval {} holds zero",
                    s.site,
                    s.growth.map_or("n/a".into(), |g| g.plus_minus(1024.0, 1)),
                    s.growth.map_or("n/a".into(), |g| g.interval(1024.0, 1)),
                ));
            } else if r2 < e.min_r2 {
                f.push(format!(
                    "{who}: {} grows {} per {u} with R² {r2:.2}, under {}: not linear",
                    s.site,
                    kib(s.slope()),
                    e.min_r2
                ));
            }
            if e.bound.misses(s.slope(), expected) {
                f.push(format!(
                    "{who}: {} grows {} per {u}; expected {} ({})",
                    s.site,
                    kib(s.slope()),
                    kib(expected),
                    e.bound.words()
                ));
            }
        }
        (false, Some(s)) if s.slope() >= expected / 4.0 => f.push(format!(
            "{who}: {} grows {} per {u} in the control; it must stay under {}",
            s.site,
            kib(s.slope()),
            kib(expected / 4.0)
        )),
        (false, _) => {}
    }
    f
}
