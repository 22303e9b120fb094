//! The real `sluice-server` binary: start-up, configuration errors, logs
//! without secrets, metrics and OpenAPI validity, and SIGTERM under load.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use sluice_metrics::names::PROMTOOL_EXPECTED_FINDING;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::client::TestClient;
use sluice_tests::provision::free_port;
use sluice_tests::services;
use sluice_tests::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-server");

struct Running {
    child: Child,
    log: PathBuf,
    client: TestClient,
}

/// A test that fails before terminating its server still stops it.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn scratch() -> PathBuf {
    services::scratch_dir("bin")
}

/// Starts the binary with exactly `vars` (the environment is cleared) and
/// waits for its start-up line.
fn start(vars: &[(&str, String)], args: &[&str]) -> Running {
    let dir = scratch();
    let port = free_port().unwrap();
    let log = dir.join("server.log");
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("SLUICE_DB_SQLITE_PATH", dir.join("sluice.db"))
        .env("SLUICE_BIND", format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited with {status}: {text}");
        }
        assert!(Instant::now() < deadline, "no start-up line: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running {
        child,
        log,
        client: TestClient::new(format!("http://127.0.0.1:{port}")),
    }
}

fn terminate(mut running: Running) -> (std::process::ExitStatus, String) {
    let status = sigterm(&mut running.child);
    (status, std::fs::read_to_string(&running.log).unwrap())
}

/// Sends SIGTERM and waits (up to 20 s) for the exit.
fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_to_exit(vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("SLUICE_BIND", format!("127.0.0.1:{}", free_port().unwrap()));
    for (k, v) in vars {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn with_nothing_configured_it_serves_sqlite_and_drains_on_sigterm() {
    let upstream = Upstream::start().await.unwrap();
    upstream
        .state
        .latency_ms
        .store(600, std::sync::atomic::Ordering::SeqCst);
    let running = start(&[("API_EXTERNAL_BASE_URL", upstream.base_url())], &[]);
    let c = running.client.clone();
    assert_eq!(c.get("/healthz").await.status, 200);
    let created = c
        .post_json(
            "/users",
            &serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        c.get(&format!("/users/{}", created.json()["user_id"]))
            .await
            .status,
        200
    );
    // Requests in flight when SIGTERM arrives all complete.
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.get(&format!("/external-data/drain{i}")).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let terminated = tokio::task::spawn_blocking(move || terminate(running));
    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200);
    }
    let (status, log) = terminated.await.unwrap();
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        log.contains("shutdown signal received") && log.contains("stopped"),
        "{log}"
    );
}

/// Bad configuration values, each with the variable its error must name.
/// Every one exits 64 with one line, never a panic (101), never a silent
/// default, and never shows `hunter2`.
const BAD_VALUES: &[(&[(&str, &str)], &str)] = &[
    (&[("SLUICE_BIND", "everywhere")], "SLUICE_BIND"),
    (&[("SLUICE_BIND", "127.0.0.1")], "SLUICE_BIND"),
    (&[("SLUICE_BIND", "127.0.0.1:99999")], "SLUICE_BIND"),
    (&[("SLUICE_AUTH_TOKENS", ",")], "SLUICE_AUTH_TOKENS"),
    (&[("SLUICE_AUTH_TOKENS", " , ,")], "SLUICE_AUTH_TOKENS"),
    (&[("SLUICE_AUTH_TOKENS", "a b")], "SLUICE_AUTH_TOKENS"),
    (&[("SLUICE_MAX_BODY_BYTES", "0")], "SLUICE_MAX_BODY_BYTES"),
    (&[("SLUICE_MAX_BODY_BYTES", "-1")], "SLUICE_MAX_BODY_BYTES"),
    (&[("SLUICE_MAX_BODY_BYTES", "1MB")], "SLUICE_MAX_BODY_BYTES"),
    (
        &[("SLUICE_MAX_BODY_BYTES", "18446744073709551616")],
        "SLUICE_MAX_BODY_BYTES",
    ),
    (
        &[("SLUICE_MAX_CONCURRENCY", "18446744073709551615")],
        "SLUICE_MAX_CONCURRENCY",
    ),
    (&[("SLUICE_MAX_CONCURRENCY", "0")], "SLUICE_MAX_CONCURRENCY"),
    (&[("SLUICE_MAX_CONNECTIONS", "0")], "SLUICE_MAX_CONNECTIONS"),
    (
        &[("SLUICE_MAX_CONNECTIONS", "lots")],
        "SLUICE_MAX_CONNECTIONS",
    ),
    (
        &[("IO_MAX_CONCURRENT_REQUESTS", "18446744073709551615")],
        "IO_MAX_CONCURRENT_REQUESTS",
    ),
    (
        &[("IO_MAX_CONCURRENT_REQUESTS", "many")],
        "IO_MAX_CONCURRENT_REQUESTS",
    ),
    (
        &[("IO_MAX_CONCURRENT_REQUESTS", "0")],
        "IO_MAX_CONCURRENT_REQUESTS",
    ),
    (&[("IO_MAX_BATCH_SIZE", "0")], "IO_MAX_BATCH_SIZE"),
    (&[("IO_MAX_BATCH_SIZE", "1e3")], "IO_MAX_BATCH_SIZE"),
    (&[("IO_REQUEST_TIMEOUT", "0")], "IO_REQUEST_TIMEOUT"),
    (&[("IO_REQUEST_TIMEOUT", "-3")], "IO_REQUEST_TIMEOUT"),
    (&[("IO_REQUEST_TIMEOUT", "soon")], "IO_REQUEST_TIMEOUT"),
    (&[("IO_REQUEST_TIMEOUT", "1e300")], "IO_REQUEST_TIMEOUT"),
    (&[("IO_RETRY_ATTEMPTS", "x")], "IO_RETRY_ATTEMPTS"),
    (
        &[("SLUICE_HEADER_READ_TIMEOUT", "0")],
        "SLUICE_HEADER_READ_TIMEOUT",
    ),
    (&[("SLUICE_IDLE_TIMEOUT", "never")], "SLUICE_IDLE_TIMEOUT"),
    (
        &[("SLUICE_BODY_READ_TIMEOUT", "-1")],
        "SLUICE_BODY_READ_TIMEOUT",
    ),
    (&[("SLUICE_SHUTDOWN_GRACE", "NaN")], "SLUICE_SHUTDOWN_GRACE"),
    (
        &[("SLUICE_SHUTDOWN_LINGER", "inf")],
        "SLUICE_SHUTDOWN_LINGER",
    ),
    (&[("SLUICE_USER_CACHE_TTL", "0")], "SLUICE_USER_CACHE_TTL"),
    (
        &[("API_EXTERNAL_CACHE_TTL", "-5")],
        "API_EXTERNAL_CACHE_TTL",
    ),
    (&[("SLUICE_TLS_CERT", "cert.pem")], "SLUICE_TLS_KEY"),
    (&[("SLUICE_TLS_KEY", "key.pem")], "SLUICE_TLS_CERT"),
    (
        &[("DATABASE_URL", "mysql://root:hunter2@db/app")],
        "DATABASE_URL",
    ),
    (&[("DATABASE_URL", "not a url")], "DATABASE_URL"),
    (
        &[(
            "DATABASE_URL",
            "postgres://app:hunter2@127.0.0.1/app?sslmode=bogus",
        )],
        "DATABASE_URL",
    ),
    (
        &[("DATABASE_URL", "mysql://app@db/app?password=hunter2")],
        "DATABASE_URL",
    ),
    (&[("IO_RETRY_DELAY", "-1")], "IO_RETRY_DELAY"),
    (
        &[("DB_POSTGRES_HOST", "db"), ("DB_POSTGRES_PORT", "54x2")],
        "DB_POSTGRES_PORT",
    ),
    (
        &[("DB_POSTGRES_HOST", "db"), ("DB_POSTGRES_PORT", "0")],
        "DB_POSTGRES_PORT",
    ),
    (
        &[("DB_POSTGRES_HOST", "db"), ("DB_POSTGRES_PORT", "70000")],
        "DB_POSTGRES_PORT",
    ),
    (
        &[("DB_POSTGRES_HOST", "db"), ("DB_POSTGRES_POOL_SIZE", "0")],
        "DB_POSTGRES_POOL_SIZE",
    ),
    (
        &[("DB_POSTGRES_HOST", "db"), ("DB_POSTGRES_TIMEOUT", "-1")],
        "DB_POSTGRES_TIMEOUT",
    ),
    (
        &[("DB_POSTGRES_HOST", "db"), ("DB_POSTGRES_SSL", "maybe")],
        "DB_POSTGRES_SSL",
    ),
    (&[("REDIS_URL", "http://cache:6379")], "REDIS_URL"),
    (
        &[("REDIS_HOST", "cache"), ("REDIS_PORT", "x")],
        "REDIS_PORT",
    ),
    (
        &[("REDIS_HOST", "cache"), ("REDIS_POOL_SIZE", "0")],
        "REDIS_POOL_SIZE",
    ),
    (
        &[("API_EXTERNAL_BASE_URL", "ftp://x")],
        "API_EXTERNAL_BASE_URL",
    ),
    (
        &[("API_EXTERNAL_BASE_URL", "not a url")],
        "API_EXTERNAL_BASE_URL",
    ),
    (
        &[("API_EXTERNAL_BASE_URL", "http://")],
        "API_EXTERNAL_BASE_URL",
    ),
    (
        &[
            ("API_EXTERNAL_BASE_URL", "http://x"),
            ("API_EXTERNAL_TIMEOUT", "0"),
        ],
        "API_EXTERNAL_TIMEOUT",
    ),
    (
        &[
            ("API_EXTERNAL_BASE_URL", "http://x"),
            ("API_EXTERNAL_SSL_VERIFY", "perhaps"),
        ],
        "API_EXTERNAL_SSL_VERIFY",
    ),
    (
        &[("API_INTERNAL_BASE_URL", "gopher://x")],
        "API_INTERNAL_BASE_URL",
    ),
];

/// Like `run_to_exit`, but a server that starts (the value was accepted)
/// is killed after `limit` and reported rather than waited for.
fn run_bounded(vars: &[(&str, &str)], limit: Duration) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("SLUICE_BIND", format!("127.0.0.1:{}", free_port().unwrap()))
        .env("SLUICE_DB_SQLITE_PATH", scratch().join("bounded.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn a_bad_value_stops_start_up_with_one_line_naming_the_variable() {
    assert!(BAD_VALUES.len() >= 40);
    let mut wrong = Vec::new();
    for (vars, variable) in BAD_VALUES {
        let out = run_bounded(vars, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ok = out.status.code() == Some(64)
            && stderr.trim().lines().count() == 1
            && stderr.contains(variable)
            && !stderr.contains("hunter2");
        if !ok {
            wrong.push(format!("{vars:?} -> {:?}: {stderr}", out.status.code()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_value_that_is_not_utf8_stops_start_up() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(BIN)
        .env_clear()
        .env("SLUICE_BIND", format!("127.0.0.1:{}", free_port().unwrap()))
        .env(
            "SLUICE_AUTH_TOKENS",
            std::ffi::OsStr::from_bytes(b"tok\xffen"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("SLUICE_AUTH_TOKENS"), "{stderr}");
}

#[test]
fn an_unreachable_database_stops_start_up_without_its_password() {
    let port = free_port().unwrap();
    let url = format!("postgres://ada:hunter2@127.0.0.1:{port}/app");
    let out = run_to_exit(&[
        ("DATABASE_URL", &url),
        ("DB_POSTGRES_TIMEOUT", "0.5"),
        ("IO_RETRY_ATTEMPTS", "2"),
        ("IO_RETRY_DELAY", "0.1"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    let last = stderr.trim().lines().last().unwrap();
    assert!(
        last.starts_with("sluice-server: DATABASE_URL: cannot open the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn secrets_never_reach_logs_or_bodies() {
    let db_url = services::fresh_database("bin_secrets").await.replacen(
        "postgres@",
        "postgres:db-s3cret@",
        1,
    );
    let upstream = Upstream::start().await.unwrap();
    let running = start(
        &[
            ("DATABASE_URL", db_url),
            ("REDIS_URL", services::redis_url()),
            ("API_EXTERNAL_BASE_URL", upstream.base_url()),
            ("API_EXTERNAL_TOKEN", "up-s3cret".into()),
            ("SLUICE_AUTH_TOKENS", "auth-s3cret".into()),
            ("RUST_LOG", "info,sluice_server=debug,sluice_http_server=debug,sluice_db=debug,sluice_pool=debug".into()),
        ],
        &["--log-format", "json"],
    );
    let c = running.client.clone();
    let auth = [
        ("authorization", "Bearer auth-s3cret"),
        ("content-type", "application/json"),
    ];
    let mut bodies = String::new();
    for (method, path, body, headers) in [
        (hyper::Method::GET, "/users/1", "", &auth[..1]),
        (hyper::Method::GET, "/users/1", "", &[][..]),
        (
            hyper::Method::GET,
            "/users/1",
            "",
            &[("authorization", "Bearer wrong")][..],
        ),
        (
            hyper::Method::POST,
            "/users",
            "{\"name\":\"a\",\"email\":\"a@b.co\"}",
            &auth[..],
        ),
        (hyper::Method::GET, "/external-data/x", "", &auth[..1]),
        (hyper::Method::GET, "/io-metrics", "", &auth[..1]),
        (hyper::Method::GET, "/metrics", "", &[][..]),
    ] {
        let reply = c.send(method, path, headers, body.to_owned()).await;
        bodies.push_str(&String::from_utf8_lossy(&reply.body));
    }
    let echoed: serde_json::Value = TestClient::new(upstream.base_url())
        .get("/echo/x")
        .await
        .json();
    assert_eq!(
        echoed["authorization"],
        serde_json::Value::Null,
        "the probe itself sends no token"
    );
    let (status, log) = tokio::task::spawn_blocking(move || terminate(running))
        .await
        .unwrap();
    assert!(status.success());
    for secret in ["db-s3cret", "up-s3cret", "auth-s3cret"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!bodies.contains(secret), "{secret} in a body");
    }
    assert!(
        log.contains("\"request_id\""),
        "json access log lines: {log}"
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_the_openapi_document_validates() {
    let running = start(&[], &[]);
    let c = running.client.clone();
    c.post_json(
        "/users",
        &serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await;
    c.get("/users/1").await;
    c.get("/users/abc").await;
    let metrics = c.get("/metrics").await;
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("http_server_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("http_route=\"/users/{user_id}\""), "{text}");
    // The background probe has pinged the database by now (it runs at once).
    assert!(
        text.contains("sluice_dependency_up{system=\"sqlite\",connection=\"primary\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("db_client_operation_duration_seconds_bucket"),
        "{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required ({e}); install it with `apt-get install prometheus`")
        });
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && *l != PROMTOOL_EXPECTED_FINDING)
        .collect();
    assert!(findings.is_empty(), "{report}");
    check_against_the_table(&text);

    let doc = c.get("/openapi.json").await;
    let dir = scratch();
    std::fs::write(dir.join("openapi.json"), &doc.body).unwrap();
    let validated = Command::new("python3")
        .args(["-c", "import json,sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')"])
        .arg(dir.join("openapi.json"))
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "OpenAPI 3.1 validation failed (needs `pip install openapi-spec-validator`): {}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let (status, _) = tokio::task::spawn_blocking(move || terminate(running))
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn help_lists_every_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for variable in [
        "DB_POSTGRES_HOST",
        "DB_POSTGRES_PASSWORD",
        "DB_POSTGRES_POOL_SIZE",
        "DB_POSTGRES_TIMEOUT",
        "API_EXTERNAL_BASE_URL",
        "API_EXTERNAL_TIMEOUT",
        "API_EXTERNAL_SSL_VERIFY",
        "REDIS_HOST",
        "REDIS_POOL_SIZE",
        "IO_RETRY_ATTEMPTS",
        "IO_RETRY_DELAY",
        "IO_MAX_CONCURRENT_REQUESTS",
        "IO_REQUEST_TIMEOUT",
        "DATABASE_URL",
        "REDIS_URL",
        "SLUICE_BIND",
        "SLUICE_DB_SQLITE_PATH",
        "SLUICE_MAX_BODY_BYTES",
        "SLUICE_AUTH_TOKENS",
        "SLUICE_USER_CACHE_TTL",
        "API_EXTERNAL_CACHE_TTL",
        "API_EXTERNAL_MAX_BODY_BYTES",
        "API_EXTERNAL_MAX_BATCH_BYTES",
        "DB_POSTGRES_CONNECT_TIMEOUT",
        "IO_MAX_BATCH_SIZE",
        "SLUICE_SHUTDOWN_GRACE",
        "--bind",
        "--log-format",
    ] {
        assert!(help.contains(variable), "{variable} missing from --help");
    }
}

/// Every series the live server exposes belongs to a metric of
/// `sluice_metrics::names::METRICS`, with its type and exactly its labels
/// (optional ones aside), and its `HELP` line; the docs' table is
/// rendered from the same table.
fn check_against_the_table(text: &str) {
    if let Err(problem) = sluice_metrics::conformance::check_exposition(text) {
        panic!("{problem}");
    }
    for name in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = name.split(' ').next().unwrap_or_default();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}

/// A local HTTP server answering every request with `answer`, keeping
/// each request's headers and body; for the OTLP receiver and the
/// upstream of the trace test.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>,
}

impl Recorder {
    async fn start(content_type: &'static str, answer: &'static [u8]) -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>> =
            std::sync::Arc::default();
        let kept = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let kept = std::sync::Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let kept = std::sync::Arc::clone(&kept);
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                kept.lock().unwrap().push((parts.headers, body));
                                hyper::Response::builder()
                                    .header("content-type", content_type)
                                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                        answer,
                                    )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }
}

/// Traces: a `traceparent` is continued (the upstream gets the same trace
/// id under a new parent span id), the access log names the trace, and
/// the spans reach an OTLP/HTTP receiver as real protobuf — a server span
/// per request with the database and upstream client spans as its
/// children, all in the caller's trace.
#[tokio::test]
async fn traces_continue_the_callers_trace_and_reach_an_otlp_receiver() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    let receiver = Recorder::start("application/x-protobuf", b"").await;
    let upstream = Recorder::start("application/json", br#"{"id":"t1","value":1}"#).await;
    let running = start(
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", receiver.addr),
            ),
            ("OTEL_SERVICE_NAME", "trace-test".to_owned()),
            ("API_EXTERNAL_BASE_URL", format!("http://{}", upstream.addr)),
        ],
        &[],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let headers = [("traceparent", traceparent.as_str())];
    let c = running.client.clone();
    let proxied = c
        .send(http::Method::GET, "/external-data/t1", &headers, "")
        .await;
    assert_eq!(proxied.status, 200, "{:?}", proxied.body);
    let created = c
        .send(
            http::Method::POST,
            "/users",
            &[headers[0], ("content-type", "application/json")],
            r#"{"name":"Ada","email":"ada@trace.test"}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // A request without a traceparent starts a trace of its own.
    assert_eq!(c.get("/users/1").await.status, 200);

    // The upstream saw the caller's trace, with a new parent: the
    // server's client span.
    let sent: Vec<String> = upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(h, _)| h.get("traceparent")?.to_str().ok().map(str::to_owned))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace_id, "01"),
        "{sent:?}"
    );
    assert_ne!(parts[2], caller_span);
    assert_eq!(parts[2].len(), 16);

    let (status, log) = tokio::task::spawn_blocking(move || terminate(running))
        .await
        .unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("trace_id={trace_id}")), "{log}");

    // Shutdown flushed the spans.
    let mut spans = Vec::new();
    for (headers, body) in receiver.seen.lock().unwrap().iter() {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            assert!(service.unwrap_or_default().contains("trace-test"));
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let servers: Vec<_> = ours.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(servers.len(), 2, "{ours:#?}");
    for server in &servers {
        assert_eq!(hex(&server.parent_span_id), caller_span, "{server:?}");
    }
    let child_of_a_server = |s: &&&opentelemetry_proto::tonic::trace::v1::Span| {
        s.kind == CLIENT && servers.iter().any(|p| p.span_id == s.parent_span_id)
    };
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    };
    let db = ours
        .iter()
        .filter(child_of_a_server)
        .find(|s| attr(s, "db.system.name").contains("sqlite"))
        .unwrap_or_else(|| panic!("no database span under a server span: {ours:#?}"));
    assert!(attr(db, "db.operation.name").contains('"'), "{db:?}");
    let http = ours
        .iter()
        .filter(child_of_a_server)
        .find(|s| attr(s, "http.request.method").contains("GET"))
        .unwrap_or_else(|| panic!("no upstream client span under a server span: {ours:#?}"));
    assert_eq!(
        hex(&http.span_id),
        parts[2],
        "the upstream's parent is the client span"
    );
    assert!(
        attr(http, "http.response.status_code").contains("200"),
        "{http:?}"
    );
    // The untraced request got a trace of its own.
    assert!(
        spans
            .iter()
            .any(|s| s.kind == SERVER && hex(&s.trace_id) != trace_id),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn a_stderr_nobody_reads_never_holds_requests_up() {
    // stderr is a pipe that is never read: once its 64 KiB buffer is full,
    // a write to it blocks. Every request logs a line at the default
    // level, so a server that wrote its logs from the request's own
    // thread would stop answering after a few hundred requests.
    let dir = scratch();
    let port = free_port().unwrap();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("SLUICE_DB_SQLITE_PATH", dir.join("sluice.db"))
        .env("SLUICE_BIND", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread = child.stderr.take();
    let running = Running {
        child,
        log: dir.join("unused.log"),
        client: TestClient::new(format!("http://127.0.0.1:{port}")),
    };
    let c = running.client.clone();
    let ready = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(c.addr()).await.is_err() {
        assert!(Instant::now() < ready, "the server did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // About 200 bytes of log each: 3,000 requests are ten times the
    // pipe's buffer.
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        let mut ok = 0;
        for _ in 0..3000 {
            if c.get("/healthz").await.status == 200 {
                ok += 1;
            }
        }
        ok
    })
    .await
    .expect("requests stalled behind a full stderr");
    assert_eq!(answered, 3000);
    // Nor does the exit wait on it.
    let mut running = running;
    let status = tokio::task::spawn_blocking(move || sigterm(&mut running.child))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
