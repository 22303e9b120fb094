//! Dead dependencies at low traffic: one request a second, far below the
//! breakers' rate rule. An upstream that refuses connections, one whose
//! listener never accepts (black-holed), and a Redis that hangs or is
//! killed. The breaker must open on the failure streak, and requests
//! after it must not pay for the dead dependency.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use sluice_tests::load;
use tokio::task::block_in_place;
use tokio::time::sleep;

use crate::drills::secs;
use crate::harness::{Check, Harness, Result, Server};

/// One request of an open-loop run: when it started (from the run's
/// start), how long it took, its status (0: no answer).
#[derive(Debug, Clone, Copy)]
struct Shot {
    start: Duration,
    latency: Duration,
    status: u16,
}

/// `count` requests to `path(n)`, one every `every`, each on its own
/// task (a slow one does not delay the next), and the time the
/// `connection`'s breaker first read open.
async fn one_a_second(
    server: &Server,
    count: u64,
    every: Duration,
    path: impl Fn(u64) -> String,
    connection: &str,
) -> (Vec<Shot>, Option<Duration>) {
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    let mut opened = None;
    let label = format!("connection=\"{connection}\"");
    for n in 0..count {
        let (addr, path) = (server.addr, path(n));
        tasks.push(tokio::spawn(async move {
            let start = epoch.elapsed();
            let started = Instant::now();
            let status = load::fetch(addr, &path).await.map_or(0, |(s, _)| s);
            Shot {
                start,
                latency: started.elapsed(),
                status,
            }
        }));
        // The breaker's gauge is read once per tick, between requests, so
        // that rendering /metrics never overlaps a request being timed.
        let next = every * u32::try_from(n + 1).unwrap_or(u32::MAX);
        sleep(Duration::from_millis(100)).await;
        if opened.is_none() && server.metric_with("sluice_circuit_state", &[&label]).await == 1.0 {
            opened = Some(epoch.elapsed());
        }
        if let Some(left) = next.checked_sub(epoch.elapsed()) {
            sleep(left).await;
        }
    }
    let mut shots = Vec::new();
    for task in tasks {
        if let Ok(shot) = task.await {
            shots.push(shot);
        }
    }
    (shots, opened)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How an upstream is dead.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadUpstream {
    /// Nothing listens: connections are refused.
    Refused,
    /// A listener that never accepts: connections complete in the
    /// kernel's backlog, requests are never answered.
    BlackHoled,
}

pub(crate) async fn upstream_low_rate(h: &mut Harness, how: DeadUpstream) -> Result<Vec<Check>> {
    let d: &'static str = match how {
        DeadUpstream::Refused => "upstream-refused-1rps",
        DeadUpstream::BlackHoled => "upstream-blackholed-1rps",
    };
    // The listener lives until the drill ends; for `Refused` it is closed
    // at once, so its port refuses.
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let port = listener.local_addr()?.port();
    let _kept = match how {
        DeadUpstream::BlackHoled => Some(listener),
        DeadUpstream::Refused => {
            drop(listener);
            None
        }
    };
    let server = h
        .server(&[
            ("API_EXTERNAL_BASE_URL", format!("http://127.0.0.1:{port}")),
            // The setting: a one-second attempt timeout.
            ("API_EXTERNAL_TIMEOUT", "1".to_owned()),
        ])
        .await?;
    let (shots, opened) = one_a_second(
        &server,
        30,
        Duration::from_secs(1),
        |n| format!("/external-data/low-{n}"),
        "external",
    )
    .await;
    // The server's own clock: requests it answered within 5 ms, from its
    // request-duration histogram (the client's figures add a new TCP
    // connection and the wake-up of two idle processes).
    // Every 5xx series has an `error_type`.
    let labels = ["http_route=\"/external-data/{data_id}\"", "error_type=\""];
    let answered = server
        .metric_with("http_server_request_duration_seconds_count", &labels)
        .await;
    let within_5ms = server
        .metric_with(
            "http_server_request_duration_seconds_bucket",
            &[labels[0], labels[1], "le=\"0.005\""],
        )
        .await;
    let server_slow = answered - within_5ms;
    let retried = server
        .metric_with(
            "sluice_retry_attempts_total",
            &["connection=\"external\"", "attempt=\"retry\""],
        )
        .await;
    let opened_at = opened.unwrap_or(Duration::MAX);
    let before: Vec<&Shot> = shots.iter().filter(|s| s.start < opened_at).collect();
    let after: Vec<&Shot> = shots.iter().filter(|s| s.start >= opened_at).collect();
    let mut after_ms: Vec<Duration> = after.iter().map(|s| s.latency).collect();
    let p50 = ms(load::percentile(&mut after_ms, 50.0));
    let slow: Vec<String> = after
        .iter()
        .filter(|s| s.latency >= Duration::from_millis(5))
        .map(|s| format!("{:.0} ms at {:.0} s", ms(s.latency), secs(s.start)))
        .collect();
    let statuses: Vec<u16> = shots.iter().map(|s| s.status).collect();
    let bad = statuses.iter().filter(|s| !matches!(s, 502..=504)).count();
    println!(
        "  {} requests, one a second; breaker open at {}; before: {} requests, slowest {:.0} ms; after: {} requests, p50 {p50:.2} ms, slow: {slow:?}; retries {retried}",
        shots.len(),
        opened.map_or("never".to_owned(), |t| format!("{:.1} s", secs(t))),
        before.len(),
        before.iter().map(|s| ms(s.latency)).fold(0.0, f64::max),
        after.len(),
    );
    let mut checks = vec![
        Check::new(
            d,
            "the breaker opens on consecutive failures at 1 request/s",
            opened.map_or_else(
                || "sluice_circuit_state never read 1 (open)".to_owned(),
                |t| format!("open {:.1} s in, after {} requests", secs(t), before.len()),
            ),
            opened.is_some() && before.len() <= 10,
        ),
        Check::new(
            d,
            "once open, requests fail in < 5 ms, the breaker's probes excepted (one per open interval: 5 s, doubling)",
            format!(
                "server side: {server_slow:.0} of {answered:.0} answers took ≥ 5 ms, {} of them before it opened; client side, {} requests after it opened: p50 {p50:.2} ms, ≥ 5 ms: {slow:?}",
                before.len(),
                after.len(),
            ),
            after.len() >= 10 && server_slow <= (before.len() + 2) as f64,
        ),
        Check::new(
            d,
            "every answer is 502, 503 or 504 (never 500, never none)",
            format!("{bad} of {} otherwise", statuses.len()),
            bad == 0,
        ),
    ];
    if let DeadUpstream::BlackHoled = how {
        checks.push(Check::new(
            d,
            "a timed-out attempt is retried within the deadline",
            format!("{retried} retries"),
            retried > 0.0,
        ));
    }
    Ok(checks)
}

/// How Redis is dead.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeadRedis {
    /// SIGSTOP: connections stay open, nothing answers.
    Hung,
    /// SIGKILL: connections reset, new ones refused.
    Killed,
}

pub(crate) async fn redis_low_rate(h: &mut Harness, how: DeadRedis) -> Result<Vec<Check>> {
    let d: &'static str = match how {
        DeadRedis::Hung => "redis-hung-1rps",
        DeadRedis::Killed => "redis-killed-1rps",
    };
    let server = h.server(&[("REDIS_URL", h.redis.url())]).await?;
    // Warm the cache: these reads are hits once Redis is back.
    for id in 1..=20 {
        load::fetch(server.addr, &format!("/users/{id}")).await;
    }
    // The server's own clock for reads: how many took ≥ 100 ms (waited on
    // Redis) and ≥ 5 ms, before and after the shots below.
    let read_labels = [
        "http_route=\"/users/{user_id}\"",
        "http_response_status_code=\"200\"",
    ];
    let server_reads = || async {
        let total = server
            .metric_with("http_server_request_duration_seconds_count", &read_labels)
            .await;
        let within = |le: &'static str| {
            let labels = [read_labels[0], read_labels[1], le];
            let server = &server;
            async move {
                server
                    .metric_with("http_server_request_duration_seconds_bucket", &labels)
                    .await
            }
        };
        (
            total - within("le=\"0.1\"").await,
            total - within("le=\"0.005\"").await,
        )
    };
    let (_, slow_at_start) = server_reads().await;
    // What a read that goes to the database takes here at the same pace
    // (a cache miss, a new connection each, one a second: the server idle
    // in between): the yardstick for a read that skips Redis.
    let mut baseline = Duration::ZERO;
    for id in 21..=26 {
        let started = Instant::now();
        load::fetch(server.addr, &format!("/users/{id}")).await;
        baseline = baseline.max(started.elapsed());
        sleep(Duration::from_secs(1)).await;
    }
    let (waited_before, slow_before) = server_reads().await;
    let baseline_slow = slow_before - slow_at_start;
    match how {
        DeadRedis::Hung => h.redis.freeze(),
        DeadRedis::Killed => h.redis.stop(),
    }
    let (shots, _) = one_a_second(
        &server,
        15,
        Duration::from_secs(1),
        |n| format!("/users/{}", n % 20 + 1),
        "redis",
    )
    .await;
    let (waited_after, slow_after) = server_reads().await;
    let (server_waited, server_slow) = (waited_after - waited_before, slow_after - slow_before);
    match how {
        DeadRedis::Hung => h.redis.thaw(),
        DeadRedis::Killed => block_in_place(|| h.redis.restart())?,
    }
    let hits = |m: &serde_json::Value| m["cache"]["redis"]["hits"].as_u64().unwrap_or(0);
    let io_metrics = || async {
        load::fetch(server.addr, "/io-metrics")
            .await
            .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .unwrap_or_default()
    };
    let hits_at_return = hits(&io_metrics().await);
    let back = Instant::now();
    let mut back_after = None;
    while back.elapsed() < Duration::from_secs(10) {
        for id in 1..=5 {
            load::fetch(server.addr, &format!("/users/{id}")).await;
        }
        if hits(&io_metrics().await) > hits_at_return {
            back_after = Some(back.elapsed());
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    // A read that waited on Redis took about the cache's 250 ms timeout.
    let paid: Vec<String> = shots
        .iter()
        .filter(|s| s.latency >= Duration::from_millis(100))
        .map(|s| format!("{:.0} ms", ms(s.latency)))
        .collect();
    let after_trip: Vec<&Shot> = shots.iter().skip(3).collect();
    let slowest_after = after_trip.iter().map(|s| ms(s.latency)).fold(0.0, f64::max);
    let non_200 = shots.iter().filter(|s| s.status != 200).count();
    println!(
        "  {} reads, one a second, Redis {}: waited on Redis: {paid:?}; from the 4th on, slowest {slowest_after:.2} ms; a database read beforehand: up to {:.2} ms",
        shots.len(),
        match how {
            DeadRedis::Hung => "hung",
            DeadRedis::Killed => "killed",
        },
        ms(baseline)
    );
    Ok(vec![
        Check::new(
            d,
            "every read answers 200 (the cache is optional)",
            format!("{non_200} of {} otherwise", shots.len()),
            non_200 == 0 && !shots.is_empty(),
        ),
        Check::new(
            d,
            "at most three reads wait on Redis; the others are answered in < 5 ms by the server's clock, as reads with Redis up at the same pace are",
            format!(
                "server side: {server_waited:.0} of {} reads took ≥ 100 ms, {server_slow:.0} took ≥ 5 ms (with Redis up, at the same pace: {baseline_slow:.0} of 6); client side: waited {paid:?}, reads 4–{}: slowest {slowest_after:.2} ms (a database read with Redis up: up to {:.2} ms)",
                shots.len(),
                shots.len(),
                ms(baseline)
            ),
            // Reads that skipped Redis are no slower than reads with Redis
            // up at the same pace (on a quiet machine: none ≥ 5 ms).
            server_waited <= 3.0
                && server_slow - server_waited <= (baseline_slow * shots.len() as f64 / 6.0).ceil(),
        ),
        Check::new(
            d,
            "the cache is used again within 2 s of Redis returning",
            back_after.map_or("no hit within 10 s".to_owned(), |t| {
                format!("first hit {:.2} s after", secs(t))
            }),
            back_after.is_some_and(|t| t <= Duration::from_secs(2)),
        ),
    ])
}
