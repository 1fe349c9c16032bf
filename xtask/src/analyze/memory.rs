//! Leak or retention: what the TaskManager's resident memory grows with. Three series per
//! restart (or per hour) are each fitted: the live bytes jemalloc's profile accounts for (every
//! dump's total: what was allocated through malloc and not freed), the container's RSS, and
//! the JVM's heap plus non-heap (Flink's metrics), from a `collect --follow` timeline. RSS
//! that grows with live native memory is a leak; RSS that grows while live native memory
//! does not is memory the allocator keeps after it was freed (retention, fragmentation:
//! FLINK-39924's arenas sized from the host's CPUs); RSS that grows with the JVM's own
//! memory is on the Java side.

use serde::Serialize;

use super::sites::restart_at;
use crate::fit::{fit, Fit};

/// What grows, and what that says.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Attribution {
    /// Live native bytes (the dumps' totals) per unit.
    pub native: Option<Fit>,
    /// The container's RSS per unit.
    pub rss: Option<Fit>,
    /// The JVM's heap and non-heap per unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jvm: Option<Fit>,
    /// The reading, in one sentence.
    pub says: String,
}

/// Returns samples `(time, value)` as one point per restart: the last sample taken while
/// that restart ran (before the next failure), leaving out those before the first failure.
pub(crate) fn per_restart(samples: &[(f64, f64)], restarts: &[(u64, f64)]) -> Vec<(f64, f64)> {
    let Some(first) = restarts.first() else {
        return Vec::new();
    };
    let mut per: std::collections::BTreeMap<u64, f64> = Default::default();
    for (t, v) in samples.iter().filter(|(t, _)| *t >= first.1) {
        per.insert(restart_at(restarts, *t), *v);
    }
    per.into_iter().map(|(r, v)| (r as f64, v)).collect()
}

/// Returns the samples from `t0` on, with x in hours since `t0`.
pub(crate) fn per_hour(samples: &[(f64, f64)], t0: f64) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter(|(t, _)| *t >= t0)
        .map(|(t, v)| ((t - t0) / 3600.0, *v))
        .collect()
}

fn mib(f: &Fit) -> String {
    format!("{:+.1} MiB", f.slope / (1024.0 * 1024.0))
}

/// Returns the attribution of the three series (points in the same unit, `unit` its word);
/// None without RSS samples.
pub(crate) fn attribute(
    native: &[(f64, f64)],
    rss: &[(f64, f64)],
    jvm: &[(f64, f64)],
    unit: &str,
) -> Option<Attribution> {
    let rss = fit(rss)?;
    let native = fit(native);
    let jvm = fit(jvm);
    let share = |f: Option<Fit>| f.map_or(0.0, |f| f.slope / rss.slope);
    let says = if !rss.grows() {
        format!(
            "RSS does not grow steadily per {unit} ({} per {unit}, its 95% interval holds zero)",
            mib(&rss)
        )
    } else if share(native) >= 0.5 {
        format!(
            "RSS grows {} per {unit} and live native memory (the profile's total) {}: memory \
             allocated and not freed, a leak",
            mib(&rss),
            native.as_ref().map_or("?".into(), mib)
        )
    } else if share(jvm) >= 0.5 {
        format!(
            "RSS grows {} per {unit} with the JVM's heap and non-heap ({}): the Java side, not \
             native memory",
            mib(&rss),
            jvm.as_ref().map_or("?".into(), mib)
        )
    } else {
        format!(
            "RSS grows {} per {unit} but live native memory only {}{}: memory the allocator \
             keeps after it was freed (retention, fragmentation), not a leak",
            mib(&rss),
            native.as_ref().map_or("?".into(), mib),
            jvm.as_ref()
                .map_or(String::new(), |j| format!(" and the JVM {}", mib(j)))
        )
    };
    Some(Attribution {
        native,
        rss: Some(rss),
        jvm,
        says,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn line(per: f64, wobble: f64) -> Vec<(f64, f64)> {
        (0..12)
            .map(|i| {
                let w = if i % 2 == 0 { wobble } else { -wobble };
                (i as f64, 500.0 * MIB + per * i as f64 + w)
            })
            .collect()
    }

    #[test]
    fn leak_retention_or_java() {
        let flat = line(0.0, 0.1 * MIB);
        let a = attribute(
            &line(0.5 * MIB, 1e4),
            &line(0.6 * MIB, 1e5),
            &flat,
            "restart",
        )
        .unwrap();
        assert!(a.says.contains("a leak"), "{}", a.says);
        let a = attribute(
            &line(0.01 * MIB, 1e4),
            &line(2.0 * MIB, 1e5),
            &flat,
            "restart",
        )
        .unwrap();
        assert!(a.says.contains("retention"), "{}", a.says);
        let a = attribute(&flat, &line(2.0 * MIB, 1e5), &line(1.8 * MIB, 1e5), "hour").unwrap();
        assert!(a.says.contains("the Java side"), "{}", a.says);
        let a = attribute(&flat, &flat, &[], "hour").unwrap();
        assert!(
            a.says.starts_with("RSS does not grow steadily"),
            "{}",
            a.says
        );
        assert!(attribute(&flat, &[], &[], "hour").is_none());
    }

    #[test]
    fn samples_placed_per_restart_and_per_hour() {
        let restarts = [(1, 10.0), (2, 20.0), (3, 30.0)];
        let samples = [
            (5.0, 1.0),
            (12.0, 2.0),
            (19.0, 3.0),
            (25.0, 4.0),
            (35.0, 5.0),
        ];
        assert_eq!(
            per_restart(&samples, &restarts),
            [(1.0, 3.0), (2.0, 4.0), (3.0, 5.0)]
        );
        assert_eq!(per_hour(&samples, 19.0)[1], (6.0 / 3600.0, 4.0));
    }
}
