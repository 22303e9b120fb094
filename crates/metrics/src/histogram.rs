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
/// A value in nanoseconds and its bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    ns: u64,
    bucket: usize,
}

impl Sample {
    pub(crate) fn of(elapsed: Duration) -> Self {
        // Whole seconds and nanoseconds in u64, saturating: cheaper than
        // the u128 `as_nanos`, and the same for any latency below 584 years.
        let ns = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        Self {
            ns,
            bucket: bucket_index(ns),
        }
    }
}

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
    #[cfg(test)]
    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        self.record_sample(Sample::of(elapsed), failed);
    }

    /// Records a sample whose bucket is already found (one lookup for the
    /// histograms a value goes to).
    pub(crate) fn record_sample(&self, sample: Sample, failed: bool) {
        let Sample { ns, bucket } = sample;
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // `fetch_max` is a locked compare-and-swap even when the maximum
        // stays: most values are not a new maximum, so look first.
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads count, errors and percentiles.
    #[cfg(test)]
    pub(crate) fn summary(&self) -> Summary {
        let mut merged = Merged::default();
        merged.add(self);
        merged.summary()
    }

    /// Moves every count into `into` and leaves this one empty (a window
    /// slot being reused). Each counter is swapped out, so a recording
    /// racing the move lands on one side or the other, never on neither.
    fn drain_into(&self, into: &LatencyHistogram) {
        for (bucket, target) in self.buckets.iter().zip(into.buckets.iter()) {
            let n = bucket.swap(0, Ordering::Relaxed);
            if n > 0 {
                target.fetch_add(n, Ordering::Relaxed);
            }
        }
        into.errors
            .fetch_add(self.errors.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        into.max_ns
            .fetch_max(self.max_ns.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Bucket counts summed over one or more histograms.
#[derive(Debug, Default)]
struct Merged {
    counts: Vec<u64>,
    errors: u64,
    max_ns: u64,
}

impl Merged {
    fn add(&mut self, h: &LatencyHistogram) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (sum, bucket) in self.counts.iter_mut().zip(h.buckets.iter()) {
            *sum += bucket.load(Ordering::Relaxed);
        }
        self.errors += h.errors.load(Ordering::Relaxed);
        self.max_ns = self.max_ns.max(h.max_ns.load(Ordering::Relaxed));
    }

    fn summary(&self) -> Summary {
        let count: u64 = self.counts.iter().sum();
        let max_ns = self.max_ns;
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            // The rank of the q-th value, 1-based: ceil(q * count).
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (index, &n) in self.counts.iter().enumerate() {
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
            errors: self.errors.min(count),
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            max: Duration::from_nanos(max_ns),
        }
    }
}

/// Length of one slot of a [`WindowedHistogram`].
pub(crate) const SLOT: Duration = Duration::from_secs(10);
/// Slots of a [`WindowedHistogram`]: the window is the current slot and the
/// five before it, 50 to 60 seconds.
const SLOTS: usize = 6;
/// The longest span a [`WindowedHistogram`] covers.
pub(crate) const WINDOW: Duration = Duration::from_secs(SLOT.as_secs() * SLOTS as u64);

/// The slot number of `now`: 10-second steps since the first call.
///
/// Each thread remembers the bounds of the last slot it computed, so that
/// most calls compare two instants instead of dividing a duration.
pub(crate) fn slot_of(now: tokio::time::Instant) -> u64 {
    use std::cell::Cell;
    use tokio::time::Instant;
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    thread_local! {
        /// (start, end, number) of the slot this thread last saw.
        static LAST: Cell<Option<(Instant, Instant, u64)>> = const { Cell::new(None) };
    }
    let cached = LAST.with(Cell::get);
    if let Some((start, end, slot)) = cached
        && start <= now
        && now < end
    {
        return slot;
    }
    let base = *BASE.get_or_init(|| now);
    let index = now.saturating_duration_since(base).as_secs() / SLOT.as_secs();
    let start = base + SLOT * index as u32;
    LAST.with(|last| last.set(Some((start, start + SLOT, index + 1))));
    index + 1
}

/// Latencies since start and over the last minute: a ring of six 10-second
/// histograms and an archive. A slot that comes round again is emptied
/// into the archive first, so each recording touches one histogram while
/// the since-start figures are the archive plus every slot. Memory is
/// fixed.
#[derive(Debug)]
pub(crate) struct WindowedHistogram {
    slots: [(AtomicU64, LatencyHistogram); SLOTS],
    archive: LatencyHistogram,
}

impl WindowedHistogram {
    pub(crate) fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| (AtomicU64::new(0), LatencyHistogram::new())),
            archive: LatencyHistogram::new(),
        }
    }

    /// Records one operation that finished in slot `slot` (see [`slot_of`]).
    #[cfg(test)]
    pub(crate) fn record(&self, slot: u64, elapsed: Duration, failed: bool) {
        self.record_sample(slot, Sample::of(elapsed), failed);
    }

    /// [`record`](Self::record) of a sample whose bucket is found.
    pub(crate) fn record_sample(&self, slot: u64, sample: Sample, failed: bool) {
        let (epoch, histogram) = &self.slots[(slot % SLOTS as u64) as usize];
        let seen = epoch.load(Ordering::Acquire);
        if seen != slot
            && epoch
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            histogram.drain_into(&self.archive);
        }
        histogram.record_sample(sample, failed);
    }

    /// Figures over the slots of the window that ends in slot `now`.
    pub(crate) fn recent(&self, now: u64) -> Summary {
        let mut merged = Merged::default();
        for (epoch, histogram) in &self.slots {
            let epoch = epoch.load(Ordering::Acquire);
            if epoch != 0 && epoch + SLOTS as u64 > now && epoch <= now {
                merged.add(histogram);
            }
        }
        merged.summary()
    }

    /// Figures over everything recorded.
    pub(crate) fn since_start(&self) -> Summary {
        let mut merged = Merged::default();
        merged.add(&self.archive);
        for (_, histogram) in &self.slots {
            merged.add(histogram);
        }
        merged.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_ten_second_steps_whatever_order_instants_come_in() {
        let base = tokio::time::Instant::now();
        let first = slot_of(base);
        let at = |secs: u64| slot_of(base + Duration::from_secs(secs));
        // The base is the first instant this process asked about, which
        // another test may have set: compare slots relative to each other.
        let offset = |secs: u64| at(secs) - first;
        // Whole multiples of 10 s apart are exactly that many slots apart,
        // wherever the slot boundaries fall.
        assert_eq!(offset(10), 1);
        assert_eq!(offset(600), 60);
        assert_eq!(offset(20), 2);
        // Back to an earlier slot after a later one was cached.
        assert_eq!(offset(0), 0);
        // Within 10 s, at most one boundary is crossed, and only forwards.
        let within: Vec<u64> = (0..10).map(offset).collect();
        assert!(
            within.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1),
            "{within:?}"
        );
        assert!(within[9] <= 1, "{within:?}");
        assert_eq!(slot_of(base), first);
    }

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
    fn the_recent_window_forgets_slots_older_than_a_minute() {
        let h = WindowedHistogram::new();
        for _ in 0..10 {
            h.record(1, Duration::from_millis(100), true);
        }
        for _ in 0..30 {
            h.record(3, Duration::from_millis(1), false);
        }
        let s = h.recent(3);
        assert_eq!((s.count, s.errors), (40, 10));
        assert_eq!(s.max, Duration::from_millis(100));
        // Slot 1 leaves the window at slot 7; slot 3 at slot 9.
        let s = h.recent(7);
        assert_eq!((s.count, s.errors), (30, 0));
        assert_eq!(s.max, Duration::from_millis(1));
        assert_eq!(h.recent(9).count, 0);
        // Slot 7 reuses slot 1's histogram, emptied first.
        h.record(7, Duration::from_millis(2), false);
        let s = h.recent(7);
        assert_eq!((s.count, s.errors), (31, 0));
        assert_eq!(s.max, Duration::from_millis(2));
        // Since start keeps everything: slot 1's figures moved to the
        // archive when slot 7 took its place.
        let s = h.since_start();
        assert_eq!((s.count, s.errors), (41, 10));
        assert_eq!(s.max, Duration::from_millis(100));
    }

    #[test]
    fn since_start_loses_nothing_while_slots_turn_over_under_threads() {
        let h = std::sync::Arc::new(WindowedHistogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    // Each thread walks through 40 slots (the ring turns
                    // over six times), 500 recordings per slot.
                    for slot in 1..=40u64 {
                        for i in 0..500u64 {
                            h.record(slot, Duration::from_micros(i + t), i % 50 == 0);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        let s = h.since_start();
        assert_eq!(s.count, 4 * 40 * 500);
        assert_eq!(s.errors, 4 * 40 * 10);
        assert_eq!(s.max, Duration::from_micros(499 + 3));
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
