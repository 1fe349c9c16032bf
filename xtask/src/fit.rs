//! Ordinary least squares of y over x: the slope, its standard error and R², for growth
//! per restart (memory samples, allocation sites over heap dumps).

use serde::Serialize;

/// A straight line fitted to points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// dy/dx.
    pub slope: f64,
    /// The slope's standard error, √(Σresidual² / (n−2) / Σ(x−x̄)²); None with two points.
    pub stderr: Option<f64>,
    /// The share of y's variance the line explains; None when y does not vary.
    pub r2: Option<f64>,
    /// Points fitted.
    pub n: usize,
}

impl Fit {
    /// The slope divided by `scale`, signed, with its standard error when it has one, to
    /// `decimals` places: `+1.25 ± 0.30`.
    pub fn plus_minus(&self, scale: f64, decimals: usize) -> String {
        let slope = format!("{:+.decimals$}", self.slope / scale);
        match self.stderr {
            Some(se) => format!("{slope} ± {:.decimals$}", se / scale),
            None => slope,
        }
    }
}

/// The least-squares line through `points`; None for fewer than two points or a constant x.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    Some(Fit {
        slope,
        stderr: (points.len() > 2).then(|| (sse / (n - 2.0) / sxx).sqrt()),
        r2: (syy > 0.0).then(|| 1.0 - sse / syy),
        n: points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_and_its_errors() {
        let exact = fit(&[(0.0, 100.0), (1.0, 110.0), (2.0, 120.0)]).unwrap();
        assert_eq!(exact.slope, 10.0);
        assert_eq!(exact.stderr, Some(0.0));
        assert_eq!(exact.r2, Some(1.0));
        assert_eq!(fit(&[(0.0, 100.0)]), None);
        assert_eq!(fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
        // Scattered about a line of slope 1.8 (Σxy' = 18, Σx'² = 10).
        let noisy = fit(&[(0.0, 1.0), (1.0, 1.0), (2.0, 4.0), (3.0, 7.0), (4.0, 7.0)]).unwrap();
        assert!((noisy.slope - 1.8).abs() < 1e-9, "{noisy:?}");
        assert!(noisy.stderr.unwrap() > 0.0 && (noisy.r2.unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(
            noisy.plus_minus(1.0, 2),
            format!("+1.80 ± {:.2}", noisy.stderr.unwrap())
        );
        let two = fit(&[(0.0, 0.0), (1.0, 2048.0)]).unwrap();
        assert_eq!(two.plus_minus(1024.0, 1), "+2.0");
        let flat = fit(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]).unwrap();
        assert_eq!((flat.slope, flat.r2), (0.0, None));
    }
}
