//! Graceful shutdown over a raw socket: a request that reaches an idle
//! keep-alive connection just after shutdown began is answered, not cut
//! off, and new connections are refused.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_db::Database;
use sluice_http_server::{AppState, ServerConfig, serve};
use sluice_metrics::Registry;
use sluice_pool::{ConnectionConfig, Kind, SqlPool};
use sluice_tests::services;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Reads one response: the head, then `Content-Length` bytes of body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "the connection closed mid-response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_request_on_an_idle_connection_after_shutdown_began_is_answered() {
    let dir = services::scratch_dir("shutdown");
    let mut c = ConnectionConfig::new("shutdown", Kind::Sqlite);
    c.database = Some(dir.join("db.sqlite").to_string_lossy().into_owned());
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    db.migrate().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        AppState::new(ServerConfig::default(), db),
        async {
            let _ = stopped.await;
        },
    ));

    // A keep-alive connection, used once, then idle.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    let first = read_response(&mut client).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"));

    // Shutdown begins while the connection is idle.
    stop.send(()).unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "new connections were still accepted");

    // The client, unaware, sends its next request: it is answered, and
    // told not to send another on this connection.
    client.write_all(REQUEST).await.unwrap();
    let second = read_response(&mut client).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the connection stayed open");

    // With no connection left, the server returns well within its grace.
    let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
}

#[tokio::test]
async fn close_all_closes_every_pool_after_the_work_in_flight() {
    use sluice_api_client::{ApiClient, ApiError, ApiPath, ApiRequest, UpstreamConfig};
    use sluice_db::Cache;
    use sluice_pool::RedisPool;
    use sluice_tests::upstream::Upstream;

    let db_url = services::fresh_database("close_all").await;
    let db = Database::open(&ConnectionConfig::from_url("primary", &db_url).unwrap())
        .await
        .unwrap();
    let redis =
        RedisPool::open(&ConnectionConfig::from_url("cache", &services::redis_url()).unwrap())
            .await
            .unwrap();
    let cache = Cache::new(redis.clone(), services::redis_prefix("close_all"));
    let upstream = Upstream::start().await.unwrap();
    upstream
        .state
        .latency_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let api =
        ApiClient::new(UpstreamConfig::new("external", &upstream.base_url()).unwrap()).unwrap();
    let state = AppState::build(
        ServerConfig::default(),
        db.clone(),
        Some(cache),
        Some(api.clone()),
        Registry::new(),
        None,
    );
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            api.request(ApiRequest::get(ApiPath::new().push("data").push("slow")))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    state.close_all().await;
    // The request in flight finished before its pool closed.
    assert!(slow.is_finished());
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
    let after = api
        .request(ApiRequest::get(ApiPath::new().push("data").push("after")))
        .await
        .unwrap_err();
    assert!(matches!(after, ApiError::Closed { .. }), "{after:?}");
    assert_eq!(upstream.state.hits("/data/after"), 0);
    assert!(redis.ping().await.is_err(), "Redis clients still connected");
    assert!(db.pool().is_closed());
    // Idempotent.
    state.close_all().await;
}
