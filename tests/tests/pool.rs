//! sluice-pool against real PostgreSQL, SQLite and Redis.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sluice_pool::{ConnectionConfig, Error, Kind, LentConnection, RedisPool, Secret, SqlPool};
use sluice_tests::provision::free_port;
use sluice_tests::services;

async fn select_one(pool: &SqlPool) -> Result<i64, Error> {
    let mut conn = pool.acquire().await?;
    let value: (i64,) = match conn.lent_mut() {
        LentConnection::Postgres(c) => sqlx::query_as("SELECT 1::int8")
            .fetch_one(&mut **c)
            .await
            .unwrap(),
        LentConnection::Sqlite(c) => sqlx::query_as("SELECT 1")
            .fetch_one(&mut **c)
            .await
            .unwrap(),
        _ => unreachable!("only two SQL backends"),
    };
    Ok(value.0)
}

#[tokio::test]
async fn postgres_pool_opens_warms_and_reports_stats() {
    let mut config =
        ConnectionConfig::from_url("pg_stats", &services::fresh_database("pool_stats").await)
            .unwrap();
    config.min_idle = 2;
    config.pool_size = 4;
    let pool = SqlPool::open(&config).await.unwrap();
    assert_eq!(pool.kind(), Kind::Postgres);
    pool.ping().await.unwrap();
    let warm = pool.stats();
    assert!(warm.size >= 2, "min_idle connections are opened: {warm:?}");
    assert_eq!(warm.max, 4);
    let held = pool.acquire().await.unwrap();
    // sqlx returns a dropped connection (the ping's) to the idle queue
    // asynchronously; give it a moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(2);
    while pool.stats().in_use != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = pool.stats();
    assert_eq!(busy.in_use, 1, "{busy:?}");
    assert_eq!(busy.idle + busy.in_use, busy.size, "{busy:?}");
    drop(held);
    assert_eq!(select_one(&pool).await.unwrap(), 1);
    pool.close().await;
    assert!(pool.is_closed());
    assert!(matches!(pool.acquire().await, Err(Error::Closed { .. })));
}

#[tokio::test]
async fn cancelled_acquires_leave_no_waiters_behind() {
    let mut config = ConnectionConfig::from_url(
        "pg_waiting",
        &services::fresh_database("pool_waiting").await,
    )
    .unwrap();
    config.pool_size = 1;
    let pool = SqlPool::open(&config).await.unwrap();
    let held = pool.acquire().await.unwrap();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let pool = pool.clone();
        waiters.spawn(async move { pool.acquire().await.map(drop) });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().waiting < 50 {
        assert!(Instant::now() < deadline, "{:?}", pool.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Clients gone: every waiting acquire is cancelled mid-wait.
    waiters.abort_all();
    while waiters.join_next().await.is_some() {}
    assert_eq!(pool.stats().waiting, 0, "{:?}", pool.stats());
    drop(held);
    assert_eq!(select_one(&pool).await.unwrap(), 1);
}

#[tokio::test]
async fn close_waits_for_borrowed_connections() {
    let config =
        ConnectionConfig::from_url("pg_close", &services::fresh_database("pool_close").await)
            .unwrap();
    let pool = SqlPool::open(&config).await.unwrap();
    let conn = pool.acquire().await.unwrap();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(conn);
        Instant::now()
    });
    pool.close().await;
    let closed_at = Instant::now();
    let released_at = holder.await.unwrap();
    assert!(
        closed_at >= released_at,
        "close returned before the borrowed connection came back"
    );
}

#[tokio::test]
async fn sqlite_file_pool_uses_wal_foreign_keys_and_many_connections() {
    let dir = services::scratch_dir("sqlite");
    let mut config = ConnectionConfig::new("sqlite_file", Kind::Sqlite);
    config.database = Some(dir.join("app.db").to_string_lossy().into_owned());
    config.pool_size = 4;
    let pool = SqlPool::open(&config).await.unwrap();
    let mut conn_a = pool.acquire().await.unwrap();
    let mut conn_b = pool.acquire().await.unwrap();
    let (LentConnection::Sqlite(a), LentConnection::Sqlite(b)) =
        (conn_a.lent_mut(), conn_b.lent_mut())
    else {
        panic!("sqlite")
    };
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut **a)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
        .fetch_one(&mut **b)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .execute(&mut **a)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut **a)
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
        .fetch_one(&mut **b)
        .await
        .unwrap();
    assert_eq!(
        n, 1,
        "a second pooled connection sees the first one's write"
    );
    assert_eq!(pool.stats().in_use, 2);
    drop((conn_a, conn_b));
    pool.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sqlite_in_memory_is_shared_by_the_pool_and_private_to_it() {
    let pool = SqlPool::open(&ConnectionConfig::from_url("mem_a", "sqlite::memory:").unwrap())
        .await
        .unwrap();
    let other = SqlPool::open(&ConnectionConfig::from_url("mem_b", "sqlite::memory:").unwrap())
        .await
        .unwrap();
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    let (LentConnection::Sqlite(a), LentConnection::Sqlite(b)) = (a.lent_mut(), b.lent_mut())
    else {
        panic!("sqlite")
    };
    sqlx::query("CREATE TABLE shared (id INTEGER)")
        .execute(&mut **a)
        .await
        .unwrap();
    sqlx::query("SELECT * FROM shared")
        .execute(&mut **b)
        .await
        .unwrap();
    let mut c = other.acquire().await.unwrap();
    let LentConnection::Sqlite(c) = c.lent_mut() else {
        panic!("sqlite")
    };
    assert!(
        sqlx::query("SELECT * FROM shared")
            .execute(&mut **c)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unreachable_server_fails_once_naming_the_connection_without_secrets() {
    let port = free_port().unwrap();
    let mut config = ConnectionConfig::from_url(
        "orders",
        &format!("postgres://ada:hunter2@127.0.0.1:{port}/app"),
    )
    .unwrap();
    config.retry_attempts = 2;
    config.retry_delay = Duration::from_millis(50);
    config.connect_timeout = Duration::from_millis(500);
    config.acquire_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = SqlPool::open(&config).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let cause = std::error::Error::source(&err).unwrap().to_string();
    let text = format!("{err} {cause} {err:?} {config:?}");
    assert_eq!(err.to_string(), "cannot connect orders (postgresql)");
    assert!(cause.contains("after 2 attempts"), "{cause}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn redis_pool_connects_pings_and_reports_stats() {
    let mut config = ConnectionConfig::from_url("cache", &services::redis_url()).unwrap();
    config.pool_size = 3;
    let pool = RedisPool::open(&config).await.unwrap();
    pool.ping().await.unwrap();
    let stats = pool.stats();
    assert_eq!((stats.size, stats.idle, stats.max), (3, 3, 3));
    pool.close().await;
}

#[tokio::test]
async fn redis_unreachable_fails_with_the_connection_name() {
    let port = free_port().unwrap();
    let mut config = ConnectionConfig::new("sessions", Kind::Redis);
    config.port = Some(port);
    config.password = Some(Secret::new("hunter2".into()));
    config.retry_attempts = 2;
    config.retry_delay = Duration::from_millis(50);
    config.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = RedisPool::open(&config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.to_string(), "cannot connect sessions (redis)");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test]
async fn the_registry_holds_pools_by_name_and_closes_them_all() {
    use sluice_pool::{AnyPool, Pools};
    let pools = Pools::new();
    let sql = SqlPool::open(&ConnectionConfig::from_url("reg_sql", "sqlite::memory:").unwrap())
        .await
        .unwrap();
    let redis =
        RedisPool::open(&ConnectionConfig::from_url("reg_redis", &services::redis_url()).unwrap())
            .await
            .unwrap();
    pools.insert("primary", AnyPool::Sql(sql.clone()));
    pools.insert("cache", AnyPool::Redis(redis));
    let names: Vec<String> = pools.all().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["cache", "primary"]);
    for (_, pool) in pools.all() {
        pool.ping().await.unwrap();
        assert!(pool.stats().max >= 1);
    }
    assert!(pools.get("missing").is_none());
    pools.close_all().await;
    assert!(sql.is_closed());
}

#[tokio::test]
async fn postgres_over_tls_is_verified_and_never_downgraded() {
    use sluice_tests::certs::throwaway;
    use sluice_tests::provision::TempPostgres;

    let certs = throwaway(&services::scratch_dir("pg_tls")).unwrap();
    let ca = certs.ca.clone();
    let other_ca = throwaway(&services::scratch_dir("pg_tls_other")).unwrap();
    let (tls_pg, plain_pg) = tokio::task::spawn_blocking(move || {
        let mut tls = TempPostgres::start().unwrap();
        tls.enable_tls(&certs.cert, &certs.key).unwrap();
        (tls, TempPostgres::start().unwrap())
    })
    .await
    .unwrap();
    let verified = |pg: &TempPostgres, ca: &std::path::Path| {
        let mut config = ConnectionConfig::from_url(
            "secure",
            &format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                pg.url(),
                ca.display()
            ),
        )
        .unwrap();
        config.retry_attempts = 1;
        config
    };

    // Trusted CA, matching name: connected, and the session is encrypted.
    let pool = SqlPool::open(&verified(&tls_pg, &ca)).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let LentConnection::Postgres(c) = conn.lent_mut() else {
        unreachable!("a PostgreSQL pool")
    };
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut **c)
            .await
            .unwrap();
    assert!(ssl, "the session is not encrypted");
    drop(conn);

    // Another CA: refused, with one error naming the connection.
    let err = SqlPool::open(&verified(&tls_pg, &other_ca.ca))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cannot connect secure (postgresql)");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("certificate"), "{cause}");

    // A server without TLS: verify-full never falls back to plain text.
    let err = SqlPool::open(&verified(&plain_pg, &ca)).await.unwrap_err();
    assert_eq!(err.to_string(), "cannot connect secure (postgresql)");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.to_lowercase().contains("tls"), "{cause}");
    drop((tls_pg, plain_pg));
}
