//! sluice-io's manager, key-value store, database batches and pool
//! options against real PostgreSQL, SQLite, Redis and a local upstream.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::interfaces::ClientLike;
use sluice_db::{Database, KvError, Params, Reply, Sql, params};
use sluice_io::{IoConfig, IoError, IoManager};
use sluice_metrics::{Backend, Registry};
use sluice_pool::{ConnectionConfig, Kind, SqlPool};
use sluice_tests::provision::TempRedis;
use sluice_tests::services;
use sluice_tests::upstream::Upstream;

fn lookup(pairs: Vec<(String, String)>) -> (Vec<String>, impl Fn(&str) -> Option<String>) {
    let map: HashMap<String, String> = pairs.into_iter().collect();
    let names = map.keys().cloned().collect();
    (names, move |k: &str| map.get(k).cloned())
}

/// Connections to database `name` open on the server, seen from another
/// connection (on the maintenance database).
async fn backends_on(observer: &Database, name: &str) -> i64 {
    let (n,): (i64,) = observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            params![name.to_owned()],
        )
        .await
        .unwrap();
    n
}

async fn observer() -> Database {
    let mut c = ConnectionConfig::from_url("observer", &services::database_url()).unwrap();
    c.pool_size = 1;
    Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new())
}

fn database_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

async fn redis_clients(url: &str) -> usize {
    let client = fred::clients::Client::new(
        fred::types::config::Config::from_url(url).unwrap(),
        None,
        None,
        None,
    );
    client.init().await.unwrap();
    let info: String = client
        .info(Some(fred::types::InfoKind::Clients))
        .await
        .unwrap();
    client.quit().await.unwrap();
    // The observer itself is one of them.
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
        - 1
}

/// The design's own usage, end to end: configure from variables, query,
/// a transaction inserting a user and its profile with the returned id,
/// an API request, a batch, the metrics, health, and `close_all` — after
/// which no connection of the manager is left open on PostgreSQL or Redis.
#[tokio::test]
async fn the_design_usage_end_to_end_and_close_all_leaves_nothing_open() {
    let db_url = services::fresh_database("io_design").await;
    let redis = TempRedis::start().unwrap();
    let upstream = Upstream::start().await.unwrap();
    let (names, get) = lookup(vec![
        ("DB_MAIN_URL".into(), db_url.clone()),
        ("DB_MAIN_POOL_SIZE".into(), "3".into()),
        ("DB_LOCAL_PATH".into(), ":memory:".into()),
        ("REDIS_URL".into(), redis.url()),
        ("REDIS_POOL_SIZE".into(), "2".into()),
        ("API_UP_BASE_URL".into(), upstream.base_url()),
        ("IO_MAX_BATCH_SIZE".into(), "50".into()),
    ]);
    let config = IoConfig::from_lookup(&names, &get).unwrap();
    let io = IoManager::open_with_registry(&config, Registry::new())
        .await
        .unwrap();

    let db = io.db("main").unwrap();
    db.execute(
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, email TEXT UNIQUE NOT NULL)",
        params![],
    )
    .await
    .unwrap();
    db.execute(
        "CREATE TABLE profiles (user_id BIGINT REFERENCES users(id), bio TEXT NOT NULL)",
        params![],
    )
    .await
    .unwrap();
    let id: i64 = io
        .execute_transaction("main", |tx| {
            Box::pin(async move {
                let (id,): (i64,) = tx
                    .query_one(
                        "INSERT INTO users (email) VALUES ($1) RETURNING id",
                        params!["ada@example.com"],
                    )
                    .await?;
                tx.execute(
                    "INSERT INTO profiles (user_id, bio) VALUES ($1, $2)",
                    params![id, "math"],
                )
                .await?;
                Ok(id)
            })
        })
        .await
        .unwrap();
    let rows: Vec<(String,)> = io
        .execute_query(
            "main",
            "SELECT bio FROM profiles WHERE user_id = $1",
            params![id],
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![("math".to_owned(),)]);
    // A failing transaction leaves nothing behind.
    let failed = io
        .execute_transaction("main", |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO users (email) VALUES ($1)",
                    params!["bob@example.com"],
                )
                .await?;
                tx.execute(
                    "INSERT INTO users (email) VALUES ($1)",
                    params!["ada@example.com"],
                )
                .await?;
                Ok(())
            })
        })
        .await;
    assert!(failed.is_err());
    let (count,): (i64,) = io
        .db("main")
        .unwrap()
        .query_one("SELECT count(*) FROM users", params![])
        .await
        .unwrap();
    assert_eq!(count, 1);

    let answer = io
        .make_api_request(
            "up",
            sluice_api_client::ApiRequest::get(
                sluice_api_client::ApiPath::new().push("data").push("7"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(answer.json::<serde_json::Value>().unwrap()["id"], "7");
    let batch: Vec<_> = (0..10)
        .map(|i| {
            sluice_api_client::ApiRequest::get(
                sluice_api_client::ApiPath::new()
                    .push("data")
                    .push(&i.to_string()),
            )
        })
        .collect();
    let results = io.make_batch_api_requests("up", batch).await.unwrap();
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(Result::is_ok));
    let too_many: Vec<_> = (0..51)
        .map(|_| sluice_api_client::ApiRequest::get(sluice_api_client::ApiPath::new().push("data")))
        .collect();
    assert!(matches!(
        io.make_batch_api_requests("up", too_many).await,
        Err(IoError::BatchTooLarge { len: 51, max: 50 })
    ));
    let kv = io.redis("redis").unwrap();
    kv.set("greeting", "hello", None).await.unwrap();
    assert_eq!(
        kv.get_string("greeting").await.unwrap().as_deref(),
        Some("hello")
    );

    // Unknown names are typed errors.
    assert!(matches!(io.db("nope"), Err(IoError::UnknownDatabase(n)) if n == "nope"));
    assert!(matches!(io.redis("nope"), Err(IoError::UnknownRedis(_))));
    assert!(matches!(
        io.make_api_request(
            "nope",
            sluice_api_client::ApiRequest::get(sluice_api_client::ApiPath::new())
        )
        .await,
        Err(IoError::UnknownApi(_))
    ));

    let metrics = io.metrics();
    let main = &metrics.database["main"];
    assert_eq!(main.backend, "postgresql");
    assert!(main.operations["transaction"].count >= 2);
    assert_eq!(metrics.database["local"].backend, "sqlite");
    assert_eq!(metrics.cache["redis"].operations["write"].count, 1);
    let requests: u64 = metrics.api["up"].operations.values().map(|o| o.count).sum();
    assert!(requests >= 11, "{requests}");
    assert_eq!(io.api_metrics("up").unwrap(), metrics.api["up"]);
    assert_eq!(io.database_metrics("main").unwrap().backend, "postgresql");
    let json = serde_json::to_value(&metrics).unwrap();
    assert_eq!(json["success"], true);
    assert!(json["database"]["main"]["pool"]["max"].as_u64() == Some(3));

    let health = io.health(Duration::from_secs(2)).await;
    assert!(health.healthy, "{health:?}");
    let checked: Vec<String> = health
        .checks
        .iter()
        .map(|c| format!("{}:{}", c.kind, c.name))
        .collect();
    assert_eq!(
        checked,
        ["database:local", "database:main", "redis:redis", "api:up"]
    );

    // Every connection of the manager is open on the servers' side…
    let observer = observer().await;
    let name = database_name(&db_url);
    assert!(backends_on(&observer, &name).await >= 1);
    assert_eq!(redis_clients(&redis.url()).await, 2);
    // …and none after close_all, which is idempotent.
    io.close_all().await;
    io.close_all().await;
    assert!(io.is_closed());
    // A closed connection's backend leaves pg_stat_activity when its
    // process has exited, a moment after the client hung up: wait for it,
    // a bounded time (a connection still open stays).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut open = backends_on(&observer, &name).await;
    while open > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        open = backends_on(&observer, &name).await;
    }
    assert_eq!(open, 0, "backends left on the server after close_all");
    let mut clients = redis_clients(&redis.url()).await;
    while clients > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        clients = redis_clients(&redis.url()).await;
    }
    assert_eq!(clients, 0, "Redis clients left after close_all");
    assert!(
        io.execute_query::<(i64,)>("main", "SELECT 1", params![])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn health_names_the_dependency_that_fails() {
    let mut redis = TempRedis::start().unwrap();
    let io = IoManager::with_registry(Default::default(), Registry::new());
    let mut c = ConnectionConfig::from_url("sessions", &redis.url()).unwrap();
    c.retry_delay = Duration::from_millis(100);
    io.initialize_redis(&c).await.unwrap();
    let mut db = ConnectionConfig::new("local", Kind::Sqlite);
    db.database = Some(":memory:".into());
    io.initialize_database(&db).await.unwrap();
    assert!(matches!(
        io.initialize_database(&db).await,
        Err(IoError::Duplicate {
            kind: "database",
            ..
        })
    ));
    redis.stop();
    let health = io.health(Duration::from_millis(500)).await;
    assert!(!health.healthy);
    assert_eq!(health.failing(), ["redis:sessions"]);
    io.close_all().await;
}

#[tokio::test]
async fn one_in_flight_limit_is_shared_by_every_api_of_the_manager() {
    let upstream = Upstream::start().await.unwrap();
    upstream
        .state
        .latency_ms
        .store(50, std::sync::atomic::Ordering::Relaxed);
    let (names, get) = lookup(vec![
        ("API_ONE_BASE_URL".into(), upstream.base_url()),
        ("API_TWO_BASE_URL".into(), upstream.base_url()),
        ("IO_MAX_CONCURRENT_REQUESTS".into(), "4".into()),
    ]);
    let io = IoManager::open_with_registry(
        &IoConfig::from_lookup(&names, &get).unwrap(),
        Registry::new(),
    )
    .await
    .unwrap();
    let batch = |tag: &str| -> Vec<_> {
        (0..20)
            .map(|i| {
                sluice_api_client::ApiRequest::get(
                    sluice_api_client::ApiPath::new()
                        .push("data")
                        .push(&format!("{tag}{i}")),
                )
            })
            .collect()
    };
    let (one, two) = tokio::join!(
        io.make_batch_api_requests("one", batch("a")),
        io.make_batch_api_requests("two", batch("b"))
    );
    assert!(
        one.unwrap()
            .iter()
            .chain(two.unwrap().iter())
            .all(Result::is_ok)
    );
    let most = upstream
        .state
        .max_in_flight
        .load(std::sync::atomic::Ordering::Relaxed);
    // Two separate limits of 4 would have let 8 through.
    assert!((2..=4).contains(&most), "{most} at once");
    io.close_all().await;
}

#[tokio::test]
async fn key_value_operations_and_a_pipeline_on_real_redis() {
    let io = IoManager::with_registry(Default::default(), Registry::new());
    let mut c = ConnectionConfig::from_url("kv", &services::redis_url()).unwrap();
    c.pool_size = 2;
    let kv = io.initialize_redis(&c).await.unwrap();
    let p = services::redis_prefix("kv");
    let k = |s: &str| format!("{p}{s}");

    kv.set(&k("text"), "héllo", None).await.unwrap();
    kv.set(
        &k("bytes"),
        Bytes::from_static(&[0, 159, 146, 150]),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert_eq!(
        kv.get_string(&k("text")).await.unwrap().as_deref(),
        Some("héllo")
    );
    assert_eq!(
        kv.get(&k("bytes")).await.unwrap().unwrap().as_ref(),
        &[0, 159, 146, 150]
    );
    assert!(matches!(
        kv.get_string(&k("bytes")).await,
        Err(KvError::NotText)
    ));
    assert_eq!(kv.get(&k("absent")).await.unwrap(), None);
    let many = kv
        .mget(&[&k("text"), &k("absent"), &k("bytes")])
        .await
        .unwrap();
    assert_eq!(
        many.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert_eq!(kv.incr(&k("n"), 5).await.unwrap(), 5);
    assert_eq!(kv.incr(&k("n"), -2).await.unwrap(), 3);
    // INCR on text is refused by Redis: a command error, not an outage.
    assert!(matches!(
        kv.incr(&k("text"), 1).await,
        Err(KvError::Command { .. })
    ));
    // A short TTL expires.
    kv.set(&k("brief"), "x", Some(Duration::from_millis(150)))
        .await
        .unwrap();
    assert!(
        kv.expire(&k("text"), Duration::from_millis(150))
            .await
            .unwrap()
    );
    assert!(
        !kv.expire(&k("absent"), Duration::from_secs(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(kv.get(&k("brief")).await.unwrap(), None);
    assert_eq!(kv.get(&k("text")).await.unwrap(), None);
    assert_eq!(
        kv.del(&[&k("n"), &k("absent"), &k("bytes")]).await.unwrap(),
        2
    );

    // A pipeline: one round trip, one reply per command, in order; the
    // command Redis refuses fails alone.
    let replies = kv
        .pipeline()
        .set(&k("p"), "v", None)
        .incr(&k("c"), 2)
        .incr(&k("p"), 1)
        .get(&k("p"))
        .expire(&k("c"), Duration::from_secs(60))
        .del(&[&k("c")])
        .run()
        .await
        .unwrap();
    assert_eq!(replies.len(), 6);
    assert!(matches!(&replies[0], Ok(Reply::Status(s)) if s == "OK"));
    assert_eq!(replies[1].as_ref().unwrap().as_int(), Some(2));
    assert!(matches!(replies[2], Err(KvError::Command { .. })));
    assert_eq!(replies[3].as_ref().unwrap().as_bytes(), Some(&b"v"[..]));
    assert_eq!(replies[4].as_ref().unwrap().as_int(), Some(1));
    assert_eq!(replies[5].as_ref().unwrap().as_int(), Some(1));
    assert_eq!(kv.get(&k("c")).await.unwrap(), None);

    let m = io.redis_metrics("kv").unwrap();
    assert!(
        m.operations["read"].count >= 7 && m.operations["write"].count >= 9,
        "{m:?}"
    );
    assert!(m.hits >= 4 && m.misses >= 3, "{m:?}");
    io.close_all().await;
}

#[tokio::test]
async fn a_dead_redis_opens_the_breaker_and_the_store_fails_fast() {
    let mut redis = TempRedis::start().unwrap();
    let mut c = ConnectionConfig::from_url("kv_dead", &redis.url()).unwrap();
    c.retry_delay = Duration::from_millis(100);
    let io = IoManager::with_registry(Default::default(), Registry::new());
    let kv = io
        .initialize_redis(&c)
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    kv.set("k", "v", None).await.unwrap();
    redis.freeze();
    for _ in 0..3 {
        assert!(matches!(
            kv.get("k").await,
            Err(KvError::Unavailable { .. })
        ));
    }
    let started = Instant::now();
    assert!(matches!(
        kv.get("k").await,
        Err(KvError::CircuitOpen { .. })
    ));
    assert!(started.elapsed() < Duration::from_millis(50));
    redis.thaw();
    io.close_all().await;
}

/// Statements that take as long as they do, with one failing: results in
/// input order, the failure alone, never more at once than the pool has.
async fn batch_on(db: &Database, echo: &'static str) {
    let statements: Vec<(Sql, Params)> = (0..8i64)
        .map(|i| {
            if i == 3 {
                (Sql::from("SELECT no_such_column"), Params::default())
            } else {
                (Sql::from(echo), params![i])
            }
        })
        .collect();
    let results = db.batch_query::<(i64,)>(statements).await;
    assert_eq!(results.len(), 8);
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert!(r.is_err());
        } else {
            assert_eq!(r.as_ref().unwrap(), &vec![(i as i64,)]);
        }
    }
    let executed = db
        .batch_execute(vec![(
            Sql::from("CREATE TABLE IF NOT EXISTS b (id INTEGER)"),
            Params::default(),
        )])
        .await;
    assert!(executed[0].is_ok());
}

#[tokio::test]
async fn database_batches_on_postgres_are_bounded_by_the_pool() {
    let url = services::fresh_database("io_batch").await;
    let mut c = ConnectionConfig::from_url("batch_pg", &url).unwrap();
    c.pool_size = 3;
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    batch_on(&db, "SELECT $1::int8 + 0 * length(pg_sleep(0.05)::text)").await;
    // Six sleeps of 200 ms on three connections: never more than three
    // backends at once, two rounds.
    let started = Instant::now();
    let pids = db
        .batch_query::<(i32,)>((0..6).map(|_| {
            (
                Sql::from("SELECT pg_backend_pid() FROM pg_sleep(0.2)"),
                Params::default(),
            )
        }))
        .await;
    let elapsed = started.elapsed();
    let distinct: HashSet<i32> = pids.into_iter().map(|r| r.unwrap()[0].0).collect();
    assert!(distinct.len() <= 3, "{distinct:?}");
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
}

#[tokio::test]
async fn database_batches_on_sqlite() {
    let dir = services::scratch_dir("io_batch_sqlite");
    let mut c = ConnectionConfig::new("batch_sqlite", Kind::Sqlite);
    c.database = Some(dir.join("b.db").display().to_string());
    c.pool_size = 2;
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    batch_on(&db, "SELECT CAST($1 AS INTEGER)").await;
}

#[tokio::test]
async fn max_overflow_grows_under_load_and_shrinks_when_idle() {
    let url = services::fresh_database("io_overflow").await;
    let mut c = ConnectionConfig::from_url("overflow", &url).unwrap();
    c.pool_size = 2;
    c.max_overflow = 3;
    c.idle_timeout = Duration::from_millis(500);
    let pool = SqlPool::open(&c).await.unwrap();
    let db = Database::with_registry(pool.clone(), &Registry::new());
    assert_eq!(pool.stats().max, 5);
    // The pool proper is kept warm.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().size < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.stats().size, 2);
    // Five at once: the overflow opens.
    let busy = db.batch_query::<(String,)>(
        (0..5).map(|_| (Sql::from("SELECT pg_sleep(0.3)::text"), Params::default())),
    );
    let watch = async {
        let mut most = 0;
        for _ in 0..20 {
            most = most.max(pool.stats().size);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        most
    };
    let (results, most) = tokio::join!(busy, watch);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(most, 5);
    // Idle again: the overflow closes, the pool proper stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().size > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool.stats().size, 2);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(pool.stats().size, 2);
}

#[tokio::test]
async fn lifetime_jitter_spreads_reconnects() {
    let url = services::fresh_database("io_jitter").await;
    let mut c = ConnectionConfig::from_url("jitter", &url).unwrap();
    c.pool_size = 6;
    c.min_idle = 6;
    c.max_lifetime = Duration::from_secs(2);
    c.lifetime_jitter = 0.5;
    // Before the pool opens: every connection is younger than this.
    let started = Instant::now();
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    let mut first_seen: HashMap<i32, Duration> = HashMap::new();
    while started.elapsed() < Duration::from_millis(2600) {
        let pids = db
            .batch_query::<(i32,)>((0..6).map(|_| {
                (
                    Sql::from("SELECT pg_backend_pid() FROM pg_sleep(0.01)"),
                    Params::default(),
                )
            }))
            .await;
        for pid in pids {
            let pid = pid.unwrap()[0].0;
            first_seen.entry(pid).or_insert(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut replaced: Vec<Duration> = first_seen
        .values()
        .copied()
        .filter(|t| *t > Duration::from_millis(800))
        .collect();
    replaced.sort();
    // Each of the six first connections was replaced once, between half
    // its lifetime and all of it, and not all at once.
    assert!(replaced.len() >= 6, "{replaced:?}");
    let spread = replaced[5] - replaced[0];
    assert!(
        spread >= Duration::from_millis(150),
        "replacements at {replaced:?}"
    );
    assert!(replaced[0] >= Duration::from_millis(1000), "{replaced:?}");
}

#[tokio::test]
async fn a_bad_group_fails_naming_its_variable_and_opens_nothing() {
    let (names, get) = lookup(vec![
        ("DB_MAIN_URL".into(), "postgres://127.0.0.1:1/none".into()),
        ("DB_MAIN_RETRY_ATTEMPTS".into(), "1".into()),
        ("DB_MAIN_CONNECT_TIMEOUT".into(), "0.2".into()),
    ]);
    let config = IoConfig::from_lookup(&names, &get).unwrap();
    let err = IoManager::open_with_registry(&config, Registry::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IoError::Open { name, .. } if name == "main"),
        "{err}"
    );
    let (names, get) = lookup(vec![("REDIS_CACHE_URL".into(), "http://nope".into())]);
    let err = IoConfig::from_lookup(&names, &get).unwrap_err();
    assert_eq!(err.variable, "REDIS_CACHE_URL");
    let _ = Backend::Redis;
}
