//! [`Policy`]: budget + breaker + backoff + timeouts, run around a call.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sluice_metrics::ResilienceMetrics;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::classify::{Class, Classify};
use crate::clock::{Reading, Rebase, nanos_since};
use crate::error::{Failure, GiveUp, InvalidConfig, RetryError};
use crate::within::within;

/// How to run a call against one dependency: how often to try, how long to
/// wait between tries and in total, when to stop trying altogether.
///
/// Build one per dependency and share it (clones share the breaker, the
/// budget and the jitter seed sequence):
///
/// ```
/// # async fn demo() -> Result<(), sluice_retry::RetryError<std::io::Error>> {
/// use std::time::Duration;
/// use sluice_retry::Policy;
///
/// let policy = Policy::builder()
///     .attempts(3)
///     .base_delay(Duration::from_millis(100))
///     .attempt_timeout(Duration::from_secs(2))
///     .deadline(Duration::from_secs(5))
///     .build()
///     .expect("valid policy");
/// let value = policy.run(|_attempt| async { Ok::<_, std::io::Error>(42) }).await?;
/// assert_eq!(value, 42);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    attempts: u32,
    backoff: Backoff,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    breaker: Option<CircuitBreaker>,
    budget: Option<RetryBudget>,
    metrics: Option<ResilienceMetrics>,
    seed: u64,
    runs: Arc<AtomicU64>,
    clock: Clock,
}

/// Where the success path measures its one clock reading from (the earlier
/// of the breaker's and the budget's origins) and how to make each one's
/// reading of it, so that one subtraction of instants serves both.
#[derive(Debug, Clone, Copy)]
struct Clock {
    reference: Instant,
    breaker: Rebase,
    budget: Rebase,
}

impl Clock {
    fn new(breaker: Option<&CircuitBreaker>, budget: Option<&RetryBudget>) -> Self {
        let breaker = breaker.and_then(CircuitBreaker::origin);
        let budget = budget.map(RetryBudget::epoch);
        // With neither, nothing reads the clock's distances.
        let reference = breaker
            .into_iter()
            .chain(budget)
            .min()
            .unwrap_or_else(Instant::now);
        Self {
            reference,
            breaker: Rebase::new(reference, breaker.unwrap_or(reference)),
            budget: Rebase::new(reference, budget.unwrap_or(reference)),
        }
    }
}

impl Policy {
    /// A builder with the defaults listed on [`PolicyBuilder`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Attempts per call, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The overall deadline per call, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The breaker, when the policy has one.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The retry budget, when the policy has one.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    /// Runs `operation` under the policy. `operation` is called once per
    /// attempt with the attempt number (1-based) and returns the future for
    /// that attempt.
    ///
    /// Returns the first success, or a [`RetryError`] that says why the
    /// policy gave up and how each attempt failed. Permanent errors are
    /// returned after one attempt; transient ones are retried with backoff
    /// while attempts, the deadline, the breaker and the budget allow.
    pub async fn run<T, E, F, Fut>(&self, operation: F) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.run_deadline(self.deadline, operation).await
    }

    /// [`run`](Self::run) under a deadline of the caller's (a request's
    /// own timeout), or the policy's deadline if that is shorter. Sharing
    /// one policy this way keeps its breaker, budget and seed sequence,
    /// and builds nothing per call.
    pub async fn run_within<T, E, F, Fut>(
        &self,
        deadline: Duration,
        operation: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let deadline = self.deadline.map_or(deadline, |own| own.min(deadline));
        self.run_deadline(Some(deadline), operation).await
    }

    async fn run_deadline<T, E, F, Fut>(
        &self,
        deadline: Option<Duration>,
        mut operation: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let started = Instant::now();
        // Kept as a duration from `started`: the success path never needs
        // the instant it ends at.
        let budget_left = |now: Instant| {
            deadline.map(|d| d.saturating_sub(now.saturating_duration_since(started)))
        };
        // Seeded on the first retry only: the success path needs no jitter.
        let mut rng: Option<SmallRng> = None;
        let mut failures: Vec<Failure<E>> = Vec::new();
        let mut previous_delay = Duration::ZERO;
        let since = nanos_since(self.clock.reference, started);
        if let Some(budget) = &self.budget {
            budget.deposit_at(self.clock.budget.reading(started, since));
        }
        // One clock read is all the success path pays for (two when the
        // breaker judges slow calls); everything else takes the time it is
        // given.
        let mut now = started;
        for attempt in 1.. {
            if attempt > 1 {
                now = Instant::now();
            }
            let permit = match &self.breaker {
                None => None,
                Some(breaker) => match breaker.try_acquire_at(now) {
                    Ok(permit) => Some(permit),
                    Err(rejected) => {
                        return Err(self.give_up(
                            GiveUp::CircuitOpen,
                            attempt - 1,
                            failures,
                            Some(rejected.retry_after),
                        ));
                    }
                },
            };
            if let Some(m) = &self.metrics {
                m.attempt(attempt > 1);
            }
            let remaining = if attempt == 1 {
                deadline
            } else {
                budget_left(now)
            };
            let limit = match (self.attempt_timeout, remaining) {
                (Some(a), Some(r)) => Some(a.min(r)),
                (a, r) => a.or(r),
            };
            let result = match limit {
                Some(limit) => match within(now, limit, operation(attempt)).await {
                    Ok(result) => result.map_err(Failure::Error),
                    Err(_) => Err(Failure::Timeout(limit)),
                },
                None => operation(attempt).await.map_err(Failure::Error),
            };
            let failure = match result {
                Ok(value) => {
                    if let Some(permit) = permit {
                        // The end time matters only to judge slow calls;
                        // otherwise the start time places the outcome in the
                        // breaker's window well enough, and saves a clock read.
                        if permit.judges_slow_calls() {
                            let ended = Instant::now();
                            permit.success_at(ended.saturating_duration_since(now), ended);
                        } else {
                            let now = if attempt == 1 {
                                self.clock.breaker.reading(started, since)
                            } else {
                                Reading::from(now)
                            };
                            permit.success_at(Duration::ZERO, now);
                        }
                    }
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let ended = Instant::now();
            let took = ended.saturating_duration_since(now);
            let (class, hint) = match &failure {
                Failure::Error(e) => (e.class(), e.retry_after()),
                Failure::Timeout(_) => (Class::Transient, None),
            };
            if let Some(permit) = permit {
                // A permanent error (bad input, not found) is the caller's
                // problem, not a sign that the dependency is unhealthy.
                match class {
                    Class::Transient => permit.failure_at(ended),
                    Class::Permanent => permit.success_at(took, ended),
                }
            }
            failures.push(failure);
            if class == Class::Permanent {
                return Err(self.give_up(GiveUp::Permanent, attempt, failures, hint));
            }
            if attempt >= self.attempts {
                return Err(self.give_up(GiveUp::AttemptsExhausted, attempt, failures, hint));
            }
            let rng = rng.get_or_insert_with(|| {
                SmallRng::seed_from_u64(self.seed ^ self.runs.fetch_add(1, Ordering::Relaxed))
            });
            let mut delay = self.backoff.delay(attempt, previous_delay, rng);
            if let Some(asked) = hint {
                delay = delay.max(asked.min(self.max_retry_after));
            }
            previous_delay = delay;
            // An open breaker that stays open past the delay would reject
            // the next attempt: fail now rather than after sleeping.
            if let Some(open_for) = self
                .breaker
                .as_ref()
                .and_then(|b| b.open_for_at(ended))
                .filter(|open_for| *open_for > delay)
            {
                return Err(self.give_up(GiveUp::CircuitOpen, attempt, failures, Some(open_for)));
            }
            if let Some(left) = budget_left(ended) {
                // The next attempt is expected to take about as long as this
                // one did; if the delay plus that does not fit, stop now
                // instead of failing later.
                let expected = self.attempt_timeout.map_or(took, |t| took.min(t));
                if left.is_zero() || delay + expected > left {
                    return Err(self.give_up(GiveUp::Deadline, attempt, failures, hint));
                }
            }
            if let Some(budget) = &self.budget
                && !budget.try_withdraw_at(ended)
            {
                return Err(self.give_up(GiveUp::Budget, attempt, failures, hint));
            }
            tracing::debug!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying after transient failure"
            );
            tokio::time::sleep(delay).await;
        }
        unreachable!("the attempt loop only ends by returning")
    }

    fn give_up<E>(
        &self,
        reason: GiveUp,
        attempts: u32,
        failures: Vec<Failure<E>>,
        retry_after: Option<Duration>,
    ) -> RetryError<E> {
        if let Some(m) = &self.metrics {
            m.give_up(reason.as_str());
        }
        tracing::debug!(reason = reason.as_str(), attempts, "giving up");
        RetryError {
            reason,
            attempts,
            failures,
            retry_after,
        }
    }
}

/// Builds a [`Policy`]. Defaults:
///
/// | setting | default |
/// | --- | --- |
/// | attempts | 3 (the design's `IO_RETRY_ATTEMPTS`) |
/// | backoff | base 1 s (`IO_RETRY_DELAY`), cap 30 s, full jitter |
/// | attempt timeout | none |
/// | deadline | 30 s for the whole call, retries included |
/// | largest `Retry-After` honoured | 30 s (longer requests are clamped) |
/// | circuit breaker | [`BreakerConfig::default`] |
/// | retry budget | [`BudgetConfig::default`] |
/// | jitter seed | random |
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    attempts: u32,
    base_delay: Option<Duration>,
    backoff: Backoff,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    breaker: Option<BreakerChoice>,
    budget: Option<BudgetChoice>,
    metrics: Option<ResilienceMetrics>,
    seed: Option<u64>,
}

#[derive(Debug, Clone)]
enum BreakerChoice {
    New(BreakerConfig),
    Shared(CircuitBreaker),
}

#[derive(Debug, Clone)]
enum BudgetChoice {
    New(BudgetConfig),
    Shared(RetryBudget),
}

impl Default for PolicyBuilder {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: None,
            backoff: Backoff::default(),
            attempt_timeout: None,
            deadline: Some(Duration::from_secs(30)),
            max_retry_after: Duration::from_secs(30),
            breaker: Some(BreakerChoice::New(BreakerConfig::default())),
            budget: Some(BudgetChoice::New(BudgetConfig::default())),
            metrics: None,
            seed: None,
        }
    }
}

impl PolicyBuilder {
    /// Attempts per call, the first included (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The whole backoff schedule.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self.base_delay = None;
        self
    }

    /// Only the base delay, keeping the schedule's cap and jitter (the cap
    /// grows to the base if needed).
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.base_delay = Some(base);
        self
    }

    /// A timeout for each attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The deadline for the whole call, retries and delays included.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No overall deadline: only attempts bound the call.
    pub fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// The longest server-requested delay honoured; longer ones are clamped.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// A new breaker with these settings.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(BreakerChoice::New(config));
        self
    }

    /// An existing breaker, shared with other policies.
    pub fn shared_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(BreakerChoice::Shared(breaker));
        self
    }

    /// No circuit breaker.
    pub fn no_breaker(mut self) -> Self {
        self.breaker = None;
        self
    }

    /// A new retry budget with these settings.
    pub fn budget(mut self, config: BudgetConfig) -> Self {
        self.budget = Some(BudgetChoice::New(config));
        self
    }

    /// An existing budget, shared with other policies.
    pub fn shared_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(BudgetChoice::Shared(budget));
        self
    }

    /// No retry budget: only attempts and the deadline bound retries.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Record attempts, give-ups and breaker transitions under
    /// `connection`'s name.
    pub fn metrics(mut self, metrics: ResilienceMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A fixed jitter seed, for reproducible tests and simulations.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The policy, or why the settings do not make sense.
    pub fn build(self) -> Result<Policy, InvalidConfig> {
        if self.attempts == 0 {
            return Err(InvalidConfig::new("attempts must be at least 1"));
        }
        if self.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err(InvalidConfig::new(
                "attempt timeout must be greater than zero",
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(InvalidConfig::new("deadline must be greater than zero"));
        }
        let backoff = match self.base_delay {
            Some(base) => {
                Backoff::try_new(base, self.backoff.cap().max(base), self.backoff.jitter())?
            }
            None => self.backoff,
        };
        let breaker = match self.breaker {
            None => None,
            Some(BreakerChoice::Shared(b)) => Some(b),
            Some(BreakerChoice::New(config)) => Some(match &self.metrics {
                Some(m) => CircuitBreaker::with_metrics(config, m.clone())?,
                None => CircuitBreaker::try_new(config)?,
            }),
        };
        let budget = match self.budget {
            None => None,
            Some(BudgetChoice::Shared(b)) => Some(b),
            Some(BudgetChoice::New(config)) => Some(RetryBudget::try_new(config)?),
        };
        let clock = Clock::new(breaker.as_ref(), budget.as_ref());
        Ok(Policy {
            attempts: self.attempts,
            backoff,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            max_retry_after: self.max_retry_after,
            breaker,
            budget,
            metrics: self.metrics,
            seed: self.seed.unwrap_or_else(|| rand::rng().random()),
            runs: Arc::new(AtomicU64::new(0)),
            clock,
        })
    }
}
