//! Latency summaries: exact percentiles from every sample (nanoseconds), so no histogram
//! resolution question arises. A few million samples sort in well under a second.

use serde::Serialize;

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// Mean, µs.
    pub mean_us: f64,
}

/// Summarises latencies given in nanoseconds (nearest-rank percentiles).
pub fn summarize(mut ns: Vec<u64>) -> Summary {
    if ns.is_empty() {
        return Summary::default();
    }
    ns.sort_unstable();
    let n = ns.len();
    let at = |q: f64| -> f64 {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        ns[rank - 1] as f64 / 1000.0
    };
    let sum: u128 = ns.iter().map(|&v| u128::from(v)).sum();
    Summary {
        n: n as u64,
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        max_us: ns[n - 1] as f64 / 1000.0,
        mean_us: (sum as f64 / n as f64) / 1000.0,
    }
}

/// The median of some figures (repeated runs).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = summarize((1..=100).map(|i| i * 1000).collect());
        assert_eq!(s.n, 100);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.max_us, 100.0);
        assert!((s.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(summarize(vec![]), Summary::default());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
