//! A fixed-size, lock-free latency histogram for the JSON snapshot.
//!
//! Values are nanoseconds in log-linear buckets: 16 linear sub-buckets per
//! power of two, so any recorded value lands in a bucket whose width is at
//! most 1/16 of its lower bound, and the bucket midpoint is within ~3.2% of
//! every value in it. 608 buckets cover 0 ns to ~18 minutes; longer values
//! land in the last bucket and are still counted. Memory is fixed at
//! creation: recording never allocates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// log2 of the number of linear sub-buckets per power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Highest power of two tracked with full resolution (2^40 ns ≈ 18 min).
const MAX_EXP: u32 = 40;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

/// A concurrent histogram of durations with bounded relative error.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    errors: AtomicU64,
    max_ns: AtomicU64,
}

/// Percentiles read from a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) p50: Duration,
    pub(crate) p95: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

fn bucket_index(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let mantissa = (ns >> (exp - SUB_BITS)) & (SUB - 1);
    ((exp - SUB_BITS + 1) as usize) * SUB as usize + mantissa as usize
}

/// The inclusive lower and exclusive upper bound of a bucket, in ns.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index + 1);
    }
    let exp = index / SUB + SUB_BITS as u64 - 1;
    let mantissa = index % SUB;
    let width = 1u64 << (exp - SUB_BITS as u64);
    let lower = (1u64 << exp) + mantissa * width;
    (lower, lower + width)
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Records one operation. Relaxed atomics: the snapshot is a statistic,
    /// not a synchronisation point.
    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_index(ns)].fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads count, errors and percentiles. Concurrent recordings may or may
    /// not be included; the figures are each consistent with some prefix.
    pub(crate) fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let max_ns = self.max_ns.load(Ordering::Relaxed);
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            // The rank of the q-th value, 1-based: ceil(q * count).
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (index, &n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let (lower, upper) = bucket_bounds(index);
                    let mid = lower + (upper - lower) / 2;
                    return Duration::from_nanos(mid.min(max_ns));
                }
            }
            Duration::from_nanos(max_ns)
        };
        Summary {
            count,
            errors: self.errors.load(Ordering::Relaxed),
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            max: Duration::from_nanos(max_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_inside_its_bucket() {
        let mut ns = 0u64;
        while ns < (1u64 << MAX_EXP) {
            let (lower, upper) = bucket_bounds(bucket_index(ns));
            assert!(lower <= ns && ns < upper, "{ns} not in [{lower}, {upper})");
            // Relative width stays within 1/16 past the linear range.
            if ns >= SUB {
                assert!((upper - lower) * SUB <= lower, "bucket too wide at {ns}");
            }
            ns = ns * 9 / 8 + 1;
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_known_inputs() {
        let h = LatencyHistogram::new();
        // 1..=1000 microseconds, one each: p50 = 500 µs, p95 = 950 µs,
        // p99 = 990 µs, max = 1000 µs.
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us), us % 10 == 0);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.errors, 100);
        assert_eq!(s.max, Duration::from_micros(1000));
        for (got, want) in [(s.p50, 500.0), (s.p95, 950.0), (s.p99, 990.0)] {
            let got = got.as_secs_f64() * 1e6;
            assert!(
                (got - want).abs() / want < 0.04,
                "percentile {got} µs, expected {want} µs within 4%"
            );
        }
    }

    #[test]
    fn empty_histogram_reads_zero() {
        let s = LatencyHistogram::new().summary();
        assert_eq!(s.count, 0);
        assert_eq!(s.p99, Duration::ZERO);
        assert_eq!(s.max, Duration::ZERO);
    }

    #[test]
    fn percentile_never_exceeds_max() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_nanos(1_000_001), false);
        let s = h.summary();
        assert!(s.p50 <= s.max);
        assert_eq!(s.max, Duration::from_nanos(1_000_001));
    }
}
