//! The idle-sockets drill: 1,000 sockets that connect and then make no
//! progress, held open beside W1, against W1 undisturbed on the same server.
//!
//! Four kinds, 250 each: silent (connect, send nothing), half an HTTP/2
//! preface (`PRI * HTTP/2.0\r\n`), the whole HTTP/2 preface and no stream,
//! and an HTTP/1.1 keep-alive connection left idle after one answered
//! request. The server is started with 5 s header-read and idle timeouts
//! so that the drill sees every one of them closed within its run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::harness::{Check, Harness, Result, Running, get_user, p_ms};

/// Sockets of each kind.
const EACH: usize = 250;
/// The server's header-read and idle timeouts in this drill, in seconds.
const TIMEOUT_SECS: u64 = 5;
/// How long the drill waits for the server to close a socket.
const CLOSE_WITHIN: Duration = Duration::from_secs(TIMEOUT_SECS + 10);

const KINDS: [(&str, &[u8]); 4] = [
    ("silent", b""),
    ("half HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    (
        "whole HTTP/2 preface, no stream",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ),
    (
        "idle keep-alive",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ),
];

pub(crate) async fn idle_sockets(h: &mut Harness) -> Result<Vec<Check>> {
    const D: &str = "idle-sockets";
    let timeout = TIMEOUT_SECS.to_string();
    let server = h
        .server(&[
            ("SLUICE_HEADER_READ_TIMEOUT", timeout.clone()),
            ("SLUICE_IDLE_TIMEOUT", timeout),
        ])
        .await?;
    let seconds = Duration::from_secs(4);
    let quiet = Running::start(server.load(seconds), get_user)?
        .finish()
        .await?;

    let closed: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut sockets = JoinSet::new();
    let opened = Instant::now();
    for (kind, (_, first)) in KINDS.iter().enumerate() {
        for _ in 0..EACH {
            sockets.spawn(hold(server.addr, first, kind, closed.clone()));
        }
    }
    // Let every socket connect and send what it sends before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attacked = Running::start(server.load(seconds), get_user)?
        .finish()
        .await?;
    let probe = probe_status(server.addr).await;
    let mut refused = 0u64;
    while let Some(result) = sockets.join_next().await {
        if !matches!(result, Ok(true)) {
            refused += 1;
        }
    }
    let waited = opened.elapsed();

    let (p99_quiet, p99_attacked) = (p_ms(&quiet, 99.0), p_ms(&attacked, 99.0));
    let errors = attacked.iter().filter(|s| !s.is_success()).count();
    let per_kind: Vec<u64> = closed.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let total_closed: u64 = per_kind.iter().sum();
    println!(
        "  W1 undisturbed: {} requests, p50 {:.2} ms, p99 {p99_quiet:.2} ms",
        quiet.len(),
        p_ms(&quiet, 50.0)
    );
    println!(
        "  W1 beside {} idle and half-open sockets: {} requests, {errors} errors, p50 {:.2} ms, p99 {p99_attacked:.2} ms; /healthz meanwhile: {probe}",
        EACH * KINDS.len(),
        attacked.len(),
        p_ms(&attacked, 50.0)
    );
    for ((name, _), n) in KINDS.iter().zip(&per_kind) {
        println!("  {name}: {n} of {EACH} closed by the server");
    }
    println!(
        "  {total_closed} closed within {:.1?} of opening; {refused} could not connect",
        waited
    );
    let all = (EACH * KINDS.len()) as u64;
    Ok(vec![
        Check::new(
            D,
            "W1 p99 within 2× of undisturbed beside 1,000 idle/half-open sockets; probes answer",
            format!(
                "p99 {p99_attacked:.2} ms vs {p99_quiet:.2} ms = {:.2}×; {errors} W1 errors; /healthz {probe}",
                p99_attacked / p99_quiet
            ),
            p99_attacked <= 2.0 * p99_quiet && errors == 0 && probe == 200,
        ),
        Check::new(
            D,
            "the server closes every socket that makes no progress",
            format!("{total_closed} of {all} closed, {refused} refused at connect"),
            total_closed == all && refused == 0,
        ),
    ])
}

/// Opens one socket, sends `first`, and waits for the server to close it.
/// True when the server closed it within [`CLOSE_WITHIN`].
async fn hold(
    addr: SocketAddr,
    first: &'static [u8],
    kind: usize,
    closed: Arc<[AtomicU64; 4]>,
) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(first).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            // End of stream or a reset: the server closed it.
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed[kind].fetch_add(1, Ordering::Relaxed);
                return true;
            }
            // An answer (the keep-alive request's, or HTTP/2 SETTINGS):
            // the connection is still open; keep waiting.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// `GET /healthz` on a fresh connection: its status, 0 when it failed.
async fn probe_status(addr: SocketAddr) -> u16 {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}
