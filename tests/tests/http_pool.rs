//! `HttpPool` against real local HTTP servers on 127.0.0.1: plain-HTTP/1.1
//! connections are reused, given back only when their body was read to
//! its end, closed after the idle timeout and on `close`, and one the
//! upstream closed while idle is never sent a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use sluice_pool::{HttpBody, HttpPool, HttpPoolConfig};
use sluice_tests::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn pool(max_connections: u32, idle_timeout: Duration) -> HttpPool {
    let mut config = HttpPoolConfig::new("upstream");
    config.max_connections = max_connections;
    config.idle_timeout = idle_timeout;
    HttpPool::new(&config).expect("a valid pool config")
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// Sends one GET and reads its body to the end.
async fn fetch(pool: &HttpPool, url: &str) -> (u16, Bytes) {
    let (_, slot) = pool.slot_behind(async {}).await.expect("a slot");
    let response = pool.send_in(&slot, get(url)).await.expect("an answer");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, body)
}

/// Polls `check` every 10 ms for up to 3 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still not true after 3 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sequential_requests_share_one_connection_and_carry_the_host() {
    let upstream = Upstream::start().await.expect("upstream");
    let pool = pool(10, Duration::from_secs(20));
    for i in 0..20 {
        let (status, body) = fetch(&pool, &format!("{}/echo/{i}", upstream.base_url())).await;
        assert_eq!(status, 200);
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(echo["path"], format!("/echo/{i}"));
        assert_eq!(echo["host"], upstream.addr().to_string());
        // A response without a body (204) is over at once: its connection
        // goes back as well.
        let (status, body) = fetch(&pool, &format!("{}/status/204", upstream.base_url())).await;
        assert_eq!((status, body.len()), (204, 0));
    }
    assert_eq!(upstream.state.connections.load(Ordering::SeqCst), 1);
    let stats = pool.stats();
    assert_eq!((stats.size, stats.in_use, stats.idle), (1, 0, 1));
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let upstream = Upstream::start().await.expect("upstream");
    let pool = pool(10, Duration::from_secs(20));
    let (_, slot) = pool.slot_behind(async {}).await.expect("a slot");
    let response = pool
        .send_in(&slot, get(&format!("{}/big/4000000", upstream.base_url())))
        .await
        .expect("an answer");
    let mut body: HttpBody = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    drop(slot);
    // The half-read connection is not lent again: the next request opens
    // a second one, and the first one closes.
    let (status, _) = fetch(&pool, &format!("{}/data/a", upstream.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.state.connections.load(Ordering::SeqCst), 2);
    eventually("the half-read connection closed", || pool.stats().size == 1).await;
    // A body read to its end gives its connection back.
    let (status, _) = fetch(&pool, &format!("{}/big/100000", upstream.base_url())).await;
    assert_eq!(status, 200);
    let (status, _) = fetch(&pool, &format!("{}/data/b", upstream.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.state.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_and_on_close() {
    let upstream = Upstream::start().await.expect("upstream");
    let pool = pool(10, Duration::from_millis(300));
    let (status, _) = fetch(&pool, &format!("{}/data/a", upstream.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(pool.stats().size, 1);
    // Still open well inside the timeout, so that the check below is the
    // timeout's doing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.stats().size, 1);
    eventually("the idle connection closed", || pool.stats().size == 0).await;
    // A request after that opens a new one.
    let (status, _) = fetch(&pool, &format!("{}/data/b", upstream.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.state.connections.load(Ordering::SeqCst), 2);

    let pool = self::pool(10, Duration::from_secs(20));
    let (status, _) = fetch(&pool, &format!("{}/data/c", upstream.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(pool.stats().size, 1);
    pool.close().await;
    eventually("close closed the idle connection", || {
        pool.stats().size == 0
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_open_no_more_connections_than_the_limit() {
    let upstream = Upstream::start().await.expect("upstream");
    upstream.state.latency_ms.store(20, Ordering::SeqCst);
    let pool = pool(4, Duration::from_secs(20));
    let calls = (0..40).map(|i| {
        let pool = pool.clone();
        let url = format!("{}/data/{i}", upstream.base_url());
        tokio::spawn(async move { fetch(&pool, &url).await.0 })
    });
    for call in calls {
        assert_eq!(call.await.expect("task"), 200);
    }
    let opened = upstream.state.connections.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&opened),
        "{opened} connections for a limit of 4"
    );
    assert_eq!(upstream.state.requests.load(Ordering::SeqCst), 40);
}

/// An upstream that answers one request per connection with keep-alive,
/// then closes the connection 50 ms later, as a server whose keep-alive
/// timeout is shorter than the client's does. Counts connections.
async fn closing_upstream() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(stream);
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_never_used() {
    let (base, accepted) = closing_upstream().await;
    let pool = pool(10, Duration::from_secs(20));
    for i in 0..5 {
        let (status, body) = fetch(&pool, &format!("{base}/x/{i}")).await;
        assert_eq!((status, &body[..]), (200, &b"{}"[..]));
        // Past the upstream's 50 ms: the connection it closed must not
        // carry the next request (which would fail it).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    eventually("closed connections are not counted", || {
        pool.stats().size == 0
    })
    .await;
}

#[tokio::test]
async fn an_upstream_that_closes_new_connections_fails_the_request_without_a_storm() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let pool = pool(10, Duration::from_secs(20));
    let (_, slot) = pool.slot_behind(async {}).await.expect("a slot");
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        pool.send_in(&slot, get(&format!("http://{addr}/x"))),
    )
    .await
    .expect("an answer within 5 s, not a loop of reconnects");
    let error = sent.expect_err("a connection closed at once fails the request");
    assert!(!error.connect, "the connection was open: {error}");
    // One connection, not a reconnect per failure.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_second_host_goes_through_the_general_client_and_both_reuse_connections() {
    let first = Upstream::start().await.expect("upstream");
    let second = Upstream::start().await.expect("upstream");
    let pool = pool(10, Duration::from_secs(20));
    for i in 0..5 {
        for upstream in [&first, &second] {
            let (status, body) = fetch(&pool, &format!("{}/echo/{i}", upstream.base_url())).await;
            assert_eq!(status, 200);
            let echo: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(echo["host"], upstream.addr().to_string());
        }
    }
    assert_eq!(first.state.connections.load(Ordering::SeqCst), 1);
    assert_eq!(second.state.connections.load(Ordering::SeqCst), 1);
    eventually("both connections counted", || pool.stats().size == 2).await;
}
