//! sluice-pool's handoff against a real PostgreSQL: a connection whose work
//! finished cleanly goes straight to the next caller (no release check);
//! one left in a transaction, or with a queued rollback, never does.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sluice_pool::{ConnectionConfig, LentConnection, SqlConnection, SqlPool};
use sluice_tests::services;
use sqlx::Connection as _;

async fn pool(test: &str, size: u32) -> SqlPool {
    let mut config =
        ConnectionConfig::from_url(test, &services::fresh_database(test).await).unwrap();
    config.pool_size = size;
    config.min_idle = 0;
    // Shorter than the sweep that gives kept connections back to sqlx
    // (1 s): a caller waiting for a connection that was kept instead of
    // handed to it times out.
    config.acquire_timeout = Duration::from_millis(800);
    SqlPool::open(&config).await.unwrap()
}

/// The server process behind `conn`: the same number means the same
/// connection.
async fn backend_pid(conn: &mut SqlConnection) -> i32 {
    let LentConnection::Postgres(c) = conn.lent_mut() else {
        unreachable!("a PostgreSQL pool");
    };
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **c)
        .await
        .unwrap()
}

/// Waits (bounded) until `check` holds; the last value is returned.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection held (with its backend pid) and a task waiting to acquire
/// one, which answers with the backend pid it got.
async fn held_and_waiting(pool: &SqlPool) -> (SqlConnection, i32, tokio::task::JoinHandle<i32>) {
    let mut held = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut held).await;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            backend_pid(&mut conn).await
        }
    });
    assert!(eventually(async || pool.stats().waiting == 1).await);
    (held, pid, waiter)
}

// A current-thread runtime: sqlx's release task cannot run until this
// test yields, so "kept at once" and "went to sqlx" are told apart.
#[tokio::test(flavor = "current_thread")]
async fn a_finished_connection_is_kept_at_once_and_lent_again() {
    let pool = pool("handoff_kept", 2).await;
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    conn.finished();
    drop(conn);
    // No yield since the drop: only the handoff can have made it idle.
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.in_use), (1, 0), "{stats:?}");
    let mut again = pool.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut again).await, pid);
    // Not marked finished after its last statement: sqlx checks it.
    drop(again);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.in_use), (0, 1), "{stats:?}");
    assert!(eventually(async || pool.stats().idle == 1).await);
    pool.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiting_caller_gets_the_finished_connection_from_its_holder() {
    let pool = pool("handoff_waiter", 1).await;
    let (mut held, pid, waiter) = held_and_waiting(&pool).await;
    held.finished();
    drop(held);
    assert_eq!(waiter.await.unwrap(), pid, "the same connection");
    assert_eq!(pool.stats().size, 1, "no second connection was opened");
    pool.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiting_caller_also_gets_a_connection_that_went_back_through_sqlx() {
    let pool = pool("handoff_via_sqlx", 1).await;
    let (held, pid, waiter) = held_and_waiting(&pool).await;
    // Not finished: sqlx checks it and lends it to the caller waiting on
    // it (within the acquire timeout of 800 ms).
    drop(held);
    assert_eq!(waiter.await.unwrap(), pid, "the same connection");
    pool.close().await;
}

// A caller waiting for a handoff waits alone for at most 50 ms
// (`HANDOFF_ALONE`) before it asks sqlx. A connection that goes back
// through sqlx's check (not finished) ends that wait at once: before,
// the caller sat out the 50 ms while the connection was idle in sqlx.
// Five rounds, four of them must beat the 50 ms: without the change every
// round takes at least 50 ms, by the timer, so a slow round trip to the
// server now and then cannot make this pass or fail by chance.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_going_back_through_sqlx_sends_the_waiting_caller_after_it_at_once() {
    let pool = pool("handoff_sent_after", 1).await;
    let mut quick = 0;
    for _ in 0..5 {
        let mut held = pool.acquire().await.unwrap();
        let pid = backend_pid(&mut held).await;
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move {
                let asked = Instant::now();
                let mut conn = pool.acquire().await.unwrap();
                let waited = asked.elapsed();
                (backend_pid(&mut conn).await, waited)
            }
        });
        // One thread: the waiter registers as soon as this yields.
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let (got, waited) = waiter.await.unwrap();
        assert_eq!(got, pid, "the same connection");
        if waited < Duration::from_millis(50) {
            quick += 1;
        }
    }
    assert!(quick >= 4, "{quick} of 5 rounds under 50 ms");
    pool.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_transaction_goes_through_sqlx_and_its_locks_are_released() {
    let pool = pool("handoff_tx", 2).await;
    let mut conn = pool.acquire().await.unwrap();
    {
        let LentConnection::Postgres(c) = conn.lent_mut() else {
            unreachable!("a PostgreSQL pool");
        };
        let mut tx = sqlx::Connection::begin(&mut **c).await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock(4242)")
            .execute(&mut *tx)
            .await
            .unwrap();
        // Dropped without commit: sqlx queues a ROLLBACK, unsent.
    }
    // A caller that (wrongly) says its work finished.
    conn.finished();
    drop(conn);
    let stats = pool.stats();
    assert_eq!(stats.idle, 0, "not kept with a queued rollback: {stats:?}");
    // sqlx's release check sends the rollback: the lock is free.
    let other = pool.clone();
    assert!(
        eventually(async || {
            let mut conn = other.acquire().await.unwrap();
            let LentConnection::Postgres(c) = conn.lent_mut() else {
                unreachable!("a PostgreSQL pool");
            };
            let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(4242)")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            free
        })
        .await
    );

    // A transaction still open (not dropped) is not kept either.
    let mut conn = pool.acquire().await.unwrap();
    let LentConnection::Postgres(c) = conn.lent_mut() else {
        unreachable!("a PostgreSQL pool");
    };
    let open = sqlx::Connection::begin(&mut **c).await.unwrap();
    // Neither committed nor rolled back: the transaction stays open.
    std::mem::forget(open);
    conn.finished();
    let before = pool.stats().idle;
    drop(conn);
    assert_eq!(pool.stats().idle, before, "not kept: {:?}", pool.stats());
    pool.close().await;
}

#[tokio::test]
async fn unused_kept_connections_go_back_to_sqlx_and_close_does_not_wait_for_them() {
    let pool = pool("handoff_sweep", 3).await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(pool.acquire().await.unwrap());
    }
    for mut conn in conns {
        backend_pid(&mut conn).await;
        conn.finished();
    }
    let sqlx_pool = pool.as_postgres().unwrap().clone();
    assert_eq!(pool.stats().idle, 3, "{:?}", pool.stats());
    assert_eq!(
        sqlx_pool.num_idle(),
        0,
        "kept, so lent as far as sqlx knows"
    );
    // After a second unused, the sweep gives them back to sqlx.
    assert!(eventually(async || sqlx_pool.num_idle() == 3).await);
    assert_eq!(pool.stats().idle, 3);

    // Kept again, then closed: close must not wait for them.
    let mut conn = pool.acquire().await.unwrap();
    backend_pid(&mut conn).await;
    conn.finished();
    drop(conn);
    tokio::time::timeout(Duration::from_secs(5), pool.close())
        .await
        .expect("close returns with a kept connection");
    assert!(pool.is_closed());
}

#[tokio::test]
async fn a_kept_connection_past_its_lifetime_is_not_lent_again() {
    let mut config = ConnectionConfig::from_url(
        "handoff_lifetime",
        &services::fresh_database("handoff_lifetime").await,
    )
    .unwrap();
    config.pool_size = 1;
    config.min_idle = 0;
    config.max_lifetime = Duration::from_millis(300);
    config.lifetime_jitter = 0.0;
    let pool = SqlPool::open(&config).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let first = backend_pid(&mut conn).await;
    conn.finished();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut conn = pool.acquire().await.unwrap();
    assert_ne!(
        backend_pid(&mut conn).await,
        first,
        "replaced at its lifetime"
    );
    drop(conn);
    pool.close().await;
}

/// Connections open on `database` (of the test server), counted from
/// another connection.
async fn connections_to(database: &str) -> i64 {
    let mut admin = sqlx::PgConnection::connect(&services::database_url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

// A plain test: the pool is dropped outside the runtime it was opened in,
// as a program that opens it inside `block_on` does.
#[test]
fn a_pool_dropped_outside_its_runtime_with_a_kept_connection_closes_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = runtime.block_on(services::fresh_database("handoff_outside"));
    let database = url.rsplit('/').next().unwrap();
    let database = database.split('?').next().unwrap().to_owned();
    let pool = runtime.block_on(async {
        let config = ConnectionConfig::from_url("handoff_outside", &url).unwrap();
        let pool = SqlPool::open(&config).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        backend_pid(&mut conn).await;
        conn.finished();
        drop(conn);
        assert_eq!(pool.stats().idle, 1, "kept");
        pool
    });
    // Outside the runtime: this used to panic in sqlx ("requires a Tokio
    // context") when the kept connection was dropped.
    drop(pool);
    assert!(runtime.block_on(eventually(async || connections_to(&database).await == 0)));
}
