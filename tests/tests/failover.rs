//! Several PostgreSQL hosts with `target_session_attrs=read-write`, on
//! real servers: a streaming replica promoted after its primary is
//! stopped, a primary fenced read-only under open connections (SQLSTATE
//! 25006 where `SELECT 1` still succeeds), and a first host that is a
//! standby at start-up.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_db::{Database, DbError, params};
use sluice_metrics::Registry;
use sluice_pool::{ConnectionConfig, SqlPool};
use sluice_tests::provision::TempPostgres;

/// Writes resume this soon after the replica is promoted (the pool's
/// probe tries the hosts every `retry_delay`, 200 ms here).
const RESUMED_WITHIN: Duration = Duration::from_secs(5);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn open(hosts: &[&TempPostgres], pool_size: u32) -> Database {
    let list: Vec<String> = hosts
        .iter()
        .map(|pg| format!("127.0.0.1:{}", pg.port()))
        .collect();
    let url = format!(
        "postgres://postgres@{}/postgres?target_session_attrs=read-write",
        list.join(",")
    );
    let mut c = ConnectionConfig::from_url("primary", &url).unwrap();
    c.pool_size = pool_size;
    c.retry_delay = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(1);
    Database::with_registry(SqlPool::open(&c).await.unwrap(), &Registry::new())
}

async fn server_port(db: &Database) -> i32 {
    let (port,): (i32,) = db.query_one("SELECT inet_server_port()", ()).await.unwrap();
    port
}

#[tokio::test]
async fn writes_move_to_the_promoted_replica_and_no_acknowledged_write_is_lost() {
    let (mut primary, replica) = blocking(|| {
        let primary = TempPostgres::start_durable().unwrap();
        let replica = primary.start_replica().unwrap();
        (primary, replica)
    })
    .await;
    let db = open(&[&primary, &replica], 8).await;
    assert_eq!(server_port(&db).await, primary.port() as i32);
    db.execute("CREATE TABLE w (id BIGINT PRIMARY KEY)", ())
        .await
        .unwrap();

    // Eight writers insert increasing ids, keeping those acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8i64 {
        let (db, acknowledged, stop) = (db.clone(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0i64;
            let mut last_ok = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = w * 1_000_000 + n;
                n += 1;
                match db
                    .execute("INSERT INTO w (id) VALUES ($1)", params![id])
                    .await
                {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert(id);
                        last_ok = Some(Instant::now());
                    }
                    Err(e) => {
                        // Between the stop and the promotion: no primary.
                        assert!(e.is_unavailable(), "{e:?}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            last_ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = acknowledged.lock().unwrap().len();
    assert!(before > 0, "no write succeeded before the failover");

    // The primary stops (fast shutdown: its WAL reaches the standby
    // first), then the replica is promoted.
    let replica = blocking(move || {
        primary.stop().unwrap();
        replica.promote().unwrap();
        (primary, replica)
    })
    .await;
    let (_primary, replica) = replica;
    let promoted = Instant::now();
    let resumed = loop {
        let count = acknowledged.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(10)).await;
        if acknowledged.lock().unwrap().len() > count {
            break promoted.elapsed();
        }
        assert!(
            promoted.elapsed() < RESUMED_WITHIN,
            "writes did not resume within {RESUMED_WITHIN:?} of the promotion"
        );
    };
    eprintln!("writes resumed {resumed:?} after the promotion");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        assert!(writer.await.unwrap().is_some(), "a writer never wrote");
    }

    // Every acknowledged write is on the new primary, which the pool uses.
    assert_eq!(server_port(&db).await, replica.port() as i32);
    let stored: Vec<(i64,)> = db.query("SELECT id FROM w", ()).await.unwrap();
    let stored: BTreeSet<i64> = stored.into_iter().map(|(id,)| id).collect();
    let acknowledged = acknowledged.lock().unwrap();
    let lost: Vec<_> = acknowledged.difference(&stored).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {lost:?}",
        acknowledged.len() - acknowledged.intersection(&stored).count()
    );
    assert!(acknowledged.len() > before, "no write after the failover");
}

#[tokio::test]
async fn a_primary_fenced_read_only_under_open_connections_is_left() {
    let (a, b) = blocking(|| {
        (
            TempPostgres::start().unwrap(),
            TempPostgres::start().unwrap(),
        )
    })
    .await;
    let db = open(&[&a, &b], 4).await;
    db.execute("CREATE TABLE t (v INT)", ()).await.unwrap();
    // Open and return four connections to A.
    let held: Vec<_> = futures_conns(&db, 4).await;
    drop(held);
    for pg in [&a, &b] {
        pg.psql("CREATE TABLE IF NOT EXISTS t (v INT)").unwrap();
    }

    // A is fenced: new transactions are read-only, sessions stay open,
    // `SELECT 1` still works there.
    a.psql("ALTER SYSTEM SET default_transaction_read_only = on")
        .unwrap();
    a.psql("SELECT pg_reload_conf()").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The first write lands on an old connection and is refused as
    // retryable (503, not 500); the pool then moves to B.
    let first = db.execute("INSERT INTO t (v) VALUES (1)", ()).await;
    assert!(
        matches!(first, Err(DbError::ReadOnly(_)) | Ok(_)),
        "{first:?}"
    );
    if let Err(e) = &first {
        assert!(e.is_unavailable());
    }
    let deadline = Instant::now() + RESUMED_WITHIN;
    loop {
        if db.execute("INSERT INTO t (v) VALUES (2)", ()).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "writes never moved to B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No connection to A is lent again: every statement runs on B.
    for _ in 0..20 {
        assert_eq!(server_port(&db).await, b.port() as i32);
    }
    assert_eq!(a.psql("SELECT count(*) FROM t WHERE v = 2").unwrap(), "0");
    assert_eq!(b.psql("SELECT count(*) FROM t WHERE v = 2").unwrap(), "1");
}

/// Holds `n` connections at once, so that the pool opens that many.
async fn futures_conns(db: &Database, n: usize) -> Vec<sluice_pool::SqlConnection> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(db.pool().acquire().await.unwrap());
    }
    conns
}

#[tokio::test]
async fn a_standby_listed_first_is_skipped_at_start_up() {
    let (primary, replica) = blocking(|| {
        let primary = TempPostgres::start().unwrap();
        let replica = primary.start_replica().unwrap();
        (primary, replica)
    })
    .await;
    let db = open(&[&replica, &primary], 4).await;
    for _ in 0..10 {
        assert_eq!(server_port(&db).await, primary.port() as i32);
    }
    db.execute("CREATE TABLE s (v INT)", ()).await.unwrap();
    // The write reached the replica through replication, not directly.
    let lsn = primary.current_lsn().unwrap();
    blocking(move || {
        replica
            .wait_replayed(&lsn, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            replica.psql("SELECT pg_is_in_recovery()").unwrap(),
            "t",
            "the replica was written to"
        );
        assert_eq!(replica.psql("SELECT count(*) FROM s").unwrap(), "0");
    })
    .await;
}

#[tokio::test]
async fn lagging_reads_use_the_replica_and_fall_back_to_the_primary() {
    let (primary, mut replica) = blocking(|| {
        let primary = TempPostgres::start().unwrap();
        let replica = primary.start_replica().unwrap();
        (primary, replica)
    })
    .await;
    let open_one = |pg: &TempPostgres, name: &str| {
        let mut c = ConnectionConfig::from_url(name, &pg.url()).unwrap();
        c.pool_size = 4;
        c.retry_delay = Duration::from_millis(200);
        c.connect_timeout = Duration::from_secs(1);
        c
    };
    let registry = Registry::new();
    let db = Database::with_registry(
        SqlPool::open(&open_one(&primary, "primary")).await.unwrap(),
        &registry,
    )
    .with_replica(Database::with_registry(
        SqlPool::open(&open_one(&replica, "primary_replica"))
            .await
            .unwrap(),
        &registry,
    ));
    db.execute("CREATE TABLE r (id INT PRIMARY KEY, at INT)", ())
        .await
        .unwrap();
    db.execute("INSERT INTO r VALUES (1, 0)", ()).await.unwrap();
    let lsn = primary.current_lsn().unwrap();
    let replica_port = replica.port() as i32;
    replica = blocking(move || {
        replica
            .wait_replayed(&lsn, Duration::from_secs(10))
            .unwrap();
        replica
    })
    .await;
    let served_by = "SELECT inet_server_port() FROM r WHERE id = $1";
    let (port,): (i32,) = db
        .query_optional_lagging(served_by, params![1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(port, replica_port, "a lagging read went to the primary");

    // Replay paused: a new row is on the primary only, and the read of it
    // (a read-your-write) still finds it, from the primary.
    replica.psql("SELECT pg_wal_replay_pause()").unwrap();
    db.execute("INSERT INTO r VALUES (2, 0)", ()).await.unwrap();
    let (port,): (i32,) = db
        .query_optional_lagging(served_by, params![2])
        .await
        .unwrap()
        .expect("a row the replica lacks was not read from the primary");
    assert_eq!(port, primary.port() as i32);
    assert_eq!(
        db.query_optional_lagging::<(i32,)>(served_by, params![1])
            .await
            .unwrap(),
        Some((replica_port,))
    );
    // A row that exists nowhere is None (asked on both).
    assert_eq!(
        db.query_optional_lagging::<(i32,)>(served_by, params![3])
            .await
            .unwrap(),
        None
    );

    // The replica stops: every lagging read is served by the primary.
    blocking(move || {
        replica.stop().unwrap();
        replica
    })
    .await;
    let started = Instant::now();
    for _ in 0..20 {
        let (port,): (i32,) = db
            .query_optional_lagging(served_by, params![1])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(port, primary.port() as i32);
    }
    eprintln!(
        "20 reads with the replica stopped, from the primary, in {:?}",
        started.elapsed()
    );
}
