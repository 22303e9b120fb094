//! The server's contract, black-box over a real socket: the library served
//! on 127.0.0.1 against SQLite, PostgreSQL, Redis and a local upstream.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use sluice_api_client::{ApiClient, BreakerConfig, UpstreamConfig, Window};
use sluice_db::{Cache, Database};
use sluice_http_server::{AppState, ServerConfig, serve};
use sluice_metrics::{Backend, Registry};
use sluice_pool::{ConnectionConfig, Kind, RedisPool, Secret, SqlPool};
use sluice_tests::client::{Reply, TestClient};
use sluice_tests::services;
use sluice_tests::upstream::Upstream;
use tokio::sync::{Semaphore, oneshot};

/// A running server; stops when dropped.
struct Server {
    client: TestClient,
    _stop: oneshot::Sender<()>,
}

async fn start(state: AppState) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    Server {
        client: TestClient::new(base),
        _stop: stop,
    }
}

async fn sqlite(name: &str) -> Database {
    let dir = services::scratch_dir(name);
    let mut c = ConnectionConfig::new(name, Kind::Sqlite);
    c.database = Some(dir.join("db.sqlite").to_string_lossy().into_owned());
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    db.migrate().await.unwrap();
    db
}

async fn postgres(name: &str) -> Database {
    let mut c = ConnectionConfig::from_url(name, &services::fresh_database(name).await).unwrap();
    c.pool_size = 20;
    c.pgbouncer = services::behind_pgbouncer();
    let db = Database::new(SqlPool::open(&c).await.unwrap());
    db.migrate().await.unwrap();
    db
}

fn api(upstream: &Upstream, in_flight: usize) -> ApiClient {
    api_recording(upstream, in_flight, &Registry::new())
}

fn api_recording(upstream: &Upstream, in_flight: usize, registry: &Registry) -> ApiClient {
    let mut c = UpstreamConfig::new("external", &upstream.base_url()).unwrap();
    c.retry_delay = Duration::from_millis(10);
    c.timeout = Duration::from_millis(500);
    c.deadline = Duration::from_secs(2);
    c.breaker = BreakerConfig {
        window: Window::Count(20),
        min_calls: 10,
        open_interval: Duration::from_secs(2),
        ..Default::default()
    };
    ApiClient::with_limiter(c, Arc::new(Semaphore::new(in_flight)), registry).unwrap()
}

/// A server on a SQLite file of its own, proxying `upstream` with an
/// in-flight cap of `in_flight`.
async fn with_upstream(
    config: ServerConfig,
    name: &str,
    upstream: &Upstream,
    in_flight: usize,
) -> Server {
    let state = AppState::build(
        config,
        sqlite(name).await,
        None,
        Some(api(upstream, in_flight)),
        Registry::new(),
        None,
    );
    start(state).await
}

fn assert_envelope(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.json());
    let body = reply.json();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let id = reply.header("x-request-id").unwrap();
    assert_eq!(
        body["request_id"], id,
        "the body names the response's request id"
    );
}

#[tokio::test]
async fn users_round_trip_on_sqlite() {
    let server = start(AppState::new(
        ServerConfig::default(),
        sqlite("users_rt").await,
    ))
    .await;
    let c = &server.client;
    let created = c
        .post_json(
            "/users",
            &json!({"name": "  Ada  ", "email": "Ada@Example.COM", "bio": "math", "x": 1}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let id = created.json()["user_id"].as_i64().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("/users/{id}").as_str())
    );
    let got = c.get(&format!("/users/{id}")).await;
    assert_eq!(got.status, 200);
    let data = &got.json()["data"];
    assert_eq!(
        (
            data["name"].as_str(),
            data["email"].as_str(),
            data["bio"].as_str()
        ),
        (Some("Ada"), Some("ada@example.com"), Some("math"))
    );
    assert!(chrono::DateTime::parse_from_rfc3339(data["created_at"].as_str().unwrap()).is_ok());
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));
    let no_bio = c
        .post_json(
            "/users",
            &json!({"name": "Bob", "email": "bob@example.com"}),
        )
        .await;
    let bob = c.get(&format!("/users/{}", no_bio.json()["user_id"])).await;
    assert_eq!(bob.json()["data"]["bio"], "");
    assert_envelope(
        &c.post_json(
            "/users",
            &json!({"name": "Eve", "email": "ADA@example.com"}),
        )
        .await,
        409,
        "conflict",
    );
    assert_envelope(&c.get("/users/999999").await, 404, "not_found");
}

#[tokio::test]
async fn malformed_requests_get_4xx_never_5xx() {
    let server = start(AppState::new(
        ServerConfig {
            max_body_bytes: 16 * 1024,
            ..Default::default()
        },
        sqlite("malformed").await,
    ))
    .await;
    let c = &server.client;
    for path in [
        "/users/0",
        "/users/-1",
        "/users/abc",
        "/users/9223372036854775808",
        "/users/1.5",
        "/users/%00",
        "/users/%F0%9F%98%80",
    ] {
        assert_envelope(&c.get(path).await, 422, "validation_error");
    }
    let bodies: [(&str, &str, u16); 13] = [
        ("application/json", "{", 400),
        ("application/json", "", 400),
        ("application/json", "[]", 400),
        ("application/json", "\"text\"", 400),
        ("application/json", "null", 400),
        ("text/plain", "{\"name\":\"a\",\"email\":\"a@b.co\"}", 400),
        ("application/json", "{}", 422),
        (
            "application/json",
            "{\"name\":\"\",\"email\":\"a@b.co\"}",
            422,
        ),
        (
            "application/json",
            "{\"name\":\"a\",\"email\":\"not-an-email\"}",
            422,
        ),
        ("application/json", "{\"name\":5,\"email\":[]}", 422),
        (
            "application/json",
            "{\"name\":\"a\",\"email\":\"a@b.co\",\"bio\":{}}",
            422,
        ),
        (
            "application/json",
            "{\"name\":\"a\\u0000\",\"email\":\"a@@b.co\"}",
            422,
        ),
        (
            "application/json",
            "{\"name\":\"a\u{0}\",\"email\":\"a@b.co\"}",
            400,
        ),
    ];
    for (content_type, body, status) in bodies {
        let reply = c
            .send(
                Method::POST,
                "/users",
                &[("content-type", content_type)],
                body.to_owned(),
            )
            .await;
        assert_eq!(
            reply.status,
            status,
            "{content_type} {body:?}: {:?}",
            reply.json()
        );
        assert_eq!(reply.json()["success"], false);
    }
    let invalid = c
        .post_json(
            "/users",
            &json!({"name": "", "email": "x", "bio": "b".repeat(10_001)}),
        )
        .await;
    let body = invalid.json();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email", "bio"]);
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    assert_eq!(
        c.send(
            Method::POST,
            "/users",
            &[("content-type", "application/json")],
            deep
        )
        .await
        .status,
        400
    );
    assert_envelope(
        &c.post_json(
            "/users",
            &json!({"name": "a", "email": "a@b.co", "bio": "x".repeat(20_000)}),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert_envelope(
        &c.send(Method::DELETE, "/users/1", &[], "").await,
        405,
        "method_not_allowed",
    );
    assert_envelope(&c.get("/no/such/route").await, 404, "not_found");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = start(AppState::new(
        ServerConfig::default(),
        sqlite("request_ids").await,
    ))
    .await;
    let c = &server.client;
    let mine = c
        .send(
            Method::GET,
            "/users/424242",
            &[("x-request-id", "client-id-1")],
            "",
        )
        .await;
    assert_eq!(mine.header("x-request-id"), Some("client-id-1"));
    assert_eq!(mine.json()["request_id"], "client-id-1");
    let long = "x".repeat(129);
    let spaced = c
        .send(
            Method::GET,
            "/healthz",
            &[("x-request-id", "has space")],
            "",
        )
        .await;
    assert_ne!(
        spaced.header("x-request-id"),
        Some("has space"),
        "a space could forge fields in a text log line"
    );
    for bad in [long.as_str(), "tab\there", "", "a=b", "has space"] {
        let reply = c
            .send(Method::GET, "/healthz", &[("x-request-id", bad)], "")
            .await;
        let id = reply.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
    }
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let recorder = sluice_metrics::prometheus::build_recorder();
    let handle = recorder.handle();
    let db = sqlite("ops").await;
    let state = AppState::build(
        ServerConfig::default(),
        db,
        None,
        None,
        Registry::new(),
        Some(handle),
    );
    let server = metrics::with_local_recorder(&recorder, || futures_block_on_start(state));
    let server = server.await;
    let c = &server.client;
    assert_eq!(c.get("/healthz").await.json(), json!({"status": "ok"}));
    assert_eq!(c.get("/readyz").await.status, 200);
    let io = c.get("/io-metrics").await.json();
    assert_eq!(io["success"], true);
    assert_eq!(io["database"]["ops"]["backend"], "sqlite");
    assert!(io["database"]["ops"]["pool"]["max"].as_u64().unwrap() >= 1);
    let openapi = c.get("/openapi.json").await;
    assert_eq!(openapi.header("content-type"), Some("application/json"));
    let doc = openapi.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/users/{user_id}",
        "/users",
        "/external-data/{data_id}",
        "/batch-external-data",
        "/io-metrics",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
}

/// Starts the server with the local recorder still current, so that the
/// handles the state registers go to it.
fn futures_block_on_start(state: AppState) -> impl Future<Output = Server> {
    start(state)
}

#[tokio::test]
async fn concurrent_creates_of_one_email_make_one_user_on_postgres() {
    let db = postgres("same_email").await;
    let server = start(AppState::new(ServerConfig::default(), db.clone())).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let c = server.client.clone();
            tokio::spawn(async move {
                c.post_json(
                    "/users",
                    &json!({"name": format!("n{i}"), "email": "same@example.com"}),
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    let (users, profiles): (i64, i64) = db
        .query_one(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM profiles)",
            (),
        )
        .await
        .unwrap();
    assert_eq!((users, profiles), (1, 1));
}

#[tokio::test]
async fn two_hundred_concurrent_creates_make_two_hundred_pairs() {
    for db in [postgres("two_hundred").await, sqlite("two_hundred").await] {
        let server = start(AppState::new(ServerConfig::default(), db.clone())).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let c = server.client.clone();
                tokio::spawn(async move {
                    c.post_json(
                        "/users",
                        &json!({"name": "n", "email": format!("u{i}@example.com")}),
                    )
                    .await
                    .status
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 201);
        }
        let (users, profiles, orphans): (i64, i64, i64) = db
            .query_one(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM profiles), \
                 (SELECT count(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE p.user_id IS NULL)",
                (),
            )
            .await
            .unwrap();
        assert_eq!((users, profiles, orphans), (200, 200, 0), "{:?}", db.kind());
    }
}

/// A profile the database refuses (a trigger raises) leaves no user
/// behind: on PostgreSQL the pair is one statement (no transaction is
/// recorded), on SQLite a transaction, and on both the user's insert goes
/// with the profile's.
#[tokio::test]
async fn a_refused_profile_leaves_no_user_on_either_backend() {
    let refuse_pg: &[&str] = &[
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.bio = 'boom' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON profiles \
         FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
    ];
    let refuse_sqlite: &[&str] = &["CREATE TRIGGER refuse_boom BEFORE INSERT ON profiles \
         WHEN NEW.bio = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END"];
    for (db, refuse) in [
        (postgres("refused_profile").await, refuse_pg),
        (sqlite("refused_profile").await, refuse_sqlite),
    ] {
        for statement in refuse {
            db.execute(*statement, ()).await.unwrap();
        }
        // The same pool, recording into a registry of the test's own.
        let registry = Registry::new();
        let db = Database::with_registry(db.pool().clone(), &registry);
        let server = start(AppState::new(ServerConfig::default(), db.clone())).await;
        let c = &server.client;
        let refused = c
            .post_json(
                "/users",
                &json!({"name": "B", "email": "boom@example.com", "bio": "boom"}),
            )
            .await;
        assert_eq!(refused.status, 500, "{:?}: {:?}", db.kind(), refused.json());
        let kept = c
            .post_json(
                "/users",
                &json!({"name": "K", "email": "kept@example.com", "bio": "fine"}),
            )
            .await;
        assert_eq!(kept.status, 201, "{:?}", db.kind());
        let (users, profiles, boom): (i64, i64, i64) = db
            .query_one(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM profiles), \
                 (SELECT count(*) FROM users WHERE email = 'boom@example.com')",
                (),
            )
            .await
            .unwrap();
        assert_eq!((users, profiles, boom), (1, 1, 0), "{:?}", db.kind());
        let backend = match db.kind() {
            Kind::Postgres => Backend::Postgresql,
            _ => Backend::Sqlite,
        };
        let snapshot = registry.snapshot();
        let ops = &snapshot
            .connection(backend, "refused_profile")
            .unwrap()
            .operations;
        let transactions = ops.get("transaction").map_or(0, |o| o.count);
        if db.kind() == Kind::Postgres {
            assert_eq!(transactions, 0, "{ops:?}");
            assert!(ops["query"].count >= 2, "{ops:?}");
        } else {
            assert_eq!(transactions, 2, "{ops:?}");
        }
    }
}

#[tokio::test]
async fn user_reads_go_through_redis_and_survive_its_death() {
    let mut redis = tokio::task::spawn_blocking(sluice_tests::provision::TempRedis::start)
        .await
        .unwrap()
        .unwrap();
    let mut rc = ConnectionConfig::from_url("cache", &redis.url()).unwrap();
    rc.retry_delay = Duration::from_millis(100);
    let cache = Cache::with_registry(
        RedisPool::open(&rc).await.unwrap(),
        "sluice:",
        &Registry::new(),
    );
    let db = sqlite("redis_users").await;
    let state = AppState::build(
        ServerConfig::default(),
        db.clone(),
        Some(cache.clone()),
        None,
        Registry::new(),
        None,
    );
    let server = start(state).await;
    let c = &server.client;
    let id = c
        .post_json(
            "/users",
            &json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await
        .json()["user_id"]
        .as_i64()
        .unwrap();
    let from_db = c.get(&format!("/users/{id}")).await;
    assert_eq!(from_db.status, 200);
    // The read filled the cache (in the background: wait for it).
    let cached: serde_json::Value =
        written_in_background(async || cache.get(&format!("user:{id}")).await.unwrap())
            .await
            .expect("the user was never cached");
    assert_eq!(cached["name"], "Ada");
    // A hit answers with the stored text in the envelope: the same bytes
    // as the answer from the database.
    let from_cache = c.get(&format!("/users/{id}")).await;
    assert_eq!(from_cache.status, 200);
    assert_eq!(from_cache.body, from_db.body);
    assert_eq!(
        from_cache.headers["content-type"],
        from_db.headers["content-type"]
    );
    // A stored value that is not exactly a user (a field the API does not
    // show, or not an object) is a miss: the database answers.
    for foreign in [
        json!({"id": id, "name": "Eve", "email": "e@example.com", "bio": "", "created_at": "x", "admin": true}),
        json!("not a user"),
    ] {
        cache
            .set(&format!("user:{id}"), &foreign, Duration::from_secs(60))
            .await
            .unwrap();
        let reply = c.get(&format!("/users/{id}")).await;
        assert_eq!(reply.body, from_db.body, "{foreign}");
    }
    // The last read stored the user again; from here the next one is
    // served from Redis even if the row changes underneath (within the TTL).
    for _ in 0..100 {
        let again: Option<serde_json::Value> = cache.get(&format!("user:{id}")).await.unwrap();
        if again.is_some_and(|v| v["name"] == "Ada") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    db.execute(
        "UPDATE users SET name = 'Changed' WHERE id = $1",
        sluice_db::params![id],
    )
    .await
    .unwrap();
    assert_eq!(
        c.get(&format!("/users/{id}")).await.json()["data"]["name"],
        "Ada"
    );
    redis.stop();
    let reply = c.get(&format!("/users/{id}")).await;
    assert_eq!(reply.status, 200, "a cache failure is never a client error");
    assert_eq!(reply.json()["data"]["name"], "Changed");
}

#[tokio::test]
async fn external_data_maps_every_upstream_outcome() {
    let upstream = Upstream::start().await.unwrap();
    let server = with_upstream(ServerConfig::default(), "external", &upstream, 100).await;
    let c = &server.client;
    let ok = c.get("/external-data/abc").await;
    assert_eq!(
        (ok.status, ok.json()),
        (200, json!({"success": true, "data": {"id": "abc"}}))
    );
    assert_envelope(
        &c.get(&format!("/external-data/{}", "x".repeat(257))).await,
        422,
        "validation_error",
    );
    // Hostile ids stay one segment upstream.
    // (`.` and `..` themselves are 422: see tests/edge.rs.)
    for id in ["..%2Fstatus%2F500", "a%2Fb", "%252F", "..."] {
        let reply = c.get(&format!("/external-data/{id}")).await;
        assert!(
            reply.status == 200 || reply.status == 404,
            "{id}: {}",
            reply.status
        );
    }
    assert!(
        upstream
            .state
            .all_hits()
            .keys()
            .all(|p| p.starts_with("/data/") && p.matches('/').count() == 2),
        "{:?}",
        upstream.state.all_hits()
    );

    upstream.state.fail_percent.store(100, Ordering::SeqCst);
    let failed = c.get("/external-data/down").await;
    assert_envelope(&failed, 502, "upstream_error");
    assert_eq!(
        upstream.state.hits("/data/down"),
        3,
        "retried within IO_RETRY_ATTEMPTS"
    );
    upstream.state.fail_percent.store(0, Ordering::SeqCst);

    upstream.state.latency_ms.store(800, Ordering::SeqCst);
    assert_envelope(&c.get("/external-data/slow").await, 504, "upstream_timeout");
    upstream.state.latency_ms.store(0, Ordering::SeqCst);

    upstream.state.down.store(true, Ordering::SeqCst);
    let mut last = None;
    for i in 0..15 {
        last = Some(c.get(&format!("/external-data/outage{i}")).await);
    }
    let open = last.unwrap();
    assert_envelope(&open, 503, "circuit_open");
    assert!(open.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
}

#[tokio::test]
async fn no_upstream_configured_is_503_not_configured() {
    let server = start(AppState::new(
        ServerConfig::default(),
        sqlite("no_upstream").await,
    ))
    .await;
    assert_envelope(
        &server.client.get("/external-data/x").await,
        503,
        "not_configured",
    );
    assert_envelope(
        &server
            .client
            .post_json("/batch-external-data", &json!(["x"]))
            .await,
        503,
        "not_configured",
    );
}

#[tokio::test]
async fn identical_concurrent_external_requests_share_one_upstream_call() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(300, Ordering::SeqCst);
    let server = with_upstream(ServerConfig::default(), "coalesce", &upstream, 100).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = server.client.clone();
            tokio::spawn(async move { c.get("/external-data/shared").await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(upstream.state.hits("/data/shared"), 1);
}

#[tokio::test]
async fn a_repeated_large_answer_is_fetched_once_and_sent_for_every_item() {
    let upstream = Upstream::start().await.unwrap();
    let server = with_upstream(ServerConfig::default(), "batch_big", &upstream, 10).await;
    let c = &server.client;
    let mut ids = vec!["big-100000"; 300];
    ids.extend(["a", "missing-1", "badjson-1", "a"]);
    let reply = c.post_json("/batch-external-data", &json!(ids)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    let body = reply.json();
    assert_eq!(body["success"], true);
    let items = body["data"].as_array().unwrap();
    assert_eq!(items.len(), ids.len());
    for item in &items[..300] {
        assert_eq!(item["id"], "big-100000");
        assert_eq!(item["status_code"], 200);
        assert_eq!(item["data"]["id"], "big-100000");
        assert_eq!(item["data"]["pad"].as_str().unwrap().len(), 100_000);
        assert!(item.get("error").is_none(), "{item}");
    }
    assert_eq!(items[300]["data"], json!({"id": "a"}));
    assert_eq!(items[303], items[300]);
    assert_eq!(
        (
            items[301]["status_code"].clone(),
            items[301]["data"].clone()
        ),
        (json!(404), json!(null))
    );
    assert!(items[301]["error"].is_string());
    assert_eq!(items[302]["data"], json!(null));
    assert_eq!(
        items[302]["error"],
        "the upstream's answer was not valid JSON"
    );
    assert_eq!(upstream.state.hits("/data/big-100000"), 1);
    assert_eq!(upstream.state.hits("/data/a"), 1);
}

#[tokio::test]
async fn batches_keep_order_fold_duplicates_and_respect_the_cap() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(20, Ordering::SeqCst);
    let config = ServerConfig {
        max_batch_size: 100,
        ..Default::default()
    };
    let server = with_upstream(config, "batch", &upstream, 5).await;
    let c = &server.client;
    let ids: Vec<String> = (0..60).map(|i| format!("id{}", i % 50)).collect();
    let reply = c.post_json("/batch-external-data", &json!(ids)).await;
    assert_eq!(reply.status, 200);
    let items = reply.json()["data"].as_array().unwrap().clone();
    assert_eq!(items.len(), 60);
    for (item, id) in items.iter().zip(&ids) {
        assert_eq!(item["id"], id.as_str());
        assert_eq!(item["status_code"], 200);
        assert_eq!(item["data"]["id"], id.as_str());
    }
    assert_eq!(
        upstream.state.requests.load(Ordering::SeqCst),
        50,
        "repeated ids are fetched once"
    );
    assert!(upstream.state.max_in_flight.load(Ordering::SeqCst) <= 5);
    // Validation.
    assert_envelope(
        &c.post_json("/batch-external-data", &json!([])).await,
        422,
        "validation_error",
    );
    assert_envelope(
        &c.post_json("/batch-external-data", &json!(vec!["a"; 101]))
            .await,
        422,
        "validation_error",
    );
    assert_envelope(
        &c.post_json("/batch-external-data", &json!(["ok", 5, ""]))
            .await,
        422,
        "validation_error",
    );
    assert_envelope(
        &c.post_json("/batch-external-data", &json!({"ids": ["a"]}))
            .await,
        422,
        "validation_error",
    );
    let bad = c
        .send(
            Method::POST,
            "/batch-external-data",
            &[("content-type", "application/json")],
            "[\"a\"",
        )
        .await;
    assert_envelope(&bad, 400, "bad_request");
}

#[tokio::test]
async fn one_failing_id_never_fails_the_batch() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.fail_percent.store(50, Ordering::SeqCst);
    let server = with_upstream(ServerConfig::default(), "batch_mixed", &upstream, 10).await;
    let ids: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let reply = server
        .client
        .post_json("/batch-external-data", &json!(ids))
        .await;
    assert_eq!(reply.status, 200);
    let items = reply.json()["data"].as_array().unwrap().clone();
    assert_eq!(items.len(), 40);
    let mut failed = 0;
    for (item, id) in items.iter().zip(&ids) {
        assert_eq!(item["id"], id.as_str());
        if item["status_code"] != 200 {
            failed += 1;
            assert_eq!(item["data"], serde_json::Value::Null);
            assert!(item["error"].is_string());
        }
    }
    assert!(
        failed > 0,
        "with 50% failures and 3 attempts some ids should still fail"
    );
}

#[tokio::test]
async fn auth_when_tokens_are_configured() {
    let config = ServerConfig {
        auth_tokens: vec![
            Secret::new("t0ken-hunter2".into()),
            Secret::new("other".into()),
        ],
        ..Default::default()
    };
    let server = start(AppState::new(config, sqlite("auth").await)).await;
    let c = &server.client;
    assert_envelope(&c.get("/users/1").await, 401, "unauthorized");
    let wrong = c
        .send(
            Method::GET,
            "/users/1",
            &[("authorization", "Bearer t0ken-hunter3")],
            "",
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(!String::from_utf8_lossy(&wrong.body).contains("hunter"));
    let right = c
        .send(
            Method::GET,
            "/users/1",
            &[("authorization", "Bearer other")],
            "",
        )
        .await;
    assert_eq!(right.status, 404);
    for open in ["/healthz", "/readyz"] {
        assert_eq!(c.get(open).await.status, 200, "{open}");
    }
}

#[tokio::test]
async fn postgres_stopped_is_503_fast_and_recovers_without_a_restart() {
    let mut pg = tokio::task::spawn_blocking(sluice_tests::provision::TempPostgres::start)
        .await
        .unwrap()
        .unwrap();
    // The defaults: a 5 s acquire timeout that no request may wait out.
    let config = ConnectionConfig::from_url("primary", &pg.url()).unwrap();
    let db = Database::with_registry(SqlPool::open(&config).await.unwrap(), &Registry::new());
    db.migrate().await.unwrap();
    let server = start(AppState::new(ServerConfig::default(), db)).await;
    let c = &server.client;
    let id = c
        .post_json(
            "/users",
            &json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await
        .json()["user_id"]
        .as_i64()
        .unwrap();
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let reply = c.get(&format!("/users/{id}")).await;
        assert_envelope(&reply, 503, "unavailable");
        assert!(reply.header("retry-after").is_some());
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
    let ready = c.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json()["failing"].clone()),
        (503, json!(["database:primary"]))
    );
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if c.get(&format!("/users/{id}")).await.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(pg);
}

#[tokio::test]
async fn a_slow_loris_client_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let server = start(AppState::new(config, sqlite("slowloris").await)).await;
    let mut loris = tokio::net::TcpStream::connect(server.client.addr())
        .await
        .unwrap();
    loris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Meanwhile the server answers everyone else.
    assert_eq!(server.client.get("/healthz").await.status, 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), loris.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept the slow connection open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_oversized_chunked_body_is_413_without_reading_it_all() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = ServerConfig {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let server = start(AppState::new(config, sqlite("chunked").await)).await;
    let mut stream = tokio::net::TcpStream::connect(server.client.addr())
        .await
        .unwrap();
    stream
        .write_all(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
    // Two chunks past the limit, and never the terminating chunk: the
    // server must answer without waiting for the end.
    stream.write_all(chunk.as_bytes()).await.unwrap();
    stream.write_all(chunk.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn load_is_shed_with_503_and_slow_requests_time_out() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(400, Ordering::SeqCst);
    let config = ServerConfig {
        max_concurrency: 2,
        ..Default::default()
    };
    let server = with_upstream(config, "shed", &upstream, 100).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let c = server.client.clone();
            tokio::spawn(async move { c.get(&format!("/external-data/shed{i}")).await })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        match reply.status {
            200 => ok += 1,
            503 => {
                assert_envelope(&reply, 503, "overloaded");
                assert_eq!(reply.header("retry-after"), Some("1"));
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 2 && shed >= 1, "ok {ok}, shed {shed}");

    let config = ServerConfig {
        request_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let server = with_upstream(config, "timeout", &upstream, 100).await;
    let reply = server.client.get("/external-data/too-slow").await;
    assert_envelope(&reply, 503, "timeout");
    assert_eq!(reply.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn http2_cleartext_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Full};
    let server = start(AppState::new(ServerConfig::default(), sqlite("h2c").await)).await;
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = client
        .get(
            format!("http://{}/healthz", server.client.addr())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"status\":\"ok\"}");
}

#[tokio::test]
async fn https_with_a_certificate_from_pem_files() {
    let sluice_tests::certs::Certs { ca, cert, key, .. } =
        sluice_tests::certs::throwaway(&services::scratch_dir("tls")).unwrap();
    let tls = sluice_http_server::tls_config(&cert, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sluice_http_server::serve_with(
        listener,
        AppState::new(ServerConfig::default(), sqlite("tls").await),
        Some(tls),
        async {
            let _ = stopped.await;
        },
    ));
    // A client that trusts this certificate, and verifies it.
    let mut config = UpstreamConfig::new("self", &format!("https://{addr}")).unwrap();
    config.ca_file = Some(ca.clone());
    config.retry_attempts = 1;
    let client =
        ApiClient::with_limiter(config, Arc::new(Semaphore::new(4)), &Registry::new()).unwrap();
    let health: serde_json::Value = client
        .get_json(sluice_api_client::ApiPath::new().push("healthz"))
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    // One that trusts only the public roots refuses the connection.
    let strict = ApiClient::with_limiter(
        UpstreamConfig::new("strict", &format!("https://{addr}")).unwrap(),
        Arc::new(Semaphore::new(4)),
        &Registry::new(),
    )
    .unwrap();
    assert!(
        strict
            .get_json::<serde_json::Value>(sluice_api_client::ApiPath::new().push("healthz"))
            .await
            .is_err()
    );
    // Bad files are a clear error.
    assert!(sluice_http_server::tls_config(&key, &key).is_err());
}

/// The first `Some` that `read` gives within 2 s, polling every 10 ms:
/// for what the server writes in the background (cache fills).
async fn written_in_background<T>(mut read: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    for _ in 0..200 {
        if let Some(value) = read().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn upstream_404_and_invalid_json_and_the_answer_cache() {
    let upstream = Upstream::start().await.unwrap();
    let mut rc = ConnectionConfig::from_url("cache", &services::redis_url()).unwrap();
    rc.pool_size = 2;
    let redis = RedisPool::open(&rc).await.unwrap();
    let registry = Registry::new();
    let cache = Cache::with_registry(redis, services::redis_prefix("answers"), &registry);
    let probe = cache.clone();
    let config = ServerConfig {
        external_cache_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let client = api_recording(&upstream, 10, &registry);
    let state = AppState::build(
        config,
        sqlite("answers").await,
        Some(cache),
        Some(client),
        registry,
        None,
    );
    let server = start(state).await;
    let c = &server.client;
    assert_envelope(&c.get("/external-data/missing-1").await, 404, "not_found");
    assert_envelope(
        &c.get("/external-data/badjson-1").await,
        502,
        "upstream_error",
    );
    assert_eq!(
        upstream.state.hits("/data/badjson-1"),
        1,
        "an invalid body is not retried"
    );
    // Answers are cached: once the first read's answer is stored (in the
    // background: wait for it), later reads do not reach the upstream.
    assert_eq!(
        c.get("/external-data/cached").await.json()["data"]["id"],
        "cached"
    );
    let stored =
        written_in_background(async || probe.get_json_text("external:cached").await.unwrap()).await;
    assert!(stored.is_some(), "the answer was never cached");
    for _ in 0..2 {
        assert_eq!(
            c.get("/external-data/cached").await.json()["data"]["id"],
            "cached"
        );
    }
    assert_eq!(upstream.state.hits("/data/cached"), 1);
    // Batch items name their own failures.
    let reply = c
        .post_json(
            "/batch-external-data",
            &json!(["ok-1", "missing-2", "badjson-2"]),
        )
        .await
        .json();
    let items = reply["data"].as_array().unwrap();
    assert_eq!(
        (
            items[0]["status_code"].clone(),
            items[1]["status_code"].clone()
        ),
        (json!(200), json!(404))
    );
    assert_eq!(items[1]["data"], serde_json::Value::Null);
    assert!(
        items[2]["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    // And /io-metrics shows all three dependencies, without secrets.
    let io = c.get("/io-metrics").await.json();
    assert_eq!(io["database"]["answers"]["backend"], "sqlite");
    assert_eq!(io["cache"]["cache"]["backend"], "redis");
    assert!(io["cache"]["cache"]["hits"].as_u64().unwrap() >= 2, "{io}");
    assert_eq!(io["api"]["external"]["circuit"], "closed");
    assert!(
        io["api"]["external"]["operations"]["read"]["count"]
            .as_u64()
            .unwrap()
            >= 3,
        "{io}"
    );
    assert!(io["api"]["external"]["operations"]["read"]["latency_ms"]["p99"].is_number());
}
