use super::*;

fn breaker(window: Window, min_calls: u32, rate: f64) -> CircuitBreaker {
    CircuitBreaker::try_new(BreakerConfig {
        window,
        min_calls,
        failure_rate: rate,
        open_interval: Duration::from_secs(5),
        max_open_interval: Duration::from_secs(5),
        half_open_probes: 2,
        slow_call: None,
        consecutive_failures: 0,
    })
    .unwrap()
}

fn call(b: &CircuitBreaker, failed: bool) {
    let permit = b.try_acquire().expect("admitted");
    if failed {
        permit.failure()
    } else {
        permit.success(Duration::from_millis(1))
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        BreakerConfig {
            failure_rate: 0.0,
            ..Default::default()
        },
        BreakerConfig {
            failure_rate: 1.5,
            ..Default::default()
        },
        BreakerConfig {
            min_calls: 0,
            ..Default::default()
        },
        BreakerConfig {
            half_open_probes: 0,
            ..Default::default()
        },
        BreakerConfig {
            open_interval: Duration::ZERO,
            max_open_interval: Duration::ZERO,
            ..Default::default()
        },
        BreakerConfig {
            open_interval: Duration::from_secs(10),
            max_open_interval: Duration::from_secs(5),
            ..Default::default()
        },
        BreakerConfig {
            window: Window::Count(0),
            ..Default::default()
        },
    ];
    for config in bad {
        assert!(CircuitBreaker::try_new(config).is_err(), "{config:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn opens_exactly_at_the_threshold_after_min_calls() {
    let b = breaker(Window::Count(10), 4, 0.5);
    // 3 failures: below min_calls, stays closed.
    for _ in 0..3 {
        call(&b, true);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    // 4th call: 4 calls, 4 failures ≥ 50%: opens.
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_below_threshold_keeps_it_closed() {
    let b = breaker(Window::Count(10), 4, 0.5);
    // 4 of every 10 fail (40%), spread so that no prefix of at least
    // min_calls reaches 50%: never opens however often repeated.
    for round in 0..10 {
        for i in 0..10 {
            call(&b, [1, 4, 6, 9].contains(&i));
        }
        assert_eq!(b.state(), CircuitState::Closed, "round {round}");
    }
    // One more failure pushes out a success: 5 of 10, opens.
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_close_it_when_all_succeed() {
    let b = breaker(Window::Count(10), 2, 0.5);
    call(&b, true);
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert!(b.try_acquire().is_err());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    // One probe at a time.
    let p1 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    p1.success(Duration::from_millis(1));
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let p2 = b.try_acquire().unwrap();
    p2.success(Duration::from_millis(1));
    assert_eq!(b.state(), CircuitState::Closed);
    // The window was cleared: one failure does not reopen it.
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Closed);
}

fn five_probes() -> CircuitBreaker {
    let b = CircuitBreaker::try_new(BreakerConfig {
        window: Window::Count(10),
        min_calls: 1,
        failure_rate: 0.5,
        open_interval: Duration::from_secs(5),
        max_open_interval: Duration::from_secs(5),
        half_open_probes: 5,
        slow_call: None,
        consecutive_failures: 0,
    })
    .unwrap();
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
    b
}

fn probe(b: &CircuitBreaker, failed: bool) {
    let p = b.try_acquire().expect("a probe is admitted");
    assert!(p.is_probe());
    assert!(b.try_acquire().is_err(), "one probe at a time");
    if failed {
        p.failure();
    } else {
        p.success(Duration::from_millis(1));
    }
}

#[tokio::test(start_paused = true)]
async fn probes_go_one_at_a_time_and_are_judged_by_the_failure_rate_once_one_succeeded() {
    // 5 probes at 50%: once one succeeded, two failures are tolerated and
    // three successes close.
    let b = five_probes();
    tokio::time::advance(Duration::from_secs(5)).await;
    for failed in [false, true, false, true] {
        probe(&b, failed);
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }
    probe(&b, false);
    assert_eq!(b.state(), CircuitState::Closed);

    // Three failed probes re-open it.
    let b = five_probes();
    tokio::time::advance(Duration::from_secs(5)).await;
    probe(&b, false);
    for _ in 0..2 {
        probe(&b, true);
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }
    probe(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_first_probe_that_fails_reopens_at_once() {
    // A dependency still down is paid for by one probe, not three.
    let b = five_probes();
    tokio::time::advance(Duration::from_secs(5)).await;
    probe(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_a_full_interval() {
    // `breaker` has a fixed interval (max = open interval).
    let b = breaker(Window::Count(10), 1, 0.5);
    call(&b, true);
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = b.try_acquire().unwrap();
    probe.failure();
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(5)
    );
}

#[tokio::test(start_paused = true)]
async fn each_failed_probe_doubles_the_open_interval_up_to_its_cap_and_closing_resets_it() {
    let b = CircuitBreaker::try_new(BreakerConfig {
        window: Window::Count(10),
        min_calls: 1,
        half_open_probes: 1,
        open_interval: Duration::from_secs(1),
        max_open_interval: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    call(&b, true);
    let mut expected = [2, 4, 5, 5].into_iter();
    let mut waited = Duration::from_secs(1);
    for _ in 0..4 {
        tokio::time::advance(waited).await;
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        probe.failure();
        waited = Duration::from_secs(expected.next().unwrap());
        assert_eq!(b.try_acquire().unwrap_err().retry_after, waited);
    }
    // A probe that succeeds closes it; the next opening is short again.
    tokio::time::advance(waited).await;
    b.try_acquire().unwrap().success(Duration::from_millis(1));
    assert_eq!(b.state(), CircuitState::Closed);
    call(&b, true);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn an_owned_probe_reports_from_another_task() {
    let b = breaker(Window::Count(10), 1, 0.5);
    call(&b, true);
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = b.try_acquire().unwrap().into_owned();
    assert!(probe.is_probe());
    tokio::spawn(async move { probe.success(Duration::from_millis(1)) })
        .await
        .unwrap();
    // Two probes in this breaker: one more success closes it.
    b.try_acquire().unwrap().success(Duration::from_millis(1));
    assert_eq!(b.state(), CircuitState::Closed);
    // An owned probe dropped without a report frees its slot.
    call(&b, true);
    tokio::time::advance(Duration::from_secs(5)).await;
    let first = b.try_acquire().unwrap().into_owned();
    assert!(b.try_acquire().is_err());
    drop(first);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let b = breaker(Window::Count(10), 1, 0.5);
    call(&b, true);
    tokio::time::advance(Duration::from_secs(5)).await;
    let p1 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p1);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn slow_successes_count_as_failures() {
    let b = CircuitBreaker::try_new(BreakerConfig {
        window: Window::Count(4),
        min_calls: 4,
        failure_rate: 0.5,
        slow_call: Some(Duration::from_millis(100)),
        ..Default::default()
    })
    .unwrap();
    for _ in 0..2 {
        b.try_acquire().unwrap().success(Duration::from_millis(10));
    }
    for _ in 0..2 {
        b.try_acquire().unwrap().success(Duration::from_millis(500));
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let b = breaker(Window::Time(Duration::from_secs(10)), 4, 0.5);
    for _ in 0..3 {
        call(&b, true);
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The three old failures left the window: 1 of 4 recent calls fails.
    call(&b, true);
    for _ in 0..3 {
        call(&b, false);
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_is_shared_between_clones_and_tasks() {
    let b = breaker(Window::Count(100), 10, 0.5);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { call(&b, true) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn consecutive_failures_open_it_below_min_calls() {
    let config = BreakerConfig::default();
    let b = CircuitBreaker::try_new(config).unwrap();
    // Nine failures, a success, nine more: never ten in a row.
    for _ in 0..9 {
        call(&b, true);
    }
    call(&b, false);
    for _ in 0..9 {
        call(&b, true);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn the_rate_rule_judges_once_min_calls_are_in() {
    let b = CircuitBreaker::try_new(BreakerConfig {
        window: Window::Count(100),
        min_calls: 20,
        consecutive_failures: 3,
        ..BreakerConfig::default()
    })
    .unwrap();
    for _ in 0..20 {
        call(&b, false);
    }
    // Three in a row among 23 calls: 13% failures, under the 50% rate.
    for _ in 0..3 {
        call(&b, true);
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn zero_turns_the_streak_rule_off() {
    let b = CircuitBreaker::try_new(BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    })
    .unwrap();
    for _ in 0..49 {
        call(&b, true);
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

/// Successes through a closed breaker are counted outside its lock; they
/// must still weigh in the failure rate, and still leave the window with
/// their bucket.
fn failures_until_open(successes_at: Duration, failures_at: Duration) -> u32 {
    let b = breaker(Window::Time(Duration::from_secs(10)), 4, 0.5);
    let start = Instant::now();
    for _ in 0..10 {
        b.try_acquire_at(start + successes_at)
            .expect("closed")
            .success_at(Duration::ZERO, start + successes_at);
    }
    let mut failures = 0;
    while b.shared.closed.load(Ordering::Acquire) {
        b.try_acquire_at(start + failures_at)
            .expect("closed")
            .failure_at(start + failures_at);
        failures += 1;
        assert!(failures <= 20, "the breaker never opened");
    }
    failures
}

#[test]
fn successes_counted_without_the_lock_weigh_in_the_failure_rate() {
    // Ten successes in the window: the tenth failure makes 50% of 20.
    assert_eq!(
        failures_until_open(Duration::from_secs(1), Duration::from_secs(5)),
        10
    );
    // The same successes 11 s earlier have left the 10 s window: four
    // failures (min_calls) are 100%.
    assert_eq!(
        failures_until_open(Duration::from_secs(1), Duration::from_secs(12)),
        4
    );
}

#[test]
fn successes_from_before_an_opening_do_not_count_after_it_closes() {
    let b = breaker(Window::Time(Duration::from_secs(10)), 4, 0.5);
    let start = Instant::now();
    // Five successes counted, then four failures open it; a call admitted
    // before the opening reports its success late.
    for _ in 0..5 {
        b.try_acquire_at(start)
            .expect("closed")
            .success_at(Duration::ZERO, start);
    }
    let late = b.try_acquire_at(start).expect("closed");
    let mut failures = 0;
    while b.shared.closed.load(Ordering::Acquire) {
        b.try_acquire_at(start).expect("closed").failure_at(start);
        failures += 1;
    }
    assert_eq!(failures, 5, "50% of 10");
    late.success_at(Duration::ZERO, start + Duration::from_secs(1));
    // Probes after the open interval close it again.
    let later = start + Duration::from_secs(6);
    for _ in 0..2 {
        b.try_acquire_at(later)
            .expect("probe")
            .success_at(Duration::ZERO, later);
    }
    assert!(b.shared.closed.load(Ordering::Acquire));
    // A clean window: four failures (min_calls, 100%) open it again.
    for i in 1..=4 {
        assert!(b.shared.closed.load(Ordering::Acquire), "open after {i}");
        b.try_acquire_at(later).expect("closed").failure_at(later);
    }
    assert!(!b.shared.closed.load(Ordering::Acquire));
}
