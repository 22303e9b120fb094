//! Many clients against a simulated upstream, with this crate's default
//! policy and with the design's naive "retry 3 times" side by side.
//!
//! Run with `cargo xtask bench retry` (or `cargo run --release -p
//! sluice-retry --example simulate`). Time is tokio's paused clock: the
//! simulation is deterministic (seeded) and a minute of traffic takes a
//! second. Latencies are virtual, so they count waiting (upstream latency,
//! backoff) but not CPU; the criterion bench `policy` measures the CPU side.
//!
//! Scenarios:
//! - (a) the upstream fails 30% of calls at random, for 60 s;
//! - (b) the upstream is fully down from 20 s to 40 s, then recovers.
//!
//! Arrivals are open-loop: 500 logical requests per second whatever the
//! answers, as from many independent clients.

#![allow(missing_docs)]

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use sluice_retry::{BreakerConfig, BudgetConfig, Class, Classify, Policy, Window};
use tokio::time::Instant;

const RATE_PER_SEC: u64 = 500;
const UPSTREAM_LATENCY: Duration = Duration::from_millis(10);
const RUN: Duration = Duration::from_secs(60);
const OUTAGE: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(40));

#[derive(Debug, Clone, Copy)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503 service unavailable")
    }
}

impl Classify for Unavailable {
    fn class(&self) -> Class {
        Class::Transient
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    RandomFailures,
    Outage,
}

/// The design's decorator: every error retried, delay × attempt, nothing else.
#[derive(Clone)]
enum Client {
    Naive { attempts: u32, delay: Duration },
    Sluice(Box<Policy>),
}

struct Request {
    start: Duration,
    took: Duration,
    ok: bool,
}

#[derive(Default)]
struct Upstream {
    calls_total: u64,
    calls_in_outage: u64,
}

struct Report {
    requests: Vec<Request>,
    upstream: Upstream,
    breaker_opened_at: Option<Duration>,
}

async fn simulate(scenario: Scenario, client: Client, seed: u64) -> Report {
    let epoch = Instant::now();
    let upstream = Arc::new(Mutex::new((
        Upstream::default(),
        SmallRng::seed_from_u64(seed),
    )));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let opened_at: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_SEC);
    // Watch the breaker every millisecond for its first opening in the outage.
    if let Client::Sluice(policy) = &client
        && let Some(breaker) = policy.breaker().cloned()
    {
        let opened_at = opened_at.clone();
        tokio::spawn(async move {
            while Instant::now() - epoch < RUN {
                let now = Instant::now() - epoch;
                if now >= OUTAGE.0 && breaker.state() == sluice_retry::CircuitState::Open {
                    *opened_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    let mut tasks = Vec::new();
    let total = RUN.as_nanos() / interval.as_nanos();
    for i in 0..total as u32 {
        tokio::time::sleep_until(epoch + interval * i).await;
        let (upstream, requests, client) = (upstream.clone(), requests.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let call = || {
                let upstream = upstream.clone();
                async move {
                    let now = Instant::now() - epoch;
                    let fail = {
                        let mut guard = upstream.lock().unwrap_or_else(PoisonError::into_inner);
                        let (stats, rng) = &mut *guard;
                        stats.calls_total += 1;
                        let down = now >= OUTAGE.0 && now < OUTAGE.1;
                        if down {
                            stats.calls_in_outage += 1;
                        }
                        match scenario {
                            Scenario::RandomFailures => rng.random_bool(0.3),
                            Scenario::Outage => down,
                        }
                    };
                    tokio::time::sleep(UPSTREAM_LATENCY).await;
                    if fail { Err(Unavailable) } else { Ok(()) }
                }
            };
            let ok = match &client {
                Client::Naive { attempts, delay } => {
                    let mut ok = false;
                    for attempt in 1..=*attempts {
                        if call().await.is_ok() {
                            ok = true;
                            break;
                        }
                        if attempt < *attempts {
                            tokio::time::sleep(*delay * attempt).await;
                        }
                    }
                    ok
                }
                Client::Sluice(policy) => policy.run(|_| call()).await.is_ok(),
            };
            requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Request {
                    start: start - epoch,
                    took: start.elapsed(),
                    ok,
                });
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    let requests = std::mem::take(&mut *requests.lock().unwrap_or_else(PoisonError::into_inner));
    let upstream = std::mem::take(&mut upstream.lock().unwrap_or_else(PoisonError::into_inner).0);
    let breaker_opened_at = *opened_at.lock().unwrap_or_else(PoisonError::into_inner);
    Report {
        requests,
        upstream,
        breaker_opened_at,
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn failed_latencies(requests: &[Request], from: Duration, to: Duration) -> (String, String) {
    let mut failed: Vec<Duration> = requests
        .iter()
        .filter(|r| !r.ok && r.start >= from && r.start < to)
        .map(|r| r.took)
        .collect();
    failed.sort();
    if failed.is_empty() {
        return ("–".into(), "–".into());
    }
    (ms(percentile(&failed, 0.5)), ms(percentile(&failed, 0.99)))
}

fn sluice(
    seed: u64,
    configure: impl FnOnce(sluice_retry::PolicyBuilder) -> sluice_retry::PolicyBuilder,
) -> Client {
    Client::Sluice(Box::new(
        configure(Policy::builder().seed(seed))
            .build()
            .expect("valid policy"),
    ))
}

fn naive() -> Client {
    Client::Naive {
        attempts: 3,
        delay: Duration::from_secs(1),
    }
}

fn run(scenario: Scenario, client: Client) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(simulate(scenario, client, 42))
}

fn random_failures() {
    println!(
        "### (a) 30% of upstream calls fail at random (60 s, {RATE_PER_SEC} req/s, 3 attempts)\n"
    );
    println!("| policy | success | upstream calls per request | failed p50 ms | failed p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let rows: [(&str, Client); 4] = [
        ("naive: retry 3 times, 1 s × attempt", naive()),
        ("sluice default (budget 0.5 + 10/s)", sluice(7, |b| b)),
        (
            "sluice, budget 0.2 (Finagle/Envoy)",
            sluice(7, |b| {
                b.budget(BudgetConfig {
                    ratio: 0.2,
                    ..Default::default()
                })
            }),
        ),
        ("sluice, no budget", sluice(7, |b| b.no_budget())),
    ];
    for (name, client) in rows {
        let report = run(Scenario::RandomFailures, client);
        let n = report.requests.len() as f64;
        let ok = report.requests.iter().filter(|r| r.ok).count() as f64;
        let (p50, p99) = failed_latencies(&report.requests, Duration::ZERO, RUN);
        println!(
            "| {name} | {:.2}% | {:.2} | {p50} | {p99} |",
            100.0 * ok / n,
            report.upstream.calls_total as f64 / n
        );
    }
    println!();
}

fn outage() {
    println!(
        "### (b) upstream fully down from {} s to {} s, then healthy ({RATE_PER_SEC} req/s)\n",
        OUTAGE.0.as_secs(),
        OUTAGE.1.as_secs()
    );
    println!(
        "| policy | upstream calls per request during outage | time to detect | time to recover | failed p50 ms | failed p99 ms | failed p99 ms once open |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let rows: [(&str, Client); 4] = [
        ("naive: retry 3 times, 1 s × attempt", naive()),
        (
            "sluice default (breaker 2 s window + budget)",
            sluice(7, |b| b),
        ),
        (
            "sluice, breaker window 10 s",
            sluice(7, |b| {
                b.breaker(BreakerConfig {
                    window: Window::Time(Duration::from_secs(10)),
                    ..Default::default()
                })
            }),
        ),
        (
            "sluice, no breaker (budget only)",
            sluice(7, |b| b.no_breaker()),
        ),
    ];
    for (name, client) in rows {
        let report = run(Scenario::Outage, client);
        let during: Vec<&Request> = report
            .requests
            .iter()
            .filter(|r| r.start >= OUTAGE.0 && r.start < OUTAGE.1)
            .collect();
        let amplification = report.upstream.calls_in_outage as f64 / during.len() as f64;
        // Detection: the breaker opening, or for policies without one, the
        // first failure answered within 5 ms.
        let detected = report
            .breaker_opened_at
            .filter(|t| *t >= OUTAGE.0)
            .or_else(|| {
                during
                    .iter()
                    .filter(|r| !r.ok && r.took < Duration::from_millis(5))
                    .map(|r| r.start)
                    .min()
            });
        let detect = detected.map_or("never".into(), |t| format!("{} ms", ms(t - OUTAGE.0)));
        // Recovery: from the end of the outage until the last failed request
        // that started after it.
        let last_failure = report
            .requests
            .iter()
            .filter(|r| !r.ok && r.start >= OUTAGE.1)
            .map(|r| r.start + r.took)
            .max();
        let recover = last_failure.map_or("0 ms".into(), |t| format!("{} ms", ms(t - OUTAGE.1)));
        let (p50, p99) = failed_latencies(&report.requests, OUTAGE.0, OUTAGE.1);
        let (_, p99_open) = match detected {
            Some(t) => failed_latencies(&report.requests, t + Duration::from_millis(100), OUTAGE.1),
            None => ("–".into(), "–".into()),
        };
        println!(
            "| {name} | {amplification:.3} | {detect} | {recover} | {p50} | {p99} | {p99_open} |"
        );
    }
    println!();
}

fn main() {
    println!("## Retry simulation (virtual time, seed 42)\n");
    random_failures();
    outage();
}
