//! Successes reported while the breaker is closed, counted without its
//! lock.
//!
//! A success through a closed breaker cannot open it; all it does is add
//! one call to the current bucket of a time window. So the breaker counts
//! those in one atomic word, (bucket number, count), and folds the count
//! into its window under the lock when the next report that needs the
//! lock comes (a failure, a slow call, or the first success of a new
//! bucket). A success costs one compare-and-swap instead of a lock.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::window::Buckets;
use crate::clock::Reading;

/// Bits for the count; the bucket number takes the other 40 (with
/// buckets of at least 1 ms: 34 years of uptime).
const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

/// The successes counted for one time bucket.
#[derive(Debug)]
pub(crate) struct FastSuccesses {
    packed: AtomicU64,
    buckets: Buckets,
}

impl FastSuccesses {
    pub(crate) fn new(buckets: Buckets, now: Instant) -> Self {
        Self {
            packed: AtomicU64::new(buckets.number(now) << COUNT_BITS),
            buckets,
        }
    }

    /// Where its buckets are numbered from.
    pub(crate) fn origin(&self) -> Instant {
        self.buckets.origin()
    }

    /// Counts one success made at `now`, if its bucket is the one being
    /// counted. `false`: the caller must take the lock (a new bucket began,
    /// the success is older than the one counted, or the count is full).
    pub(crate) fn try_add(&self, now: impl Into<Reading>) -> bool {
        let bucket = self.buckets.number(now);
        let mut seen = self.packed.load(Ordering::Relaxed);
        loop {
            if seen >> COUNT_BITS != bucket || seen & COUNT_MAX == COUNT_MAX {
                return false;
            }
            match self.packed.compare_exchange_weak(
                seen,
                seen + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => seen = current,
            }
        }
    }

    /// Takes what was counted, as (bucket number, successes), and starts
    /// counting the bucket of `now` from zero. Called under the breaker's
    /// lock; a `try_add` racing with it either lands before (and is taken)
    /// or sees the new bucket.
    pub(crate) fn take(&self, now: Instant) -> (u64, u32) {
        let old = self
            .packed
            .swap(self.buckets.number(now) << COUNT_BITS, Ordering::Relaxed);
        // COUNT_MAX fits in a u32.
        (old >> COUNT_BITS, (old & COUNT_MAX) as u32)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::breaker::window::{Outcomes, Window};

    fn counter(now: Instant) -> FastSuccesses {
        let buckets = Outcomes::new(Window::Time(Duration::from_secs(1)), now)
            .buckets()
            .expect("a time window has buckets");
        FastSuccesses::new(buckets, now)
    }

    #[test]
    fn counts_within_a_bucket_and_hands_over_at_the_next() {
        let start = Instant::now();
        let fast = counter(start);
        for _ in 0..3 {
            assert!(fast.try_add(start + Duration::from_millis(50)));
        }
        // 100 ms buckets: 150 ms is the next one, which needs the lock.
        assert!(!fast.try_add(start + Duration::from_millis(150)));
        assert_eq!(fast.take(start + Duration::from_millis(150)), (0, 3));
        assert!(fast.try_add(start + Duration::from_millis(150)));
        // A success from an earlier bucket, reported late, needs the lock.
        assert!(!fast.try_add(start + Duration::from_millis(50)));
        assert_eq!(fast.take(start + Duration::from_millis(250)), (1, 1));
        assert_eq!(fast.take(start + Duration::from_millis(250)), (2, 0));
    }

    #[test]
    fn no_success_is_lost_between_threads() {
        let start = Instant::now();
        let fast = std::sync::Arc::new(counter(start));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let fast = fast.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| fast.try_add(start)).count())
            })
            .collect();
        let added: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(added, 40_000);
        assert_eq!(fast.take(start), (0, 40_000));
    }
}
