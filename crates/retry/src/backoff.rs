//! Exponential backoff with a cap and jitter.
//!
//! Jitter spreads retries of many clients over time so that they do not
//! arrive together (AWS Architecture Blog, "Exponential Backoff and
//! Jitter"). Full jitter is the default; decorrelated jitter grows from the
//! previous delay instead of the attempt number.

use std::time::Duration;

use rand::RngExt;
use rand::rngs::SmallRng;

use crate::error::InvalidConfig;

/// How the exponential delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, min(cap, base · 2^(n-1))]`.
    #[default]
    Full,
    /// Uniform in `[base, min(cap, 3 · previous)]`.
    Decorrelated,
    /// Exactly `min(cap, base · 2^(n-1))`: for tests and for comparison.
    None,
}

/// An exponential backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// Base 1 s (the design's `IO_RETRY_DELAY`), cap 30 s, full jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// A schedule starting at `base` and never exceeding `cap`.
    ///
    /// Fails when `base` is zero or larger than `cap`.
    pub fn try_new(base: Duration, cap: Duration, jitter: Jitter) -> Result<Self, InvalidConfig> {
        if base.is_zero() {
            return Err(InvalidConfig::new(
                "backoff base delay must be greater than zero",
            ));
        }
        if base > cap {
            return Err(InvalidConfig::new(
                "backoff base delay must not exceed its cap",
            ));
        }
        Ok(Self { base, cap, jitter })
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry number `retry` (1 for the first retry), given
    /// the previous delay (for decorrelated jitter).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut SmallRng) -> Duration {
        let exponential = || {
            let factor = 2u32.saturating_pow(retry.saturating_sub(1));
            self.base.saturating_mul(factor).min(self.cap)
        };
        match self.jitter {
            Jitter::None => exponential(),
            Jitter::Full => {
                let ceiling = exponential();
                Duration::from_nanos(rng.random_range(0..=nanos(ceiling)))
            }
            Jitter::Decorrelated => {
                let low = nanos(self.base);
                let high = nanos(previous.max(self.base).saturating_mul(3).min(self.cap)).max(low);
                Duration::from_nanos(rng.random_range(low..=high))
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn invalid_schedules_are_rejected() {
        assert!(Backoff::try_new(Duration::ZERO, Duration::from_secs(1), Jitter::Full).is_err());
        assert!(
            Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1), Jitter::Full).is_err()
        );
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let b = Backoff::try_new(
            Duration::from_millis(100),
            Duration::from_millis(500),
            Jitter::None,
        )
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let delays: Vec<u128> = (1..=5)
            .map(|n| b.delay(n, Duration::ZERO, &mut rng).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn same_seed_same_delays() {
        let b = Backoff::default();
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (1..=4)
                .map(|n| b.delay(n, Duration::ZERO, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    proptest! {
        #[test]
        fn full_jitter_stays_within_bounds(seed: u64, retry in 1u32..64, base_ms in 1u64..1000, extra_ms in 0u64..10_000) {
            let base = Duration::from_millis(base_ms);
            let cap = base + Duration::from_millis(extra_ms);
            let b = Backoff::try_new(base, cap, Jitter::Full).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = b.delay(retry, Duration::ZERO, &mut rng);
            let ceiling = base.saturating_mul(2u32.saturating_pow(retry - 1)).min(cap);
            prop_assert!(d <= ceiling);
            prop_assert!(d <= cap);
        }

        #[test]
        fn decorrelated_jitter_stays_within_bounds(seed: u64, prev_ms in 0u64..100_000, base_ms in 1u64..1000, extra_ms in 0u64..10_000) {
            let base = Duration::from_millis(base_ms);
            let cap = base + Duration::from_millis(extra_ms);
            let b = Backoff::try_new(base, cap, Jitter::Decorrelated).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = b.delay(2, Duration::from_millis(prev_ms), &mut rng);
            prop_assert!(d >= base);
            prop_assert!(d <= cap);
        }
    }
}
