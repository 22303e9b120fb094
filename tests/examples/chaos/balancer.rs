//! Three servers behind a real HAProxy (health checks on `/readyz`,
//! retries of idempotent requests), one PostgreSQL and one Redis: one
//! server gets SIGTERM or SIGKILL under load.

use std::time::Duration;

use sluice_tests::load::Load;
use sluice_tests::provision::TempHaproxy;
use tokio::time::sleep;

use crate::drills::{secs, tally};
use crate::harness::{CONNECTIONS, Check, Harness, Result, Running, between, get_user};

/// How the victim goes.
#[derive(Clone, Copy)]
pub(crate) enum Victim {
    /// SIGTERM: readiness off, the balancer drains it, then it exits.
    Term,
    /// SIGKILL: its connections are reset mid-request.
    Kill,
}

pub(crate) async fn balancer(h: &mut Harness, victim: Victim) -> Result<Vec<Check>> {
    let drill = match victim {
        Victim::Term => "balancer-sigterm",
        Victim::Kill => "balancer-sigkill",
    };
    let redis = [("REDIS_URL", h.redis.url())];
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(h.server(&redis).await?);
    }
    let backends: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let proxy = tokio::task::spawn_blocking(move || TempHaproxy::start(&backends)).await??;
    // Until HAProxy's first checks pass (rise 2 × 200 ms).
    sleep(Duration::from_millis(800)).await;
    let load = Load {
        addr: proxy.addr(),
        connections: CONNECTIONS,
        duration: Duration::from_secs(10),
        stop_when_refused: false,
    };
    let run = Running::start(load, get_user)?;
    sleep(Duration::from_secs(3)).await;
    let signalled_at = run.now();
    let signal = match victim {
        Victim::Term => "-TERM",
        Victim::Kill => "-KILL",
    };
    std::process::Command::new("kill")
        .args([signal, &servers[1].child.id().to_string()])
        .status()?;
    let mut exited = None;
    while run.now() < signalled_at + Duration::from_secs(6) {
        if let Some(status) = servers[1].child.try_wait()? {
            exited = Some((status, run.now() - signalled_at));
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    let samples = run.finish().await?;
    let (retried, redispatched) = retries(&proxy).await;
    let failed: Vec<_> = samples.iter().filter(|s| !s.is_success()).collect();
    let after = between(
        &samples,
        signalled_at + Duration::from_secs(1),
        Duration::MAX,
    );
    println!(
        "  W1 through HAProxy to 3 servers, {signal} to one at {:.1} s: {}; after it: {}",
        secs(signalled_at),
        tally(&samples),
        tally(after.iter().copied())
    );
    let mut checks = vec![
        Check::new(
            drill,
            "zero failed GETs through the balancer",
            format!(
                "{} of {} failed: {}; HAProxy retried {retried} and redispatched {redispatched}",
                failed.len(),
                samples.len(),
                tally(failed.iter().copied())
            ),
            failed.is_empty() && samples.len() > 1000,
        ),
        Check::new(
            drill,
            "the other two servers carry the load after the signal",
            format!(
                "{} requests answered from 1 s after the signal",
                after.iter().filter(|s| s.is_success()).count()
            ),
            after.len() > 500 && after.iter().all(|s| s.is_success()),
        ),
    ];
    if let Victim::Term = victim {
        let (code, took) = exited.map_or((None, Duration::MAX), |(s, t)| (s.code(), t));
        checks.push(Check::new(
            drill,
            "the drained server exits 0",
            format!("exit code {code:?} after {:.0} ms", secs(took) * 1000.0),
            code == Some(0),
        ));
    }
    if checks.iter().any(|c| !c.pass) {
        println!("  haproxy log:\n{}", proxy.log());
    }
    Ok(checks)
}

/// The backend's `wretr` and `wredis` counters (requests HAProxy sent
/// again, and sent again to another server), from its CSV statistics.
async fn retries(proxy: &TempHaproxy) -> (u64, u64) {
    let Some((200, body)) = sluice_tests::load::fetch(proxy.stats_addr(), "/stats;csv").await
    else {
        return (0, 0);
    };
    let text = String::from_utf8_lossy(&body);
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(retr), Some(redis)) = (column("wretr"), column("wredis")) else {
        return (0, 0);
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"servers") && f.get(1) == Some(&"BACKEND"))
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            (n(retr), n(redis))
        })
        .unwrap_or((0, 0))
}
