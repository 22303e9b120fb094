//! Sliding windows of call outcomes: the last N calls, or the last T time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::{Divisor, Reading};

/// How much history the breaker judges the failure rate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last duration, in ten buckets (so a call leaves the
    /// window between 90% and 100% of the duration after it was made).
    Time(Duration),
}

/// Calls and failures currently in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
}

#[derive(Debug)]
pub(crate) enum Outcomes {
    Count {
        capacity: usize,
        ring: VecDeque<bool>,
        failures: u32,
    },
    Time {
        /// (bucket number, calls, failures), one per slot.
        slots: [(u64, u32, u32); TIME_SLOTS],
        buckets: Buckets,
        /// The newest bucket seen, and the totals over the window ending
        /// there: kept current so that reading them is O(1).
        current: u64,
        totals: Tally,
    },
}

const TIME_SLOTS: usize = 10;

/// Numbers a time window's buckets from a fixed origin (the breaker's
/// creation), so that a bucket's number never changes: the breaker counts
/// successes outside its lock by bucket number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buckets {
    origin: Instant,
    nanos: Divisor,
}

impl Buckets {
    /// The number of the bucket `now` falls in (0 before the origin).
    pub(crate) fn number(&self, now: impl Into<Reading>) -> u64 {
        self.nanos.divide(now.into().nanos_since(self.origin))
    }

    /// Where the numbering starts.
    pub(crate) fn origin(&self) -> Instant {
        self.origin
    }
}

impl Outcomes {
    pub(crate) fn new(window: Window, now: Instant) -> Self {
        match window {
            Window::Count(n) => Outcomes::Count {
                capacity: n as usize,
                ring: VecDeque::with_capacity(n as usize),
                failures: 0,
            },
            Window::Time(d) => Outcomes::Time {
                buckets: Buckets {
                    origin: now,
                    // At least 1 ms (validated windows are ≥ 10 ms).
                    nanos: Divisor::new(
                        u64::try_from((d / TIME_SLOTS as u32).as_nanos())
                            .unwrap_or(u64::MAX)
                            .max(1_000_000),
                    ),
                },
                slots: [(u64::MAX, 0, 0); TIME_SLOTS],
                current: 0,
                totals: Tally::default(),
            },
        }
    }

    /// How a time window numbers its buckets; `None` for a count window.
    pub(crate) fn buckets(&self) -> Option<Buckets> {
        match self {
            Outcomes::Count { .. } => None,
            Outcomes::Time { buckets, .. } => Some(*buckets),
        }
    }

    pub(crate) fn record(&mut self, failed: bool, now: Instant) {
        match self {
            Outcomes::Count {
                capacity,
                ring,
                failures,
            } => {
                if ring.len() == *capacity && ring.pop_front() == Some(true) {
                    *failures -= 1;
                }
                ring.push_back(failed);
                *failures += u32::from(failed);
            }
            Outcomes::Time { buckets, .. } => {
                let index = buckets.number(now);
                self.record_in(index, 1, u32::from(failed), now);
            }
        }
    }

    /// Adds `calls` outcomes, `failures` of them failed, to time bucket
    /// `index` of a time window (a count window ignores this).
    pub(crate) fn record_in(&mut self, index: u64, calls: u32, failures: u32, now: Instant) {
        let Some(buckets) = self.buckets() else {
            return;
        };
        // Never behind `index`: a slot is reused only once the bucket it
        // held has left the window.
        self.advance_to(buckets.number(now).max(index));
        if let Outcomes::Time {
            slots,
            totals,
            current,
            ..
        } = self
        {
            // An outcome stamped before the window's oldest slot (a long
            // call reported late) is history: recording it would overwrite
            // a live slot that `totals` still counts.
            if index + (TIME_SLOTS as u64) <= *current {
                return;
            }
            let slot = &mut slots[(index % TIME_SLOTS as u64) as usize];
            if slot.0 != index {
                *slot = (index, 0, 0);
            }
            slot.1 += calls;
            slot.2 += failures;
            totals.calls += calls;
            totals.failures += failures;
        }
    }

    /// Moves a time window to the bucket of `now`, dropping buckets that
    /// left it from the totals. Work happens only when a new bucket begins.
    fn advance(&mut self, now: Instant) {
        if let Some(buckets) = self.buckets() {
            self.advance_to(buckets.number(now));
        }
    }

    fn advance_to(&mut self, index: u64) {
        let Outcomes::Time {
            slots,
            current,
            totals,
            ..
        } = self
        else {
            return;
        };
        if index > *current {
            let oldest = index.saturating_sub(TIME_SLOTS as u64 - 1);
            for slot in slots.iter_mut() {
                if slot.0 != u64::MAX && slot.0 < oldest {
                    totals.calls -= slot.1;
                    totals.failures -= slot.2;
                    *slot = (u64::MAX, 0, 0);
                }
            }
            *current = index;
        }
    }

    pub(crate) fn tally(&mut self, now: Instant) -> Tally {
        self.advance(now);
        match self {
            Outcomes::Count { ring, failures, .. } => Tally {
                calls: ring.len() as u32,
                failures: *failures,
            },
            Outcomes::Time { totals, .. } => *totals,
        }
    }

    pub(crate) fn clear(&mut self, now: Instant) {
        match self {
            Outcomes::Count { ring, failures, .. } => {
                ring.clear();
                *failures = 0;
            }
            Outcomes::Time {
                buckets,
                slots,
                current,
                totals,
            } => {
                *slots = [(u64::MAX, 0, 0); TIME_SLOTS];
                *current = buckets.number(now);
                *totals = Tally::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_forgets_the_oldest_call() {
        let now = Instant::now();
        let mut w = Outcomes::new(Window::Count(3), now);
        for failed in [true, true, false] {
            w.record(failed, now);
        }
        assert_eq!(
            w.tally(now),
            Tally {
                calls: 3,
                failures: 2
            }
        );
        w.record(false, now); // the first failure leaves
        assert_eq!(
            w.tally(now),
            Tally {
                calls: 3,
                failures: 1
            }
        );
    }

    #[test]
    fn an_outcome_older_than_the_window_is_not_recorded() {
        let start = Instant::now();
        let mut w = Outcomes::new(Window::Time(Duration::from_secs(10)), start);
        let late = start + Duration::from_secs(15);
        w.record(true, late);
        // Reported now, stamped 12 s earlier: outside the 10 s window. It
        // must neither count nor overwrite the live slot it maps to.
        w.record(false, start + Duration::from_secs(3));
        assert_eq!(
            w.tally(late),
            Tally {
                calls: 1,
                failures: 1
            }
        );
        // When the live failure expires, the totals return to zero.
        assert_eq!(w.tally(late + Duration::from_secs(11)), Tally::default());
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let start = Instant::now();
        let mut w = Outcomes::new(Window::Time(Duration::from_secs(10)), start);
        w.record(true, start);
        w.record(false, start + Duration::from_secs(5));
        assert_eq!(
            w.tally(start + Duration::from_secs(5)),
            Tally {
                calls: 2,
                failures: 1
            }
        );
        // At 10 s the first bucket (0–1 s) has left the window.
        assert_eq!(
            w.tally(start + Duration::from_secs(10)),
            Tally {
                calls: 1,
                failures: 0
            }
        );
        assert_eq!(w.tally(start + Duration::from_secs(16)), Tally::default());
        // A slot reused for a new bucket starts from zero.
        w.record(true, start + Duration::from_secs(20));
        assert_eq!(
            w.tally(start + Duration::from_secs(20)),
            Tally {
                calls: 1,
                failures: 1
            }
        );
    }
}
