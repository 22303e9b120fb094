//! The attempt loop on tokio's paused clock: what is retried, when, and
//! for how long.

use std::cell::RefCell;
use std::time::Duration;

use proptest::prelude::*;
use sluice_retry::{
    Backoff, BreakerConfig, BudgetConfig, Class, Classify, Failure, GiveUp, Jitter, Policy, Window,
};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Transient,
    Permanent,
    Busy(Duration),
}

impl std::fmt::Display for E {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl Classify for E {
    fn class(&self) -> Class {
        match self {
            E::Permanent => Class::Permanent,
            _ => Class::Transient,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            E::Busy(d) => Some(*d),
            _ => None,
        }
    }
}

fn exact(base_ms: u64) -> Backoff {
    Backoff::try_new(
        Duration::from_millis(base_ms),
        Duration::from_secs(60),
        Jitter::None,
    )
    .expect("valid backoff")
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Runs `policy` over a scripted sequence of results, each taking `took`;
/// returns the result and the start time of every attempt (ms since start).
async fn scripted(
    policy: &Policy,
    script: Vec<Result<u32, E>>,
    took: Duration,
) -> (Result<u32, sluice_retry::RetryError<E>>, Vec<u128>) {
    let start = Instant::now();
    let starts = RefCell::new(Vec::new());
    let script = RefCell::new(script.into_iter());
    let result = policy
        .run(|_| {
            starts
                .borrow_mut()
                .push((Instant::now() - start).as_millis());
            let next = script.borrow_mut().next().unwrap_or(Err(E::Transient));
            async move {
                tokio::time::sleep(took).await;
                next
            }
        })
        .await;
    (result, starts.into_inner())
}

fn bare() -> sluice_retry::PolicyBuilder {
    Policy::builder().no_breaker().no_budget().seed(1)
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_exponential_delays() {
    let policy = bare()
        .attempts(4)
        .backoff(exact(100))
        .no_deadline()
        .build()
        .unwrap();
    let (result, starts) = scripted(
        &policy,
        vec![
            Err(E::Transient),
            Err(E::Transient),
            Err(E::Transient),
            Ok(7),
        ],
        Duration::ZERO,
    )
    .await;
    assert_eq!(result.unwrap(), 7);
    assert_eq!(starts, [0, 100, 300, 700]);
}

#[tokio::test(start_paused = true)]
async fn the_final_error_lists_every_attempt() {
    let policy = bare()
        .attempts(3)
        .backoff(exact(10))
        .attempt_timeout(Duration::from_millis(50))
        .no_deadline()
        .build()
        .unwrap();
    let start = Instant::now();
    let attempt = RefCell::new(0);
    let err = policy
        .run(|n| {
            *attempt.borrow_mut() = n;
            async move {
                if n == 2 {
                    tokio::time::sleep(Duration::from_secs(1)).await; // times out
                }
                Err::<(), _>(E::Transient)
            }
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason(), GiveUp::AttemptsExhausted);
    assert_eq!(err.attempts(), 3);
    assert!(matches!(
        err.failures(),
        [
            Failure::Error(E::Transient),
            Failure::Timeout(_),
            Failure::Error(E::Transient)
        ]
    ));
    assert_eq!(
        err.to_string(),
        "all attempts failed after 3 attempts: attempt 1: Transient; attempt 2: timed out after 50ms; attempt 3: Transient"
    );
    // 0 + 10 ms delay + 50 ms timeout + 20 ms delay.
    assert_eq!((Instant::now() - start).as_millis(), 80);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_clamped() {
    let policy = bare()
        .attempts(3)
        .backoff(exact(10))
        .max_retry_after(Duration::from_secs(2))
        .no_deadline()
        .build()
        .unwrap();
    let (result, starts) = scripted(
        &policy,
        vec![
            Err(E::Busy(Duration::from_millis(700))),
            Err(E::Busy(Duration::from_secs(3600))),
            Ok(1),
        ],
        Duration::ZERO,
    )
    .await;
    assert_eq!(result.unwrap(), 1);
    // 700 ms as asked; then an hour clamped to 2 s.
    assert_eq!(starts, [0, 700, 2700]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_fit_the_deadline_is_not_started() {
    // Each attempt takes 400 ms; after the first (400 ms) a 100 ms delay
    // and another 400 ms would end at 900 ms < 1 s: allowed. After the
    // second (900 ms) the next would end at 1.5 s: not started.
    let policy = bare()
        .attempts(5)
        .backoff(exact(100))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let (result, starts) = scripted(&policy, vec![], Duration::from_millis(400)).await;
    let err = result.unwrap_err();
    assert_eq!(err.reason(), GiveUp::Deadline);
    assert_eq!(err.attempts(), 2);
    assert_eq!(starts, [0, 500]);
    assert!(Instant::now() - start <= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_is_cut_at_the_deadline() {
    let policy = bare()
        .attempts(3)
        .no_deadline()
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let (result, _) = scripted(&policy, vec![Ok(1)], Duration::from_secs(10)).await;
    let err = result.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.reason(), GiveUp::Deadline);
    assert_eq!(Instant::now() - start, Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn a_callers_deadline_cuts_a_shared_policy_short() {
    let policy = bare()
        .attempts(5)
        .backoff(exact(10))
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    let start = Instant::now();
    let starts = RefCell::new(Vec::new());
    let result = policy
        .run_within(Duration::from_millis(250), |_| {
            starts
                .borrow_mut()
                .push((Instant::now() - start).as_millis());
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<(), _>(E::Transient)
            }
        })
        .await;
    let err = result.unwrap_err();
    // 0–100 ms, retry at 110 ms (ends 210 ms); a third would end past 250 ms.
    assert_eq!(err.reason(), GiveUp::Deadline);
    assert_eq!(starts.into_inner(), [0, 110]);
    assert!(Instant::now() - start <= Duration::from_millis(250));
    // The policy's own, shorter deadline still wins.
    let short = bare()
        .attempts(5)
        .backoff(exact(10))
        .deadline(Duration::from_millis(50))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = short
        .run_within(Duration::from_secs(10), |_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<(), E>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(Instant::now() - start, Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_without_calling() {
    let policy = Policy::builder()
        .no_budget()
        .attempts(1)
        .breaker(BreakerConfig {
            window: Window::Count(2),
            min_calls: 2,
            open_interval: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    for _ in 0..2 {
        let (r, _) = scripted(&policy, vec![Err(E::Transient)], Duration::ZERO).await;
        assert_eq!(r.unwrap_err().reason(), GiveUp::AttemptsExhausted);
    }
    let (r, starts) = scripted(&policy, vec![Ok(1)], Duration::ZERO).await;
    let err = r.unwrap_err();
    assert_eq!((err.reason(), err.attempts()), (GiveUp::CircuitOpen, 0));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    assert!(starts.is_empty(), "the operation was not called");
    assert_eq!(err.to_string(), "circuit open, retry in 5s");
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_opens_the_breaker_ends_the_call_without_sleeping() {
    // A probe of a dependency still down: it fails, the breaker re-opens
    // for longer than the backoff, so waiting out the delay would only
    // meet a rejection. The call ends at once.
    let policy = Policy::builder()
        .no_budget()
        .attempts(3)
        .backoff(exact(1000))
        .breaker(BreakerConfig {
            window: Window::Count(10),
            min_calls: 50,
            consecutive_failures: 1,
            open_interval: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let (r, starts) = scripted(&policy, vec![Err(E::Transient)], Duration::from_millis(10)).await;
    let err = r.unwrap_err();
    assert_eq!((err.reason(), err.attempts()), (GiveUp::CircuitOpen, 1));
    assert_eq!(starts, vec![0]);
    assert_eq!(started.elapsed(), Duration::from_millis(10));
    assert!(
        err.retry_after()
            .is_some_and(|d| d > Duration::from_secs(4))
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_do_not_open_the_breaker() {
    let policy = Policy::builder()
        .no_budget()
        .breaker(BreakerConfig {
            window: Window::Count(4),
            min_calls: 4,
            ..Default::default()
        })
        .build()
        .unwrap();
    for _ in 0..20 {
        let (r, _) = scripted(&policy, vec![Err(E::Permanent)], Duration::ZERO).await;
        assert_eq!(r.unwrap_err().reason(), GiveUp::Permanent);
    }
    assert_eq!(
        policy.breaker().unwrap().state(),
        sluice_retry::CircuitState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_in_an_outage() {
    let policy = bare()
        .attempts(3)
        .backoff(exact(1))
        .budget(BudgetConfig {
            ratio: 0.1,
            min_per_second: 0,
            ttl: Duration::from_secs(10),
        })
        .build()
        .unwrap();
    let mut calls = 0;
    let mut budget_give_ups = 0;
    for _ in 0..100 {
        let (r, starts) = scripted(&policy, vec![], Duration::ZERO).await;
        calls += starts.len();
        if r.unwrap_err().reason() == GiveUp::Budget {
            budget_give_ups += 1;
        }
    }
    // 100 first attempts earn 10 retries; without a budget it would be
    // 200. Every call ends on the budget: those that got a retry were
    // refused the next one.
    assert_eq!(calls, 110);
    assert_eq!(budget_give_ups, 100);
}

#[test]
fn invalid_policies_are_rejected() {
    assert!(Policy::builder().attempts(0).build().is_err());
    assert!(
        Policy::builder()
            .attempt_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(Policy::builder().deadline(Duration::ZERO).build().is_err());
    assert!(
        Policy::builder()
            .base_delay(Duration::ZERO)
            .build()
            .is_err()
    );
    let err = Policy::builder()
        .breaker(BreakerConfig {
            failure_rate: 2.0,
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("failure rate"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A permanent error ends the call at the attempt that returned it,
    /// whatever came before.
    #[test]
    fn permanent_errors_are_never_retried(transient_before in 0usize..4, seed: u64) {
        paused().block_on(async {
            let policy = Policy::builder().no_breaker().no_budget().seed(seed).attempts(10)
                .base_delay(Duration::from_millis(5)).no_deadline().build().unwrap();
            let mut script = vec![Err(E::Transient); transient_before];
            script.push(Err(E::Permanent));
            script.push(Ok(1));
            let (result, starts) = scripted(&policy, script, Duration::from_millis(1)).await;
            let err = result.unwrap_err();
            assert_eq!(err.reason(), GiveUp::Permanent);
            assert_eq!(starts.len(), transient_before + 1);
        });
    }

    /// Whatever the attempt durations, delays and server hints, a call
    /// never outlives its deadline.
    #[test]
    fn the_deadline_is_never_exceeded(
        seed: u64,
        deadline_ms in 1u64..5_000,
        base_ms in 1u64..500,
        took_ms in 0u64..3_000,
        hint_ms in proptest::option::of(0u64..5_000),
        attempts in 1u32..8,
        jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Decorrelated), Just(Jitter::None)],
    ) {
        paused().block_on(async {
            let backoff = Backoff::try_new(Duration::from_millis(base_ms), Duration::from_secs(10), jitter).unwrap();
            let policy = Policy::builder().no_breaker().no_budget().seed(seed).attempts(attempts)
                .backoff(backoff).deadline(Duration::from_millis(deadline_ms)).build().unwrap();
            let failure = match hint_ms {
                Some(ms) => E::Busy(Duration::from_millis(ms)),
                None => E::Transient,
            };
            let start = Instant::now();
            let (result, starts) = scripted(&policy, vec![Err(failure); 8], Duration::from_millis(took_ms)).await;
            assert!(result.is_err());
            assert!(starts.len() as u32 <= attempts);
            assert!(Instant::now() - start <= Duration::from_millis(deadline_ms),
                "took {:?} with a deadline of {deadline_ms} ms", Instant::now() - start);
        });
    }
}
