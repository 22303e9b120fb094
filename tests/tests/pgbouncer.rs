//! `DB_<NAME>_PGBOUNCER=true` against a real PgBouncer 1.18 in transaction
//! pooling (few server connections, many clients): statements,
//! transactions, migrations and the server's routes under concurrency.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_db::{Database, params};
use sluice_http_server::{AppState, ServerConfig, serve};
use sluice_metrics::Registry;
use sluice_pool::{ConnectionConfig, SqlPool};
use sluice_tests::client::TestClient;
use sluice_tests::provision::{TempPgBouncer, TempPostgres};
use tokio::sync::oneshot;

/// PostgreSQL, and PgBouncer in front of it with 4 server connections.
async fn bouncer() -> (TempPostgres, TempPgBouncer) {
    tokio::task::spawn_blocking(|| {
        let pg = TempPostgres::start().unwrap();
        let bouncer = TempPgBouncer::start(pg.port(), 4).unwrap();
        (pg, bouncer)
    })
    .await
    .unwrap()
}

async fn through(bouncer: &TempPgBouncer, name: &str, pgbouncer: bool) -> Database {
    let mut c = ConnectionConfig::from_url(name, &bouncer.url("postgres")).unwrap();
    c.pool_size = 40;
    c.pgbouncer = pgbouncer;
    c.retry_attempts = 1;
    Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new())
}

#[tokio::test]
async fn statements_and_transactions_from_40_connections_onto_4_all_succeed() {
    let (_pg, bouncer) = bouncer().await;
    let db = through(&bouncer, "bounced", true).await;
    db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)", ())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for worker in 0..40i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for n in 0..25i64 {
                let id = worker * 1000 + n;
                if let Err(e) = db
                    .execute("INSERT INTO t (id, v) VALUES ($1, $2)", params![id, "x"])
                    .await
                {
                    errors.push(format!("insert: {e:?}"));
                }
                match db
                    .query_one::<(i64, String)>("SELECT id, v FROM t WHERE id = $1", params![id])
                    .await
                {
                    Ok(row) => assert_eq!(row, (id, "x".to_owned())),
                    Err(e) => errors.push(format!("select: {e:?}")),
                }
                let tx = db
                    .transaction(|tx| {
                        Box::pin(async move {
                            tx.execute("UPDATE t SET v = $1 WHERE id = $2", params!["y", id])
                                .await?;
                            let (v,): (String,) = tx
                                .query_one("SELECT v FROM t WHERE id = $1", params![id])
                                .await?;
                            Ok(v)
                        })
                    })
                    .await;
                match tx {
                    Ok(v) => assert_eq!(v, "y"),
                    Err(e) => errors.push(format!("transaction: {e:?}")),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.unwrap());
    }
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    let (n,): (i64,) = db
        .query_one("SELECT count(*) FROM t WHERE v = 'y'", ())
        .await
        .unwrap();
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn without_pgbouncer_mode_named_statements_fail_behind_it() {
    // The reason for the setting: named prepared statements live on one
    // server connection, and PgBouncer moves clients between them.
    let (_pg, bouncer) = bouncer().await;
    let db = through(&bouncer, "unbounced", false).await;
    let mut tasks = Vec::new();
    for worker in 0..40i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for n in 0..25i64 {
                if db
                    .query_one::<(i64,)>("SELECT $1::int8 + $2::int8", params![worker, n])
                    .await
                    .is_err()
                {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap();
    }
    assert!(
        failed > 0,
        "named statements all succeeded behind PgBouncer"
    );
}

#[tokio::test]
async fn the_server_migrates_and_serves_through_pgbouncer() {
    let (_pg, bouncer) = bouncer().await;
    let db = through(&bouncer, "primary", true).await;
    db.migrate().await.unwrap();
    // Migrating again finds nothing to do.
    db.migrate().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        AppState::new(ServerConfig::default(), db.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let client = TestClient::new(base);
    // 50 concurrent creates of one email: one 201, the rest 409.
    let mut creates = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        creates.push(tokio::spawn(async move {
            client
                .post_json(
                    "/users",
                    &serde_json::json!({"name": "Ada", "email": "ada@example.com", "bio": "math"}),
                )
                .await
                .status
        }));
    }
    let mut statuses = Vec::new();
    for c in creates {
        statuses.push(c.await.unwrap());
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
    // Many different users at once, then each read back.
    let mut ids = Vec::new();
    let mut posts = Vec::new();
    for n in 0..60 {
        let client = client.clone();
        posts.push(tokio::spawn(async move {
            let reply = client
                .post_json(
                    "/users",
                    &serde_json::json!({"name": "U", "email": format!("u{n}@example.com")}),
                )
                .await;
            (reply.status, reply.json()["user_id"].as_i64())
        }));
    }
    for p in posts {
        let (status, id) = p.await.unwrap();
        assert_eq!(status, 201);
        ids.push(id.unwrap());
    }
    for id in ids {
        let reply = client.get(&format!("/users/{id}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
    }
    let (users, profiles): (i64, i64) = db
        .query_one(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM profiles)",
            (),
        )
        .await
        .unwrap();
    assert_eq!((users, profiles), (61, 61));
    drop(stop);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_thousand_client_connections_share_twenty_server_connections() {
    let (pg, bouncer) = tokio::task::spawn_blocking(|| {
        let pg = TempPostgres::start().unwrap();
        let bouncer = TempPgBouncer::start(pg.port(), 20).unwrap();
        (pg, bouncer)
    })
    .await
    .unwrap();
    let mut c = ConnectionConfig::from_url("thousand", &bouncer.url("postgres")).unwrap();
    c.pool_size = 1000;
    c.pgbouncer = true;
    c.acquire_timeout = Duration::from_secs(30);
    let db = Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new());
    // Every task holds its own client connection while it queries, so
    // that 1,000 are open at once.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let mut tasks = Vec::new();
    for n in 0..1000i64 {
        let (db, barrier) = (db.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let conn = db.pool().acquire().await.map_err(|e| e.to_string())?;
            barrier.wait().await;
            drop(conn);
            let mut errors = 0;
            for i in 0..5i64 {
                match db
                    .query_one::<(i64,)>("SELECT $1::int8 * 10 + $2::int8", params![n, i])
                    .await
                {
                    Ok((v,)) if v == n * 10 + i => {}
                    _ => errors += 1,
                }
            }
            Ok::<_, String>(errors)
        }));
    }
    // PostgreSQL's own count of sessions, sampled while the load runs
    // (the sampler's own psql sessions, which may linger a moment after
    // it exits, left out).
    let pg = std::sync::Arc::new(pg);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (pg, running) = (pg.clone(), running.clone());
        tokio::task::spawn_blocking(move || {
            let mut most = 0u32;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let sessions = pg
                    .psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name <> 'psql'")
                    .unwrap();
                most = most.max(sessions.parse().unwrap());
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap().unwrap();
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.await.unwrap();
    assert_eq!(errors, 0);
    assert_eq!(db.pool().stats().size, 1000, "{:?}", db.pool().stats());
    assert!(most > 0 && most <= 20, "{most} server connections at most");
    eprintln!(
        "1,000 client connections, at most {most} server connections, 5,000 queries, 0 errors"
    );
}
