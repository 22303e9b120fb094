//! A circuit breaker shared by every task that calls one dependency.
//!
//! Closed: calls flow, outcomes enter a sliding [`Window`]. When at least
//! `min_calls` are in the window and the failure rate reaches the threshold,
//! the breaker opens. Open: calls are rejected at once with the time left
//! until it half-opens. Half-open: up to `half_open_probes` calls go
//! through and are judged like the window: the breaker re-opens for
//! another interval as soon as their failures reach the failure rate, and
//! closes as soon as they no longer can. (With 5 probes at 50%: three
//! failures re-open it, three successes close it. Demanding that every
//! probe succeed would keep a dependency with a few percent of errors
//! locked out long after it recovered.) Calls slower than `slow_call` (when
//! set) count as failures even if they succeed.
//!
//! The hot path: admitting a call while closed reads one atomic flag;
//! reporting a success while closed (with a time window) is one
//! compare-and-swap ([`fast`]); other reports take one uncontended mutex
//! for a few updates.

mod fast;
mod window;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_metrics::{CircuitState, ResilienceMetrics};
use tokio::time::Instant;

use fast::FastSuccesses;
use window::Outcomes;
pub use window::Window;

use crate::clock::Reading;
use crate::error::InvalidConfig;

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The history judged. Default: the last 2 seconds — short enough to
    /// detect an outage in under a second at a few hundred calls per
    /// second (the crate README's simulation), long enough that 30% random
    /// failures never trip it. With `min_calls` 20 it judges dependencies
    /// called at least 10 times a second; below that the retry budget's
    /// floor is what limits retries.
    pub window: Window,
    /// Calls needed in the window before the breaker may open. Default 50:
    /// with fewer, chance alone trips it. A dependency failing 30% of
    /// calls reaches a 50% rate somewhere in its first calls with
    /// probability 5.7% when judged from 20 calls, 0.3% from 50 (a
    /// simulation in the crate's README).
    pub min_calls: u32,
    /// Failure rate (0 < r ≤ 1) at which it opens. Default 0.5: well above
    /// the failure rates that retries absorb, well below an outage.
    pub failure_rate: f64,
    /// How long it stays open before probing. Default 5 s.
    pub open_interval: Duration,
    /// The longest it stays open: each time the probes fail and it opens
    /// again, it stays open twice as long as the time before, up to this;
    /// closing resets it to `open_interval`. A dependency that stays down
    /// is probed less and less often, so at low traffic few requests are
    /// the probe that pays for finding it still down; the price is a
    /// recovery noticed up to this long after the dependency returns.
    /// Default 30 s (5, 10, 20, 30, 30 s…); equal to `open_interval`: a
    /// fixed interval.
    pub max_open_interval: Duration,
    /// Probe calls allowed while half-open, judged by `failure_rate` (see
    /// the module docs). Default 5.
    pub half_open_probes: u32,
    /// A successful call slower than this counts as a failure. Default: off.
    pub slow_call: Option<Duration>,
    /// Consecutive failures that open the breaker while the window holds
    /// fewer than `min_calls` calls, so that a dependency that is down
    /// opens it at low traffic too (the rate rule needs `min_calls`).
    /// Default 10: a dependency failing 30% of calls at random does that
    /// once in 170,000 runs of ten; a dead one called once a second with
    /// three attempts per call does it within four calls. 0: off.
    pub consecutive_failures: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Window::Time(Duration::from_secs(2)),
            min_calls: 50,
            failure_rate: 0.5,
            open_interval: Duration::from_secs(5),
            max_open_interval: Duration::from_secs(30),
            half_open_probes: 5,
            slow_call: None,
            consecutive_failures: 10,
        }
    }
}

impl BreakerConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(InvalidConfig::new("breaker failure rate must be in (0, 1]"));
        }
        if self.min_calls == 0 {
            return Err(InvalidConfig::new("breaker min_calls must be at least 1"));
        }
        if self.half_open_probes == 0 {
            return Err(InvalidConfig::new(
                "breaker half_open_probes must be at least 1",
            ));
        }
        if self.open_interval.is_zero() {
            return Err(InvalidConfig::new(
                "breaker open interval must be greater than zero",
            ));
        }
        if self.max_open_interval < self.open_interval {
            return Err(InvalidConfig::new(
                "breaker max open interval must not be shorter than its open interval",
            ));
        }
        match self.window {
            Window::Count(0) => Err(InvalidConfig::new(
                "breaker count window must hold at least 1 call",
            )),
            Window::Time(d) if d < Duration::from_millis(10) => Err(InvalidConfig::new(
                "breaker time window must be at least 10 ms",
            )),
            _ => Ok(()),
        }
    }
}

/// A call was rejected because the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open, retry in {retry_after:?}")]
pub struct Rejected {
    /// When the breaker will let a probe through.
    pub retry_after: Duration,
}

/// A circuit breaker; clones share the same state.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Mirrors `inner.state == Closed`, written under the lock, so that
    /// admitting a call while closed needs no lock. A reader racing with an
    /// opening may admit one more call, which is harmless.
    closed: AtomicBool,
    /// Successes while closed, counted outside the lock (time windows
    /// only) and folded into `inner.outcomes` under it.
    fast: Option<FastSuccesses>,
    /// Failures in a row while closed (a success resets it without the
    /// lock).
    streak: AtomicU32,
    metrics: Option<ResilienceMetrics>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    outcomes: Outcomes,
    /// How long the last opening lasted (doubles on each re-opening).
    open_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
        failed: u32,
    },
}

impl CircuitBreaker {
    /// A closed breaker. Fails when the configuration is inconsistent.
    pub fn try_new(config: BreakerConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self::build(config, None))
    }

    /// A closed breaker that records its state and transitions under the
    /// connection name of `metrics`.
    pub fn with_metrics(
        config: BreakerConfig,
        metrics: ResilienceMetrics,
    ) -> Result<Self, InvalidConfig> {
        config.validate()?;
        metrics.transition(CircuitState::Closed);
        Ok(Self::build(config, Some(metrics)))
    }

    fn build(config: BreakerConfig, metrics: Option<ResilienceMetrics>) -> Self {
        let now = Instant::now();
        let outcomes = Outcomes::new(config.window, now);
        let fast = outcomes.buckets().map(|b| FastSuccesses::new(b, now));
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    state: State::Closed,
                    outcomes,
                    open_for: config.open_interval,
                }),
                closed: AtomicBool::new(true),
                fast,
                streak: AtomicU32::new(0),
                config,
                metrics,
            }),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The current state (an open breaker whose interval has passed reads
    /// as half-open).
    pub fn state(&self) -> CircuitState {
        let inner = self.lock();
        match inner.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to make a call. On success, report the outcome through the
    /// returned [`Permit`]; a permit dropped without a report (the call was
    /// cancelled) counts as neither success nor failure.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.try_acquire_at(Instant::now())
    }

    /// A closed breaker admits at once (inlined into the success path); an
    /// open or half-open one decides under its lock.
    #[inline]
    pub(crate) fn try_acquire_at(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Ok(self.permit(false));
        }
        self.try_acquire_locked(now)
    }

    fn try_acquire_locked(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Ok(self.permit(false)),
            State::Open { until } if now < until => Err(Rejected {
                retry_after: until - now,
            }),
            State::Open { .. } => {
                inner.state = State::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                    failed: 0,
                };
                self.transitioned(CircuitState::HalfOpen);
                Ok(self.permit(true))
            }
            State::HalfOpen {
                admitted,
                succeeded,
                failed,
            } => {
                // One probe at a time: while one is out, its result may
                // re-open the breaker, and a request admitted beside it
                // would pay for the dependency being down too.
                let out = admitted.saturating_sub(succeeded + failed);
                if out == 0 && admitted < self.shared.config.half_open_probes {
                    inner.state = State::HalfOpen {
                        admitted: admitted + 1,
                        succeeded,
                        failed,
                    };
                    Ok(self.permit(true))
                } else {
                    // Probes are out; their results decide soon.
                    Err(Rejected {
                        retry_after: self.shared.config.open_interval.min(Duration::from_secs(1)),
                    })
                }
            }
        }
    }

    /// How long it stays open from `now`, if it is open: a caller about
    /// to wait less than this before its next call knows it will be
    /// rejected.
    pub(crate) fn open_for_at(&self, now: Instant) -> Option<Duration> {
        if self.shared.closed.load(Ordering::Acquire) {
            return None;
        }
        match self.lock().state {
            State::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            reported: false,
        }
    }

    #[inline]
    fn report(&self, probe: bool, failed: bool, now: impl Into<Reading>) {
        let now = now.into();
        let shared = &*self.shared;
        // A success while closed cannot open the breaker: count it without
        // the lock when its bucket is the one being counted.
        if !probe
            && !failed
            && let Some(fast) = &shared.fast
            && shared.closed.load(Ordering::Acquire)
        {
            if shared.streak.load(Ordering::Relaxed) != 0 {
                shared.streak.store(0, Ordering::Relaxed);
            }
            if fast.try_add(now) {
                return;
            }
        }
        self.report_locked(probe, failed, now.at());
    }

    /// Where its time window numbers buckets from, if it has one.
    pub(crate) fn origin(&self) -> Option<Instant> {
        self.shared.fast.as_ref().map(FastSuccesses::origin)
    }

    /// Everything but a counted success: failures, probes, slow calls, the
    /// first success of a new time bucket.
    #[cold]
    #[inline(never)]
    fn report_locked(&self, probe: bool, failed: bool, now: Instant) {
        let shared = &*self.shared;
        let config = &shared.config;
        let mut inner = self.lock();
        match inner.state {
            State::Closed => {
                if let Some(fast) = &shared.fast {
                    let (bucket, successes) = fast.take(now);
                    if successes > 0 {
                        inner.outcomes.record_in(bucket, successes, 0, now);
                    }
                }
                inner.outcomes.record(failed, now);
                let streak = if failed {
                    shared.streak.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    shared.streak.store(0, Ordering::Relaxed);
                    0
                };
                let tally = inner.outcomes.tally(now);
                if tally.calls >= config.min_calls {
                    if f64::from(tally.failures) >= config.failure_rate * f64::from(tally.calls) {
                        self.open(&mut inner, now, tally.failures, tally.calls);
                    }
                } else if config.consecutive_failures > 0 && streak >= config.consecutive_failures {
                    self.open(&mut inner, now, streak, streak);
                }
            }
            State::HalfOpen {
                admitted,
                succeeded,
                failed: probes_failed,
            } if probe => {
                let reopen_at = self.probe_failures_to_reopen();
                let (succeeded, probes_failed) = if failed {
                    (succeeded, probes_failed + 1)
                } else {
                    (succeeded + 1, probes_failed)
                };
                // A probe that fails before any succeeded re-opens at once:
                // the dependency is most likely still down.
                if probes_failed >= reopen_at || (failed && succeeded == 0) {
                    self.open(&mut inner, now, probes_failed, probes_failed + succeeded);
                } else if succeeded > config.half_open_probes - reopen_at {
                    inner.state = State::Closed;
                    inner.outcomes.clear(now);
                    self.forget_fast_successes(now);
                    self.shared.closed.store(true, Ordering::Release);
                    self.transitioned(CircuitState::Closed);
                } else {
                    inner.state = State::HalfOpen {
                        admitted,
                        succeeded,
                        failed: probes_failed,
                    };
                }
            }
            // A call admitted while closed that finishes after the breaker
            // opened says nothing about the dependency now.
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    /// Failed probes that re-open the breaker: the failure rate's share
    /// of the probes, at least one.
    fn probe_failures_to_reopen(&self) -> u32 {
        let config = &self.shared.config;
        let share = (config.failure_rate * f64::from(config.half_open_probes)).ceil();
        // In 1..=probes: failure_rate is in (0, 1] and probes ≥ 1.
        (share as u32).clamp(1, config.half_open_probes)
    }

    fn release_probe(&self) {
        let mut inner = self.lock();
        if let State::HalfOpen {
            admitted,
            succeeded,
            failed,
        } = inner.state
        {
            inner.state = State::HalfOpen {
                admitted: admitted.saturating_sub(1),
                succeeded,
                failed,
            };
        }
    }

    /// Opens, `failures` of `calls` having failed (logged).
    fn open(&self, inner: &mut Inner, now: Instant, failures: u32, calls: u32) {
        let config = &self.shared.config;
        // Probes failed: stay open longer than last time.
        inner.open_for = if matches!(inner.state, State::HalfOpen { .. }) {
            (inner.open_for * 2).min(config.max_open_interval)
        } else {
            config.open_interval
        };
        inner.state = State::Open {
            until: now + inner.open_for,
        };
        self.shared.closed.store(false, Ordering::Release);
        inner.outcomes.clear(now);
        self.forget_fast_successes(now);
        self.shared.streak.store(0, Ordering::Relaxed);
        self.transitioned(CircuitState::Open);
        tracing::warn!(
            open_for = ?inner.open_for,
            failures,
            calls,
            "circuit breaker opened"
        );
    }

    /// Drops successes counted outside the lock: the window they belonged
    /// to was just cleared.
    fn forget_fast_successes(&self, now: Instant) {
        if let Some(fast) = &self.shared.fast {
            fast.take(now);
        }
    }

    fn transitioned(&self, to: CircuitState) {
        if let Some(m) = &self.shared.metrics {
            m.transition(to);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent, so a poisoned lock (a
        // panic elsewhere while holding it) is safe to keep using.
        match self.shared.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Leave to make one call; report how it went.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    /// Whether this call is a probe of a half-open breaker: its outcome
    /// decides whether the breaker closes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The same permit, owning a handle to its breaker: for a call made on
    /// another task (a probe run in the background, say).
    pub fn into_owned(mut self) -> OwnedPermit {
        // This one is disarmed; the owned one reports or releases.
        self.reported = true;
        OwnedPermit {
            breaker: self.breaker.clone(),
            probe: self.probe,
            reported: false,
        }
    }

    /// The call succeeded after `elapsed` (a failure if slower than the
    /// breaker's `slow_call` threshold).
    pub fn success(self, elapsed: Duration) {
        self.success_at(elapsed, Instant::now());
    }

    pub(crate) fn judges_slow_calls(&self) -> bool {
        self.breaker.shared.config.slow_call.is_some()
    }

    pub(crate) fn success_at(mut self, elapsed: Duration, now: impl Into<Reading>) {
        self.reported = true;
        let slow = self
            .breaker
            .shared
            .config
            .slow_call
            .is_some_and(|limit| elapsed > limit);
        self.breaker.report(self.probe, slow, now);
    }

    /// The call failed in a way that reflects on the dependency's health.
    pub fn failure(self) {
        self.failure_at(Instant::now());
    }

    pub(crate) fn failure_at(mut self, now: Instant) {
        self.reported = true;
        self.breaker.report(self.probe, true, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe();
        }
    }
}

/// A [`Permit`] that owns a handle to its breaker ([`Permit::into_owned`]).
#[derive(Debug)]
pub struct OwnedPermit {
    breaker: CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl OwnedPermit {
    fn borrowed(&mut self) -> Permit<'_> {
        self.reported = true;
        Permit {
            breaker: &self.breaker,
            probe: self.probe,
            reported: false,
        }
    }

    /// Whether this call is a probe of a half-open breaker.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded after `elapsed`.
    pub fn success(mut self, elapsed: Duration) {
        self.borrowed().success(elapsed);
    }

    /// The call failed in a way that reflects on the dependency's health.
    pub fn failure(mut self) {
        self.borrowed().failure();
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests;
