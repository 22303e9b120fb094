//! sluice-pool against a real PostgreSQL that goes away the ways
//! production's do: stopped (`pg_ctl stop`, connects refused), killed
//! (SIGKILL), and frozen (SIGSTOP: TCP handshakes complete, nothing
//! answers). With the default 5 s acquire timeout, no caller may wait it
//! out because the server is down.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sluice_pool::{ConnectionConfig, Error, LentConnection, SqlPool};
use sluice_tests::provision::TempPostgres;
use tokio::task::JoinSet;

/// How long the first callers after an outage may wait: well under the
/// 5 s acquire timeout (detection takes 100 ms plus one refused connect).
const DETECTED_WITHIN: Duration = Duration::from_millis(2500);

async fn postgres() -> TempPostgres {
    tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
        .unwrap()
}

async fn with_pg(pg: TempPostgres, f: fn(&mut TempPostgres)) -> TempPostgres {
    tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        f(&mut pg);
        pg
    })
    .await
    .unwrap()
}

/// Acquires and runs `SELECT 1` (bounded: a frozen server never answers).
async fn select_one(pool: &SqlPool) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    if let LentConnection::Postgres(c) = conn.lent_mut() {
        let query = sqlx::query("SELECT 1").execute(&mut **c);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(1), query).await,
            Ok(Ok(_))
        ) {
            return Err(Error::Closed {
                name: "query failed".to_owned(),
            });
        }
    }
    Ok(())
}

/// The first 32 concurrent callers after the outage: every one finishes
/// within [`DETECTED_WITHIN`]; the returned errors.
async fn first_wave(pool: &SqlPool) -> Vec<Error> {
    let mut callers = JoinSet::new();
    for _ in 0..32 {
        let pool = pool.clone();
        callers.spawn(async move {
            let started = Instant::now();
            let result = pool.acquire().await.map(drop);
            (started.elapsed(), result)
        });
    }
    let mut errors = Vec::new();
    while let Some(joined) = callers.join_next().await {
        let (took, result) = joined.unwrap();
        assert!(
            took < DETECTED_WITHIN,
            "a caller waited {took:?} for a server that is down"
        );
        if let Err(e) = result {
            errors.push(e);
        }
    }
    errors
}

/// Once found down: callers fail before they start, naming the connection.
async fn fails_fast(pool: &SqlPool) {
    for _ in 0..20 {
        let err = pool.acquire().await.map(drop).unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable { name, retry_after }
                if name == "primary" && *retry_after <= Duration::from_millis(500)),
            "{err:?}"
        );
    }
    assert_eq!(pool.stats().waiting, 0);
}

/// Comes back by itself, without reopening the pool.
async fn recovers(pool: &SqlPool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while select_one(pool).await.is_err() {
        assert!(Instant::now() < deadline, "the pool did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(pg: &TempPostgres) -> ConnectionConfig {
    let mut config = ConnectionConfig::from_url("primary", &pg.url()).unwrap();
    config.pool_size = 4;
    assert_eq!(config.acquire_timeout, Duration::from_secs(5));
    config
}

/// Breaks PostgreSQL with `fault` under a pool with the default 5 s
/// acquire timeout, checks that the first callers are released quickly and
/// later ones fail fast, repairs it with `repair` and checks that the same
/// pool recovers. Returns the first wave's errors.
async fn outage(
    fault: fn(&mut TempPostgres),
    repair: fn(&mut TempPostgres),
    connect_timeout: Option<Duration>,
) -> Vec<Error> {
    let pg = postgres().await;
    let mut config = config(&pg);
    if let Some(timeout) = connect_timeout {
        config.connect_timeout = timeout;
    }
    let pool = SqlPool::open(&config).await.unwrap();
    select_one(&pool).await.unwrap();
    let pg = with_pg(pg, fault).await;
    let errors = first_wave(&pool).await;
    assert!(errors.iter().all(Error::is_unavailable), "{errors:?}");
    fails_fast(&pool).await;
    let pg = with_pg(pg, repair).await;
    recovers(&pool).await;
    drop(pg);
    errors
}

#[tokio::test]
async fn a_stopped_postgres_fails_fast_then_recovers() {
    let errors = outage(|pg| pg.stop().unwrap(), |pg| pg.restart().unwrap(), None).await;
    // A connection used moments ago may be lent without a ping (its
    // query then fails); at most the pool's size of them.
    assert!(errors.len() >= 32 - 4, "{} errors", errors.len());
}

#[tokio::test]
async fn a_killed_postgres_fails_fast_then_recovers() {
    let errors = outage(|pg| pg.crash().unwrap(), |pg| pg.restart().unwrap(), None).await;
    assert!(errors.len() >= 32 - 4, "{} errors", errors.len());
}

#[tokio::test]
async fn a_frozen_postgres_is_found_down_within_the_connect_timeout() {
    // Idle connections are validated before they are lent (the ping hangs
    // on a frozen server) or, lent unchecked, their query hangs: either
    // way no caller waits for the acquire timeout.
    let errors = outage(
        |pg| pg.freeze().unwrap(),
        |pg| pg.thaw().unwrap(),
        Some(Duration::from_millis(500)),
    )
    .await;
    assert!(!errors.is_empty());
}

#[tokio::test]
async fn a_statement_in_flight_when_postgres_freezes_is_given_up() {
    let pg = postgres().await;
    let mut config = config(&pg);
    config.connect_timeout = Duration::from_millis(500);
    let db = sluice_db::Database::open(&config).await.unwrap();
    let running = {
        let db = db.clone();
        tokio::spawn(async move { db.execute("SELECT pg_sleep(3)", ()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pg = with_pg(pg, |pg| pg.freeze().unwrap()).await;
    // A frozen server answers nothing, so only the pool's outage gate can
    // end the statement while it stays frozen.
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the statement hung on a frozen server")
        .unwrap();
    let err = result.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let pg = with_pg(pg, |pg| pg.thaw().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.execute("SELECT 1", ()).await.is_err() {
        assert!(Instant::now() < deadline, "the database did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(pg);
}

#[tokio::test]
async fn a_transaction_in_flight_when_postgres_freezes_is_given_up_and_leaves_nothing() {
    let pg = postgres().await;
    let mut config = config(&pg);
    config.connect_timeout = Duration::from_millis(500);
    let db = sluice_db::Database::open(&config).await.unwrap();
    db.execute("CREATE TABLE written (id INT)", ())
        .await
        .unwrap();
    let running = {
        let db = db.clone();
        tokio::spawn(async move {
            db.transaction(|tx| {
                Box::pin(async move {
                    tx.execute("INSERT INTO written VALUES (1)", ()).await?;
                    tx.execute("SELECT pg_sleep(3)", ()).await?;
                    tx.execute("INSERT INTO written VALUES (2)", ()).await?;
                    Ok(())
                })
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pg = with_pg(pg, |pg| pg.freeze().unwrap()).await;
    // Neither the statement nor a rollback may wait on the frozen server.
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the transaction hung on a frozen server")
        .unwrap();
    let err = result.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pg = with_pg(pg, |pg| pg.thaw().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = loop {
        match db
            .query_one::<(i64,)>("SELECT count(*) FROM written", ())
            .await
        {
            Ok((n,)) => break n,
            Err(_) => {
                assert!(Instant::now() < deadline, "the database did not recover");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The first insert was rolled back with the connection: nothing partial.
    assert_eq!(count, 0);
    drop(pg);
}
