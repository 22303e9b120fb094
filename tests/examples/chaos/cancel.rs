//! The cancellation drill: 100,000 requests for distinct upstream ids,
//! each abandoned by its client a few milliseconds after it was sent,
//! while the upstream takes a second to answer. Nothing a cancelled
//! request started may stay behind: the coalescing map empties, the
//! upstream pool's gauges return to zero, and RSS stays flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::load;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::sleep;

use crate::harness::{Check, Harness, Result};

const REQUESTS: u64 = 100_000;
const CLIENTS: u64 = 64;

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub(crate) async fn cancelled_requests(h: &mut Harness) -> Result<Vec<Check>> {
    const D: &str = "cancelled-requests";
    h.upstream.state.latency_ms.store(1000, Ordering::SeqCst);
    let server = h.server(&[]).await?;
    let pid = server.child.id();
    let addr = server.addr;
    let sent = Arc::new(AtomicU64::new(0));
    let rss_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (sent, rss_at) = (sent.clone(), rss_at.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= REQUESTS {
                    break;
                }
                if n % 10_000 == 0
                    && let Ok(mut v) = rss_at.lock()
                {
                    v.push((n, rss_mib(pid)));
                }
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    continue;
                };
                let request = format!(
                    "GET /external-data/cancel-{c}-{n} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
                );
                if stream.write_all(request.as_bytes()).await.is_err() {
                    continue;
                }
                // Long enough for the server to start the upstream call,
                // far shorter than the upstream's second.
                sleep(Duration::from_millis(3)).await;
                drop(stream);
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    let took = started.elapsed();
    let rss_end = rss_mib(pid);
    // Let abandoned work unwind (the upstream answers within a second).
    sleep(Duration::from_secs(3)).await;
    let rss_settled = rss_mib(pid);
    h.upstream.state.latency_ms.store(0, Ordering::SeqCst);
    let metrics: serde_json::Value = load::fetch(addr, "/io-metrics")
        .await
        .and_then(|(_, body)| serde_json::from_slice(&body).ok())
        .unwrap_or_default();
    let api = &metrics["api"]["external"];
    let coalesced = api["coalesced_in_flight"].as_u64();
    let (in_use, waiting) = (
        api["pool"]["in_use"].as_u64(),
        api["pool"]["waiting"].as_u64(),
    );
    let db_in_use = metrics["database"]["primary"]["pool"]["in_use"].as_u64();
    let samples: Vec<(u64, f64)> = rss_at.lock().map(|v| v.clone()).unwrap_or_default();
    let warm = samples
        .iter()
        .find(|(n, _)| *n == 10_000)
        .map_or(f64::NAN, |(_, r)| *r);
    let growth = rss_settled - warm;
    println!(
        "  {REQUESTS} requests abandoned after 3 ms by {CLIENTS} clients in {:.1} s; RSS by request: {samples:?}; at the end {rss_end:.1} MiB, 3 s later {rss_settled:.1} MiB",
        took.as_secs_f64()
    );
    Ok(vec![
        Check::new(
            D,
            "100,000 cancelled requests leave the coalescing map empty",
            format!("coalesced_in_flight {coalesced:?}"),
            coalesced == Some(0),
        ),
        Check::new(
            D,
            "pool gauges return to zero",
            format!(
                "upstream in_use {in_use:?}, waiting {waiting:?}; database in_use {db_in_use:?}"
            ),
            in_use == Some(0) && waiting == Some(0) && db_in_use == Some(0),
        ),
        Check::new(
            D,
            "RSS flat: from request 10,000 to the end (settled), growth < 8 MiB",
            format!("{warm:.1} → {rss_settled:.1} MiB ({growth:+.1} MiB)"),
            growth.is_finite() && growth < 8.0,
        ),
        Check::new(
            D,
            "the server still answers",
            format!(
                "{:?}",
                load::fetch(addr, "/external-data/after")
                    .await
                    .map(|(s, _)| s)
            ),
            load::fetch(addr, "/external-data/after2")
                .await
                .is_some_and(|(s, _)| s == 200),
        ),
    ])
}
