//! The slow-client drill: slow-loris connections and a flood of oversized
//! bodies beside W1, against W1 undisturbed on the same server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::harness::{Check, Harness, Result, Running, get_user, p_ms};

/// Slow-loris connections held open at once.
const LORIS: usize = 256;
/// Clients sending oversized bodies.
const FLOODERS: usize = 4;
/// Each flooder starts an oversized request this often: 200 a second in
/// all, 1.6 GB/s offered. Unpaced, the flooders' own copying through
/// loopback takes a whole core of the two that the server and W1 share,
/// which measures the machine, not the server.
const FLOOD_EVERY: Duration = Duration::from_millis(20);
/// Each oversized body: 8 MiB against the 1 MiB default limit.
const OVERSIZED: usize = 8 << 20;

#[derive(Default)]
struct Tally {
    /// Slow-loris connections the server closed.
    loris_closed: AtomicU64,
    /// Oversized requests answered 413.
    rejected: AtomicU64,
    /// Oversized requests answered otherwise, or not at all.
    other: AtomicU64,
}

pub(crate) async fn slow_clients(h: &mut Harness) -> Result<Vec<Check>> {
    const D: &str = "slow-clients";
    let server = h.server(&[]).await?;
    let seconds = Duration::from_secs(10);
    let quiet = Running::start(server.load(seconds), get_user)?
        .finish()
        .await?;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = JoinSet::new();
    for _ in 0..LORIS {
        attackers.spawn(slow_loris(server.addr, stop.clone(), tally.clone()));
    }
    for i in 0..FLOODERS {
        attackers.spawn(flood(server.addr, i % 2 == 0, stop.clone(), tally.clone()));
    }
    // Let the slow connections pile up before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attacked = Running::start(server.load(seconds), get_user)?
        .finish()
        .await?;
    stop.store(true, Ordering::SeqCst);
    while attackers.join_next().await.is_some() {}

    let (p99_quiet, p99_attacked) = (p_ms(&quiet, 99.0), p_ms(&attacked, 99.0));
    let errors = attacked.iter().filter(|s| !s.is_success()).count();
    println!(
        "  W1 undisturbed: {} requests, p50 {:.2} ms, p99 {p99_quiet:.2} ms",
        quiet.len(),
        p_ms(&quiet, 50.0)
    );
    println!(
        "  W1 beside {LORIS} slow-loris connections and {FLOODERS} clients sending 8 MiB bodies (200 a second): {} requests, {errors} errors, p50 {:.2} ms, p99 {p99_attacked:.2} ms",
        attacked.len(),
        p_ms(&attacked, 50.0)
    );
    println!(
        "  the server closed {} slow-loris connections; oversized bodies (one per {} ms per client): {} answered 413, {} otherwise",
        tally.loris_closed.load(Ordering::SeqCst),
        FLOOD_EVERY.as_millis(),
        tally.rejected.load(Ordering::SeqCst),
        tally.other.load(Ordering::SeqCst)
    );
    let rejected = tally.rejected.load(Ordering::SeqCst);
    Ok(vec![
        Check::new(
            D,
            "W1 p99 within 2× of undisturbed under slow-loris + oversized bodies",
            format!(
                "p99 {p99_attacked:.2} ms vs {p99_quiet:.2} ms = {:.2}×; {errors} W1 errors",
                p99_attacked / p99_quiet
            ),
            p99_attacked <= 2.0 * p99_quiet && errors == 0,
        ),
        Check::new(
            D,
            "oversized bodies are refused with 413, slow headers are cut off",
            format!(
                "{rejected} × 413, {} other; {} slow-loris connections closed by the server",
                tally.other.load(Ordering::SeqCst),
                tally.loris_closed.load(Ordering::SeqCst)
            ),
            rejected > 0
                && tally.other.load(Ordering::SeqCst) == 0
                && tally.loris_closed.load(Ordering::SeqCst) > 0,
        ),
    ])
}

/// Sends a request's headers one line per second, never finishing them;
/// reconnects when the server closes the connection.
async fn slow_loris(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if stream
            .write_all(b"GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .is_err()
        {
            continue;
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                // The server answered (408) or closed the connection.
                Ok(_) => {
                    tally.loris_closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => {
                    if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        tally.loris_closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// Posts 8 MiB bodies back to back, with a `Content-Length` or chunked.
async fn flood(addr: SocketAddr, sized: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let chunk = vec![b' '; 64 << 10];
    let mut pace = tokio::time::interval(FLOOD_EVERY);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let Ok(stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut read, mut write) = stream.into_split();
        let head = if sized {
            format!(
                "POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {OVERSIZED}\r\n\r\n"
            )
        } else {
            "POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned()
        };
        let chunk = chunk.clone();
        let writer = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await?;
            for _ in 0..OVERSIZED / chunk.len() {
                if !sized {
                    write
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                }
                write.write_all(&chunk).await?;
                if !sized {
                    write.write_all(b"\r\n").await?;
                }
            }
            if !sized {
                write.write_all(b"0\r\n\r\n").await?;
            }
            std::io::Result::Ok(())
        });
        let mut response = [0u8; 64];
        let answered =
            tokio::time::timeout(Duration::from_secs(10), read.read(&mut response)).await;
        writer.abort();
        match answered {
            Ok(Ok(n)) if response[..n].starts_with(b"HTTP/1.1 413") => {
                tally.rejected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tally.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
