//! The verdict in one line, from the allocation sites in evidence order: a leak is a site
//! that grows steadily (its 95% interval above zero) by at least what would take 1 GiB
//! within 10,000 restarts, or within a day.

use super::sites::{self, Per, Site};

/// Returns the least growth called a leak, in bytes per restart or per hour: what takes 1 GiB
/// within 10,000 restarts, or within a day. Growth per dump has none (its pace is unknown).
pub(crate) fn material(per: Per) -> Option<f64> {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    match per {
        Per::Restart => Some(GIB / 10_000.0),
        Per::Hour => Some(GIB / 24.0),
        Per::Dump => None,
    }
}

/// Returns the verdict in one line, from the sites in evidence order (those that grow
/// steadily first).
pub(crate) fn verdict(sites: &[Site], per: Per) -> String {
    let unit = per.word();
    let leader = sites.first().filter(|s| s.grows());
    let Some(s) = leader else {
        return format!(
            "no leak: no allocation site grows steadily per {unit} (none has its 95% interval above zero)"
        );
    };
    let at_least = s.growth.and_then(|g| g.ci95).map_or(0.0, |(lo, _)| lo);
    match material(per) {
        None => format!(
            "growing steadily: {} ({}); whether that matters needs the dumps' times \
             (`collect --follow` records them)",
            s.site,
            sites::growth_text(s, unit)
        ),
        Some(m) if at_least >= m => format!(
            "leak: {} grows {}; at that rate 1 GiB takes {:.0} {unit}s",
            s.site,
            sites::growth_text(s, unit),
            1024.0 * 1024.0 * 1024.0 / s.slope()
        ),
        Some(m) => format!(
            "no leak: the steadiest growing site, {}, grows {}, less than the {:.1} KiB per {unit} \
             that would take 1 GiB within {}",
            s.site,
            sites::growth_text(s, unit),
            m / 1024.0,
            if per == Per::Restart { "10,000 restarts" } else { "a day" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, per_point: f64, noise: f64) -> Site {
        // A steady line with a small alternating wobble, 12 points.
        let xy: Vec<(f64, f64)> = (0..12)
            .map(|i| {
                let w = if i % 2 == 0 { noise } else { -noise };
                (i as f64, 1e6 + per_point * i as f64 + w)
            })
            .collect();
        Site {
            site: name.into(),
            first_bytes: xy[0].1 as i64,
            last_bytes: xy[11].1 as i64,
            growth: crate::fit::fit(&xy),
            chain: vec![],
        }
    }

    #[test]
    fn a_verdict_needs_steady_growth_that_matters() {
        let leak = site(
            "rocksdb::port::cacheline_aligned_alloc",
            520.0 * 1024.0,
            8000.0,
        );
        let v = verdict(std::slice::from_ref(&leak), Per::Restart);
        assert!(
            v.starts_with("leak: rocksdb::port::cacheline_aligned_alloc grows +519.7 "),
            "{v}"
        );
        assert!(v.contains("1 GiB takes 2018 restarts"), "{v}");
        // The control's steadiest site: steady, but 5 KiB per restart is no leak.
        let small = site("os::strdup", 5.0 * 1024.0, 100.0);
        assert!(small.grows());
        let v = verdict(std::slice::from_ref(&small), Per::Restart);
        assert!(
            v.starts_with("no leak: the steadiest growing site, os::strdup"),
            "{v}"
        );
        assert!(v.contains("104.9 KiB per restart"), "{v}");
        // Per hour the bar is 1 GiB a day.
        assert!(verdict(std::slice::from_ref(&small), Per::Hour).contains("within a day"));
        let noisy = site("Unsafe_AllocateMemory0", 1e6, 2e7);
        assert!(!noisy.grows());
        assert!(verdict(&[noisy], Per::Restart)
            .starts_with("no leak: no allocation site grows steadily"));
        assert!(verdict(&[leak], Per::Dump).starts_with("growing steadily: "));
        assert_eq!(material(Per::Dump), None);
    }
}
