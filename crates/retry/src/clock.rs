//! Clock arithmetic of the success path.

use tokio::time::Instant;

/// Nanoseconds from `origin` to `now` (0 if `now` is earlier), in u64
/// arithmetic: the u128 of `Duration::as_nanos` costs a library division
/// on every use, more than the rest of a budget deposit.
pub(crate) fn nanos_since(origin: Instant, now: Instant) -> u64 {
    let since = now.saturating_duration_since(origin);
    since
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(since.subsec_nanos()))
}

/// A clock reading that carries its distance from a reference instant,
/// computed once: the success path numbers a time slot twice (the budget's
/// and the breaker's), each from its own origin, and one subtraction of
/// instants serves both ([`Rebase`] makes each one's reading by
/// subtracting integers). A component given a reading from another origin
/// still gets an exact answer, computed from the instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    at: Instant,
    reference: Instant,
    /// `nanos_since(reference, at)`.
    nanos: u64,
}

impl Reading {
    /// `at`, measured from `reference`.
    #[cfg(test)]
    pub(crate) fn new(reference: Instant, at: Instant) -> Self {
        Self {
            at,
            reference,
            nanos: nanos_since(reference, at),
        }
    }

    /// The instant read.
    pub(crate) fn at(self) -> Instant {
        self.at
    }

    /// Nanoseconds from `origin` to the reading (0 if it is earlier).
    #[inline]
    pub(crate) fn nanos_since(self, origin: Instant) -> u64 {
        if origin == self.reference {
            self.nanos
        } else {
            nanos_since(origin, self.at)
        }
    }
}

/// Readings measured from `origin`, made from distances measured from an
/// earlier (or the same) instant `from` by subtracting integers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rebase {
    origin: Instant,
    /// `nanos_since(from, origin)`.
    offset: u64,
}

impl Rebase {
    /// When `origin` is earlier than `from`, the readings it makes stay
    /// measured from `from`; a component whose origin is `origin` then
    /// computes its distance from the instant, exactly.
    pub(crate) fn new(from: Instant, origin: Instant) -> Self {
        if origin >= from {
            Self {
                origin,
                offset: nanos_since(from, origin),
            }
        } else {
            Self {
                origin: from,
                offset: 0,
            }
        }
    }

    /// The reading of `at`, given `since`, its distance from `from`:
    /// at − origin = (at − from) − (origin − from), and 0 when `at` is
    /// earlier than `origin`, as `nanos_since` has it.
    #[inline]
    pub(crate) fn reading(self, at: Instant, since: u64) -> Reading {
        Reading {
            at,
            reference: self.origin,
            nanos: since.saturating_sub(self.offset),
        }
    }
}

impl From<Instant> for Reading {
    fn from(at: Instant) -> Self {
        Self {
            at,
            reference: at,
            nanos: 0,
        }
    }
}

/// Exact division by a divisor fixed at construction (a bucket's or a
/// slot's length in nanoseconds), by multiplying with its reciprocal.
///
/// The success path numbers a time bucket twice per call (the breaker's
/// and the budget's), and a 64-bit `div` was a third of each numbering
/// (perf, `examples/success_path.rs`). A multiplication by
/// `⌊2⁶⁴ / d⌋` gives the quotient or one less; one compare fixes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Divisor {
    d: u64,
    /// `⌊2⁶⁴ / d⌋`; unused when `d` is 1.
    reciprocal: u64,
}

impl Divisor {
    /// Divides by `d`; 0 is taken as 1.
    pub(crate) fn new(d: u64) -> Self {
        let d = d.max(1);
        let reciprocal = if d == 1 {
            0
        } else {
            // d ≥ 2, so the quotient fits in a u64.
            u64::try_from((1u128 << 64) / u128::from(d)).unwrap_or(u64::MAX)
        };
        Self { d, reciprocal }
    }

    /// `n / d`, exactly.
    pub(crate) fn divide(self, n: u64) -> u64 {
        if self.d == 1 {
            return n;
        }
        // With r = ⌊2⁶⁴/d⌋: n·r/2⁶⁴ > n/d − n/2⁶⁴ > n/d − 1, so the
        // estimate is the quotient or one below it.
        let estimate = ((u128::from(n) * u128::from(self.reciprocal)) >> 64) as u64;
        let rest = n - estimate * self.d;
        estimate + u64::from(rest >= self.d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn divides_at_the_edges() {
        for d in [1, 2, 3, 7, 1_000_000, 100_000_000, 6_000_000_000, u64::MAX] {
            let div = Divisor::new(d);
            for n in [0, 1, d - 1, d, d.saturating_add(1), u64::MAX - 1, u64::MAX] {
                assert_eq!(div.divide(n), n / d, "{n} / {d}");
            }
        }
        assert_eq!(Divisor::new(0).divide(5), 5);
    }

    #[test]
    fn a_reading_measures_from_any_origin() {
        let origin = Instant::now();
        let other = origin + std::time::Duration::from_millis(3);
        let at = origin + std::time::Duration::from_millis(10);
        for reading in [
            Reading::new(origin, at),
            Reading::new(other, at),
            Reading::from(at),
        ] {
            assert_eq!(reading.nanos_since(origin), 10_000_000);
            assert_eq!(reading.nanos_since(other), 7_000_000);
            assert_eq!(reading.nanos_since(at), 0);
            assert_eq!(
                reading.nanos_since(at + std::time::Duration::from_secs(1)),
                0
            );
            assert_eq!(reading.at(), at);
        }
    }

    #[test]
    fn a_rebased_reading_measures_from_its_new_origin() {
        let from = Instant::now();
        let origin = from + std::time::Duration::from_millis(3);
        let rebase = Rebase::new(from, origin);
        // Backwards, readings stay measured from `from`.
        let backwards = Rebase::new(origin, from).reading(from, 0);
        assert_eq!(backwards.nanos_since(from), 0);
        assert_eq!(
            backwards.nanos_since(origin),
            0,
            "computed from the instant, which is earlier than origin"
        );
        let later = Rebase::new(origin, from)
            .reading(from + std::time::Duration::from_millis(5), 2_000_000);
        assert_eq!(later.nanos_since(origin), 2_000_000);
        assert_eq!(later.nanos_since(from), 5_000_000);
        for ms in [0, 1, 3, 4, 10_000] {
            let at = from + std::time::Duration::from_millis(ms);
            let moved = rebase.reading(at, nanos_since(from, at));
            assert_eq!(moved.nanos, nanos_since(origin, at), "{ms} ms");
            assert_eq!(moved.nanos_since(origin), nanos_since(origin, at));
            assert_eq!(moved.nanos_since(from), nanos_since(from, at));
            assert_eq!(moved.at(), at);
        }
    }

    proptest! {
        #[test]
        fn divides_like_div(n: u64, d in 1u64..) {
            prop_assert_eq!(Divisor::new(d).divide(n), n / d);
        }

        #[test]
        fn divides_bucket_lengths_like_div(n: u64, d in 1_000_000u64..60_000_000_000) {
            prop_assert_eq!(Divisor::new(d).divide(n), n / d);
        }
    }
}
