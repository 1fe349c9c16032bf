//! The arithmetic of `bench --profiling-cost`, apart from the runs: a run's samples cut
//! into windows (throughput and CPU rate as least-squares slopes of the cumulative counts,
//! so a metric a second stale moves a window's figure by little), estimates over repeated
//! runs (mean, standard error, Student's 95% interval), and ratios with their error
//! propagated (first order: the relative errors add in quadrature).

use serde::{Deserialize, Serialize};

use crate::fit::{fit, t975};

/// One sample of a run, taken every few seconds after its warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Seconds since the measurement began.
    pub t: f64,
    /// Records the state operator has taken in so far (Flink's `numRecordsIn`).
    pub records: f64,
    /// CPU seconds the TaskManager's container has used so far (its cgroup).
    pub cpu_seconds: f64,
    pub rss_kb: Option<u64>,
    /// RSS − committed heap − committed non-heap.
    pub native_kb: Option<i64>,
    /// Heap dumps written so far, and their bytes.
    pub dumps: u64,
    pub dump_bytes: u64,
}

/// A window of a run: what the job did in it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// Records per second.
    pub throughput: f64,
    /// CPU seconds per second (cores busy).
    pub cpu_rate: f64,
    /// CPU seconds per million records.
    pub cpu_per_million: f64,
}

/// Cuts `n` windows of `len` seconds from `t = 0`, each from the samples inside it (at
/// least three, else it is left out).
pub(crate) fn windows(samples: &[Sample], len: f64, n: usize) -> Vec<Window> {
    (0..n)
        .filter_map(|i| {
            let (from, to) = (i as f64 * len, (i + 1) as f64 * len);
            let inside: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.t >= from - 1e-9 && s.t <= to + 1e-9)
                .collect();
            if inside.len() < 3 {
                return None;
            }
            let slope = |f: &dyn Fn(&Sample) -> f64| {
                fit(&inside.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>()).map(|f| f.slope)
            };
            let throughput = slope(&|s| s.records)?;
            let cpu_rate = slope(&|s| s.cpu_seconds)?;
            (throughput > 0.0).then(|| Window {
                throughput,
                cpu_rate,
                cpu_per_million: cpu_rate / throughput * 1e6,
            })
        })
        .collect()
}

/// A figure from repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Estimate {
    pub mean: f64,
    /// Standard error of the mean (None from one value).
    pub stderr: Option<f64>,
    /// Student's 95% interval.
    pub ci95: Option<(f64, f64)>,
    pub n: usize,
}

impl Estimate {
    /// Formats `12.3 ± 0.4` with `decimals`.
    pub(crate) fn plus_minus(&self, decimals: usize) -> String {
        match self.stderr {
            Some(e) => format!("{:.decimals$} ± {:.decimals$}", self.mean, e),
            None => format!("{:.decimals$}", self.mean),
        }
    }
}

/// Returns the mean of `values` with its standard error and 95% interval; None from none.
pub(crate) fn estimate(values: &[f64]) -> Option<Estimate> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Estimate {
            mean,
            stderr: None,
            ci95: None,
            n,
        });
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let se = (var / n as f64).sqrt();
    let h = t975(n - 1) * se;
    Some(Estimate {
        mean,
        stderr: Some(se),
        ci95: Some((mean - h, mean + h)),
        n,
    })
}

/// Returns `a / b` with its error: relative errors in quadrature, the interval on the fewer
/// runs' degrees of freedom.
pub(crate) fn ratio(a: &Estimate, b: &Estimate) -> Option<Estimate> {
    if b.mean == 0.0 {
        return None;
    }
    let r = a.mean / b.mean;
    let rel = |e: &Estimate| e.stderr.map(|s| s / e.mean);
    let stderr = match (rel(a), rel(b)) {
        (Some(x), Some(y)) => Some(r.abs() * (x * x + y * y).sqrt()),
        _ => None,
    };
    let n = a.n.min(b.n);
    Some(Estimate {
        mean: r,
        stderr,
        ci95: stderr.map(|s| {
            let h = t975(n.max(2) - 1) * s;
            (r - h, r + h)
        }),
        n,
    })
}

/// Returns dumps (or bytes) per hour from the first and last samples.
pub(crate) fn per_hour(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Option<f64> {
    let (a, b) = (samples.first()?, samples.last()?);
    (b.t > a.t).then(|| (f(b) - f(a)) / (b.t - a.t) * 3600.0)
}

/// Returns the mean of what `f` gives for the samples that have it.
pub(crate) fn mean_of(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = samples.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, records: f64, cpu: f64) -> Sample {
        Sample {
            t,
            records,
            cpu_seconds: cpu,
            rss_kb: Some(1000),
            native_kb: Some(100),
            dumps: (t / 10.0) as u64,
            dump_bytes: (t * 1000.0) as u64,
        }
    }

    #[test]
    fn windows_are_slopes_of_the_counts() {
        // 10,000 records/s and 1.5 cores for 60 s, then twice the records for the same CPU.
        let mut s: Vec<Sample> = (0..=12)
            .map(|i| {
                sample(
                    5.0 * i as f64,
                    10_000.0 * 5.0 * i as f64,
                    1.5 * 5.0 * i as f64,
                )
            })
            .collect();
        for i in 13..=24 {
            let t = 5.0 * i as f64;
            s.push(sample(t, 600_000.0 + 20_000.0 * (t - 60.0), 1.5 * t));
        }
        let w = windows(&s, 60.0, 3);
        assert_eq!(w.len(), 2, "the third window has no samples");
        assert!((w[0].throughput - 10_000.0).abs() < 1e-6);
        assert!((w[0].cpu_rate - 1.5).abs() < 1e-9);
        assert!((w[0].cpu_per_million - 150.0).abs() < 1e-6);
        assert!((w[1].throughput - 20_000.0).abs() < 1e-6);
        assert!((w[1].cpu_per_million - 75.0).abs() < 1e-6);
        assert_eq!(
            per_hour(&s, |x| x.dumps as f64),
            Some(12.0 * 3600.0 / 120.0)
        );
        assert_eq!(mean_of(&s, |x| x.rss_kb.map(|v| v as f64)), Some(1000.0));
    }

    #[test]
    fn estimates_and_ratios_carry_their_errors() {
        let a = estimate(&[9.0, 10.0, 11.0]).unwrap();
        assert_eq!(a.mean, 10.0);
        let se = (1.0f64 / 3.0).sqrt();
        assert!((a.stderr.unwrap() - se).abs() < 1e-12);
        let (lo, hi) = a.ci95.unwrap();
        assert!((hi - 10.0 - 4.303 * se).abs() < 1e-9 && (10.0 - lo - 4.303 * se).abs() < 1e-9);
        assert_eq!(a.plus_minus(1), "10.0 ± 0.6");
        let one = estimate(&[5.0]).unwrap();
        assert_eq!((one.stderr, one.ci95), (None, None));
        assert!(estimate(&[]).is_none());

        let b = estimate(&[19.0, 20.0, 21.0]).unwrap();
        let r = ratio(&a, &b).unwrap();
        assert_eq!(r.mean, 0.5);
        // Both relative errors are se/10 and se/20: 0.5·√((se/10)² + (se/20)²).
        let want = 0.5 * ((se / 10.0).powi(2) + (se / 20.0).powi(2)).sqrt();
        assert!((r.stderr.unwrap() - want).abs() < 1e-12);
        assert!(ratio(&a, &Estimate { mean: 0.0, ..b }).is_none());
        assert_eq!(ratio(&one, &b).unwrap().stderr, None, "one run: no error");
    }
}
