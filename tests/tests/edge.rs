//! The HTTP edge under hostile and careless clients, over real sockets:
//! connections that make no progress are closed, every answer is the
//! envelope (path rejections, panics), probes are never shed, readiness
//! turns off while draining, the bearer scheme is case-insensitive, dot
//! segments and control characters never reach the upstream, and the
//! connection cap holds.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use hyper::Method;
use sluice_db::Database;
use sluice_http_server::{AppState, ServerConfig, router_with, serve_router};
use sluice_metrics::Registry;
use sluice_pool::{ConnectionConfig, Kind, Secret, SqlPool};
use sluice_tests::client::{Reply, TestClient};
use sluice_tests::services;
use sluice_tests::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct Server {
    client: TestClient,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn sqlite(name: &str) -> Database {
    let dir = services::scratch_dir(name);
    let mut c = ConnectionConfig::new(name, Kind::Sqlite);
    c.database = Some(dir.join("db.sqlite").to_string_lossy().into_owned());
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    db.migrate().await.unwrap();
    db
}

async fn panics() -> &'static str {
    panic!("a deliberate panic")
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(800)).await;
    "done"
}

/// A server on SQLite with two extra routes behind the same edge:
/// `/panic` panics, `/slow` takes 800 ms.
async fn start_with(name: &str, config: ServerConfig, api: Option<&Upstream>) -> Server {
    let client = api.map(|u| {
        let c = sluice_api_client::UpstreamConfig::new("external", &u.base_url()).unwrap();
        sluice_api_client::ApiClient::new(c).unwrap()
    });
    let state = AppState::build(
        config,
        sqlite(name).await,
        None,
        client,
        Registry::new(),
        None,
    );
    let extra = Router::new()
        .route("/panic", get(panics))
        .route("/slow", get(slow));
    let app = router_with(state.clone(), extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve_router(listener, state.clone(), app, None, async {
        let _ = stopped.await;
    }));
    Server {
        client: TestClient::new(base),
        state,
        stop: Some(stop),
        done,
    }
}

fn assert_envelope(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.json());
    let body = reply.json();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(
        body["request_id"],
        reply.header("x-request-id").unwrap(),
        "{body}"
    );
}

/// Writes `bytes` and waits until the server closes the socket; returns
/// how long that took, or `None` if it stayed open for `patience`.
async fn closed_within(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    patience: Duration,
) -> Option<Duration> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    match tokio::time::timeout(patience, socket.read_to_end(&mut sink)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn connections_without_progress_are_closed() {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(800),
        ..Default::default()
    };
    let server = start_with("edge_silent", config, None).await;
    let addr = server.client.addr();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // Silent, half a preface, a whole preface and no stream, half a request.
    for bytes in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        preface,
        b"GET /healthz HTTP/1.1\r\nHo",
    ] {
        let took = closed_within(addr, bytes, Duration::from_secs(5)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(3)),
            "{:?} kept open: {took:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // An idle keep-alive connection is closed after the idle timeout, not before.
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(600) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
    // Meanwhile ordinary requests are served.
    assert_eq!(server.client.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let config = ServerConfig {
        body_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = start_with("edge_body", config, None).await;
    let mut socket = TcpStream::connect(server.client.addr()).await.unwrap();
    socket
        .write_all(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn every_answer_is_the_envelope() {
    let server = start_with("edge_envelope", ServerConfig::default(), None).await;
    let c = &server.client;
    for (path, field) in [
        ("/users/%FF", "user_id"),
        ("/external-data/%FF%FE", "data_id"),
    ] {
        let reply = c.get(path).await;
        assert_envelope(&reply, 422, "validation_error");
        assert_eq!(reply.json()["errors"][0]["field"], field);
    }
    // A panicking handler: 500 in the envelope, and the process serves on.
    for _ in 0..3 {
        assert_envelope(&c.get("/panic").await, 500, "internal_error");
    }
    assert_eq!(c.get("/healthz").await.status, 200);
    assert_envelope(&c.get("/nowhere").await, 404, "not_found");
    assert_envelope(
        &c.send(Method::DELETE, "/users/1", &[], "").await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn probes_are_never_shed() {
    let config = ServerConfig {
        max_concurrency: 2,
        ..Default::default()
    };
    let server = start_with("edge_shed", config, None).await;
    let c = server.client.clone();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/slow").await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The API is at capacity; the probes still answer.
    assert_envelope(&c.get("/users/1").await, 503, "overloaded");
    assert_eq!(c.get("/healthz").await.status, 200);
    assert_eq!(c.get("/readyz").await.status, 200);
    // No exposition is installed in these tests, so `/metrics` answers
    // its own 404: it was neither shed nor refused.
    assert_envelope(&c.get("/metrics").await, 404, "not_found");
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
    // The permits come back when the slow requests answer.
    assert_envelope(&c.get("/users/1").await, 404, "not_found");
}

#[tokio::test]
async fn a_shed_request_is_not_counted_against_capacity() {
    let config = ServerConfig {
        max_concurrency: 1,
        ..Default::default()
    };
    let server = start_with("edge_shed_one", config, None).await;
    let c = server.client.clone();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { c.get("/slow").await.status })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert_envelope(&c.get("/users/1").await, 503, "overloaded");
    }
    assert_eq!(slow.await.unwrap(), 200);
    // Five refusals took no permit: the one permit is free again.
    assert_envelope(&c.get("/users/1").await, 404, "not_found");
}

#[tokio::test]
async fn readiness_turns_off_as_soon_as_draining_starts() {
    let config = ServerConfig {
        shutdown_linger: Duration::from_millis(1500),
        ..Default::default()
    };
    let mut server = start_with("edge_drain", config, None).await;
    assert_eq!(server.client.get("/readyz").await.status, 200);
    let signalled = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Still accepting during the linger, but no longer ready.
    let reply = server.client.get("/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["failing"][0], "server:draining");
    assert!(server.state.is_draining());
    assert_eq!(server.client.get("/healthz").await.status, 200);
    server.done.await.unwrap().unwrap();
    assert!(signalled.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_probes_need_no_token() {
    let config = ServerConfig {
        auth_tokens: vec![Secret::new("s3cret".to_owned())],
        ..Default::default()
    };
    let server = start_with("edge_auth", config, None).await;
    let c = &server.client;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let header = format!("{scheme} s3cret");
        let reply = c
            .send(Method::GET, "/users/1", &[("authorization", &header)], "")
            .await;
        assert_envelope(&reply, 404, "not_found");
    }
    for header in ["Bearer wrong", "Basic s3cret", "s3cret", "Bearer"] {
        let reply = c
            .send(Method::GET, "/users/1", &[("authorization", header)], "")
            .await;
        assert_envelope(&reply, 401, "unauthorized");
    }
    assert_envelope(&c.get("/users/1").await, 401, "unauthorized");
    assert_envelope(&c.get("/panic").await, 401, "unauthorized");
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(c.get(probe).await.status, 200, "{probe}");
    }
    // No exposition in these tests: `/metrics` answers its own 404, not 401.
    assert_envelope(&c.get("/metrics").await, 404, "not_found");
    // An unknown path is a 404 for anyone; a known one with a method it
    // does not take is a route like the others: the token first.
    assert_envelope(&c.get("/nowhere").await, 404, "not_found");
    assert_envelope(
        &c.send(Method::DELETE, "/users/1", &[], "").await,
        401,
        "unauthorized",
    );
    assert_envelope(
        &c.send(
            Method::DELETE,
            "/users/1",
            &[("authorization", "Bearer s3cret")],
            "",
        )
        .await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn dot_segments_and_control_characters_never_reach_the_upstream() {
    let upstream = Upstream::start().await.unwrap();
    let server = start_with("edge_ids", ServerConfig::default(), Some(&upstream)).await;
    let c = &server.client;
    for path in [
        "/external-data/.",
        "/external-data/..",
        "/external-data/%2E",
        "/external-data/%2E%2E",
        "/external-data/a%00b",
        "/external-data/a%0Ab",
        "/external-data/a%7Fb",
    ] {
        assert_envelope(&c.get(path).await, 422, "validation_error");
    }
    let reply = c
        .send(
            Method::POST,
            "/batch-external-data",
            &[("content-type", "application/json")],
            r#"["ok", "..", "a\nb"]"#,
        )
        .await;
    assert_envelope(&reply, 422, "validation_error");
    let fields: Vec<_> = reply.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["[1]", "[2]"]);
    assert_eq!(c.get("/external-data/a.b").await.status, 200);
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees_up() {
    let config = ServerConfig {
        max_connections: 3,
        header_read_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let server = start_with("edge_cap", config, None).await;
    let addr = server.client.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fourth connection waits in the backlog: no answer while three are held.
    let waiting =
        tokio::time::timeout(Duration::from_millis(500), server.client.get("/healthz")).await;
    assert!(waiting.is_err(), "a fourth connection was served");
    held.pop();
    let reply = tokio::time::timeout(Duration::from_secs(5), server.client.get("/healthz"))
        .await
        .expect("served once a slot is free");
    assert_eq!(reply.status, 200);
}
