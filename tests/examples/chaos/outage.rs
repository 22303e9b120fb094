//! The PostgreSQL outage drills, on the real server, reached directly (no
//! proxy standing in for the failure): stopped with `pg_ctl stop -m fast`
//! (connects refused), killed with SIGKILL (then restarted with crash
//! recovery), and frozen with SIGSTOP (TCP handshakes still complete,
//! nothing answers: a host that black-holes the protocol).
//!
//! Each runs W1 for 14 s, breaks PostgreSQL at 4 s for 5 s, and measures
//! the requests during the outage against the goals of fail-fast:
//! answered 503, p99 ≤ 100 ms once the outage is known, at most a few
//! connect attempts a second, and 100% success within 1 s of PostgreSQL
//! answering again, with no server restart. Connect attempts are counted
//! twice: the pool's probes from the server's log, and every outgoing
//! connect on the machine from the kernel (`ActiveOpens` in
//! /proc/net/snmp), an upper bound that includes the drill's own.

use std::time::Duration;

use sluice_tests::load::{Outcome, Sample};
use tokio::task::block_in_place;
use tokio::time::sleep;

use crate::drills::{last_failure_after, secs, tally};
use crate::harness::{Check, Harness, Result, Running, get_user, p_ms};

/// How PostgreSQL goes away.
#[derive(Clone, Copy)]
pub(crate) enum Break {
    /// `pg_ctl stop -m fast`, then started again.
    Stop,
    /// SIGKILL to every process, then started again (crash recovery).
    Kill,
    /// SIGSTOP to every process, then SIGCONT.
    Freeze,
}

impl Break {
    fn drill(self) -> &'static str {
        match self {
            Break::Stop => "postgres-stop",
            Break::Kill => "postgres-kill-reads",
            Break::Freeze => "postgres-freeze",
        }
    }

    /// How long after the break is complete the server can know: a refused connect is
    /// seen at the first probe (100 ms after a request stalls); a server
    /// that never answers only after the probe's connect timeout (2 s by
    /// default).
    fn known_after(self) -> Duration {
        match self {
            Break::Stop | Break::Kill => Duration::from_millis(500),
            Break::Freeze => Duration::from_millis(2600),
        }
    }
}

/// Outgoing TCP connects started on this machine so far.
fn active_opens() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn postgres_outage(h: &mut Harness, how: Break) -> Result<Vec<Check>> {
    let d = how.drill();
    // The pool logs each outage probe at debug level: the server's own
    // count of its connect attempts, beside the kernel's upper bound.
    let log = std::env::var("SLUICE_CHAOS_LOG")
        .unwrap_or_else(|_| "warn,sluice_pool::outage=debug".to_owned());
    let mut server = h.server(&[("RUST_LOG", log)]).await?;
    let pid = server.child.id();
    let run = Running::start(server.load(Duration::from_secs(14)), get_user)?;
    sleep(Duration::from_secs(4)).await;
    let down_at = run.now();
    block_in_place(|| match how {
        Break::Stop => h.pg.stop(),
        Break::Kill => h.pg.crash(),
        Break::Freeze => h.pg.freeze(),
    })?;
    let opens_before = active_opens();
    let broken_at = run.now();
    sleep(Duration::from_secs(5)).await;
    let opens = active_opens().saturating_sub(opens_before);
    let down_for = run.now() - broken_at;
    block_in_place(|| match how {
        Break::Stop | Break::Kill => h.pg.restart(),
        Break::Freeze => h.pg.thaw(),
    })?;
    let up_at = run.now();
    let samples = run.finish().await?;

    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.end() > down_at && s.start < up_at)
        .collect();
    // Counted from when the break is complete (`pg_ctl stop -w` returned,
    // every process killed or stopped).
    let known_from = broken_at + how.known_after();
    let known: Vec<&Sample> = during
        .iter()
        .copied()
        .filter(|s| s.start >= known_from)
        .collect();
    println!(
        "  W1 ({} connections), PostgreSQL broken at {:.1} s, back at {:.1} s: during {}; from {:.1} s {}; after {}",
        crate::harness::CONNECTIONS,
        secs(down_at),
        secs(up_at),
        tally(during.iter().copied()),
        secs(known_from),
        tally(known.iter().copied()),
        tally(samples.iter().filter(|s| s.start >= up_at))
    );
    let failing: Vec<&Sample> = during.iter().copied().filter(|s| !s.is_success()).collect();
    let all_503 = failing.iter().all(|s| s.outcome == Outcome::Status(503));
    let slowest = during.iter().map(|s| s.latency).max().unwrap_or_default();
    let p99_known = p_ms(known.iter().copied(), 99.0);
    let known_503 = known
        .iter()
        .filter(|s| s.outcome == Outcome::Status(503))
        .count();
    let rate = opens as f64 / secs(down_for);
    let probes = std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .matches("outage probe: connect")
        .count();
    let probe_rate = probes as f64 / secs(up_at - broken_at);
    let recovery = last_failure_after(&samples, up_at);
    let served_after = samples
        .iter()
        .filter(|s| s.start >= up_at && s.is_success())
        .count();
    Ok(vec![
        Check::new(
            d,
            "failing requests are 503; none waits out the 5 s acquire timeout",
            format!(
                "{} failing: {}; slowest request during the outage {:.0} ms",
                failing.len(),
                tally(failing.iter().copied()),
                secs(slowest) * 1000.0
            ),
            !failing.is_empty() && all_503 && slowest < Duration::from_secs(5),
        ),
        Check::new(
            d,
            format!(
                "p99 ≤ 100 ms from {:.1} s after the break; every failure a 503",
                secs(how.known_after())
            ),
            format!(
                "{} requests, {known_503} × 503, p99 {p99_known:.1} ms",
                known.len()
            ),
            !known.is_empty()
                && known
                    .iter()
                    .all(|s| s.is_success() || s.outcome == Outcome::Status(503))
                && p99_known <= 100.0,
        ),
        Check::new(
            d,
            "a few connect attempts per second while down (≤ 5/s)",
            format!(
                "the pool's probes: {probes} in {:.1} s = {probe_rate:.1}/s; every connect on the machine: {opens} in {:.1} s = {rate:.1}/s",
                secs(up_at - broken_at),
                secs(down_for)
            ),
            probes > 0 && probe_rate <= 5.0,
        ),
        Check::new(
            d,
            "100% success within 1 s of PostgreSQL answering again, no restart",
            format!(
                "last failure ended {:.2} s after; {served_after} served after; pid {pid} running: {}",
                secs(recovery),
                server.running()
            ),
            recovery <= Duration::from_secs(1) && served_after > 0 && server.running(),
        ),
    ])
}
