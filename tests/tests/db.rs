//! sluice-db against real PostgreSQL and SQLite: every test runs on both.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_db::{Database, DbError, FromRow, params};
use sluice_metrics::{Backend, Registry};
use sluice_pool::{ConnectionConfig, Kind, SqlPool};
use sluice_tests::services;

#[derive(Debug, FromRow, PartialEq)]
struct User {
    id: i64,
    name: String,
    email: String,
}

/// A migrated PostgreSQL database and a migrated SQLite file of this
/// test's own, each recording into `registry`.
async fn databases(test: &str, registry: &Registry) -> Vec<Database> {
    let mut pg =
        ConnectionConfig::from_url(format!("{test}_pg"), &services::fresh_database(test).await)
            .unwrap();
    pg.pool_size = 8;
    let dir = services::scratch_dir(test);
    let mut lite = ConnectionConfig::new(format!("{test}_sqlite"), Kind::Sqlite);
    lite.database = Some(dir.join("db.sqlite").to_string_lossy().into_owned());
    lite.pool_size = 8;
    let mut out = Vec::new();
    for config in [pg, lite] {
        let db = Database::with_registry(SqlPool::open(&config).await.unwrap(), registry);
        db.migrate().await.unwrap();
        db.migrate().await.unwrap(); // idempotent
        out.push(db);
    }
    out
}

async fn count(db: &Database, table: &'static str) -> i64 {
    let sql = match table {
        "users" => "SELECT count(*) FROM users",
        "profiles" => "SELECT count(*) FROM profiles",
        _ => unreachable!(),
    };
    let (n,): (i64,) = db.query_one(sql, ()).await.unwrap();
    n
}

async fn create_user(db: &Database, name: &str, email: &str) -> Result<i64, DbError> {
    let (name, email) = (name.to_owned(), email.to_owned());
    db.transaction(move |tx| {
        let (name, email) = (name.clone(), email.clone());
        Box::pin(async move {
            let (id,): (i64,) = tx
                .query_one(
                    "INSERT INTO users (name, email) VALUES (:name, :email) RETURNING id",
                    params! {"name" => name, "email" => email},
                )
                .await?;
            tx.execute(
                "INSERT INTO profiles (user_id, bio) VALUES ($1, $2)",
                params![id, ""],
            )
            .await?;
            Ok(id)
        })
    })
    .await
}

#[tokio::test]
async fn round_trips_of_every_operation() {
    let registry = Registry::new();
    for db in databases("db_roundtrip", &registry).await {
        let id = create_user(&db, "Ada", "ada@example.com").await.unwrap();
        let user: User = db
            .query_one(
                "SELECT id, name, email FROM users WHERE id = $1",
                params![id],
            )
            .await
            .unwrap();
        assert_eq!(
            user,
            User {
                id,
                name: "Ada".into(),
                email: "ada@example.com".into()
            }
        );
        let by_name: Vec<User> = db
            .query(
                "SELECT id, name, email FROM users WHERE email = :email",
                params! {"email" => "ada@example.com"},
            )
            .await
            .unwrap();
        assert_eq!(by_name.len(), 1);
        let none: Option<User> = db
            .query_optional(
                "SELECT id, name, email FROM users WHERE id = $1",
                params![id + 100],
            )
            .await
            .unwrap();
        assert!(none.is_none());
        assert!(matches!(
            db.query_one::<User>(
                "SELECT id, name, email FROM users WHERE id = $1",
                params![-1i64]
            )
            .await,
            Err(DbError::NotFound)
        ));
        let changed = db
            .execute(
                "UPDATE profiles SET bio = $1 WHERE user_id = $2",
                params!["hi", id],
            )
            .await
            .unwrap();
        assert_eq!(changed, 1);
        let rows = db
            .query_json(
                "SELECT u.id, u.name, p.bio, u.created_at FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
                params![id],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{:?}", db.kind());
        assert_eq!(rows[0]["id"], serde_json::json!(id));
        assert_eq!(rows[0]["bio"], "hi");
        assert!(
            rows[0]["created_at"].as_str().unwrap().starts_with("20"),
            "{rows:?}"
        );
        // NULLs keep their type, and come back as JSON null.
        let nulls = db
            .query_json(
                "SELECT CAST($1 AS TEXT) AS t, CAST($2 AS BIGINT) AS n",
                params![None::<&str>, None::<i64>],
            )
            .await
            .unwrap();
        assert_eq!(nulls[0]["t"], serde_json::Value::Null);
        assert_eq!(nulls[0]["n"], serde_json::Value::Null);
    }
    let snapshot = registry.snapshot();
    let pg = snapshot
        .connection(Backend::Postgresql, "db_roundtrip_pg")
        .unwrap();
    assert!(pg.operations["query"].count >= 5, "{pg:?}");
    assert_eq!(pg.operations["transaction"].count, 1);
    assert!(
        snapshot
            .connection(Backend::Sqlite, "db_roundtrip_sqlite")
            .is_some()
    );
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_that_does_not_echo_the_value() {
    for db in databases("db_conflict", &Registry::new()).await {
        create_user(&db, "Ada", "ada@example.com").await.unwrap();
        let err = create_user(&db, "Eve", "ada@example.com")
            .await
            .unwrap_err();
        match &err {
            DbError::Conflict { constraint, .. } => {
                if db.kind() == Kind::Postgres {
                    assert_eq!(constraint.as_deref(), Some("users_email_key"));
                }
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(!err.to_string().contains("ada@example.com"), "{err}");
        assert_eq!(
            (count(&db, "users").await, count(&db, "profiles").await),
            (1, 1)
        );
    }
}

// A current-thread runtime: sqlx's release task cannot run until this
// test yields, so a connection passed on at once is told apart from one
// that went back through sqlx's check.
#[tokio::test(flavor = "current_thread")]
async fn a_transaction_rolled_back_after_a_conflict_passes_its_connection_on_at_once() {
    let test = "db_rollback_handoff";
    let mut config =
        ConnectionConfig::from_url(test, &services::fresh_database(test).await).unwrap();
    config.pool_size = 2;
    config.min_idle = 0;
    let pool = SqlPool::open(&config).await.unwrap();
    let db = Database::with_registry(pool.clone(), &Registry::new());
    db.migrate().await.unwrap();
    create_user(&db, "Ada", "ada@example.com").await.unwrap();
    let committed = pool.stats();
    assert_eq!(committed.in_use, 0, "{committed:?}");
    // Rolled back cleanly: the next caller could have it now. (Before,
    // it went through sqlx's release check, and a caller waiting for a
    // handoff waited 50 ms alone while it sat idle in sqlx.)
    let err = create_user(&db, "Eve", "ada@example.com")
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Conflict { .. }), "{err:?}");
    let rolled_back = pool.stats();
    assert_eq!(rolled_back.in_use, 0, "{rolled_back:?}");
    assert_eq!(
        (count(&db, "users").await, count(&db, "profiles").await),
        (1, 1)
    );
    pool.close().await;
}

#[tokio::test]
async fn a_failing_transaction_leaves_nothing() {
    for db in databases("db_tx_error", &Registry::new()).await {
        let result: Result<(), DbError> = db
            .transaction(|tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO users (name, email) VALUES ($1, $2)",
                        params!["Ada", "a@x.org"],
                    )
                    .await?;
                    // The profile insert fails: its user id does not exist.
                    tx.execute(
                        "INSERT INTO profiles (user_id, bio) VALUES ($1, $2)",
                        params![999_999i64, ""],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await;
        assert!(
            matches!(result, Err(DbError::InvalidInput { .. })),
            "{result:?}"
        );
        assert_eq!(
            (count(&db, "users").await, count(&db, "profiles").await),
            (0, 0),
            "{:?}",
            db.kind()
        );
    }
}

#[tokio::test]
async fn a_panicking_transaction_leaves_nothing() {
    for db in databases("db_tx_panic", &Registry::new()).await {
        let task_db = db.clone();
        let joined = tokio::spawn(async move {
            task_db
                .transaction(|tx| {
                    Box::pin(async move {
                        tx.execute(
                            "INSERT INTO users (name, email) VALUES ($1, $2)",
                            params!["Ada", "a@x.org"],
                        )
                        .await?;
                        panic!("the application crashed mid-transaction");
                        #[allow(unreachable_code)]
                        Ok(())
                    })
                })
                .await
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(count(&db, "users").await, 0, "{:?}", db.kind());
        // The pool is healthy afterwards.
        create_user(&db, "Bob", "b@x.org").await.unwrap();
        assert_eq!(count(&db, "users").await, 1);
    }
}

#[tokio::test]
async fn a_cancelled_transaction_leaves_nothing() {
    for db in databases("db_tx_cancel", &Registry::new()).await {
        let inserted = std::sync::Arc::new(tokio::sync::Notify::new());
        let signal = inserted.clone();
        let tx = db.transaction(move |tx| {
            let signal = signal.clone();
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO users (name, email) VALUES ($1, $2)",
                    params!["Ada", "a@x.org"],
                )
                .await?;
                signal.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
        });
        // Drop the transaction's future once its insert has run.
        tokio::select! {
            _ = tx => panic!("the transaction cannot finish"),
            _ = inserted.notified() => {}
        }
        assert_eq!(count(&db, "users").await, 0, "{:?}", db.kind());
        create_user(&db, "Bob", "b@x.org").await.unwrap();
        assert_eq!(
            (count(&db, "users").await, count(&db, "profiles").await),
            (1, 1)
        );
    }
}

#[tokio::test]
async fn a_hundred_concurrent_transactions_leave_a_hundred_pairs() {
    for db in databases("db_tx_concurrent", &Registry::new()).await {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    create_user(&db, &format!("user {i}"), &format!("u{i}@example.com")).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            (count(&db, "users").await, count(&db, "profiles").await),
            (100, 100),
            "{:?}",
            db.kind()
        );
        let (orphans,): (i64,) = db
            .query_one("SELECT count(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE p.user_id IS NULL", ())
            .await
            .unwrap();
        assert_eq!(orphans, 0);
    }
}

#[tokio::test]
async fn serialization_failures_are_retried_until_every_transaction_commits() {
    let db = databases("db_tx_serializable", &Registry::new())
        .await
        .remove(0);
    db.execute("CREATE TABLE counter (v BIGINT NOT NULL)", ())
        .await
        .unwrap();
    db.execute("INSERT INTO counter VALUES (0)", ())
        .await
        .unwrap();
    // At least one of the overlapping transactions commits per round, so 4
    // contenders finish within the policy's 5 attempts, whatever the timing.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                db.transaction(|tx| {
                    Box::pin(async move {
                        tx.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ())
                            .await?;
                        let (v,): (i64,) = tx.query_one("SELECT v FROM counter", ()).await?;
                        // Widen the window so that transactions overlap.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        tx.execute("UPDATE counter SET v = $1", params![v + 1])
                            .await?;
                        Ok(())
                    })
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (v,): (i64,) = db.query_one("SELECT v FROM counter", ()).await.unwrap();
    assert_eq!(v, 4, "every increment committed exactly once");
}

#[tokio::test]
async fn bad_parameters_fail_before_any_io() {
    for db in databases("db_bad_params", &Registry::new()).await {
        let err = db
            .execute("SELECT $1, $2", params![1i64])
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::InvalidInput { .. }), "{err:?}");
        let err = db
            .execute("SELECT :a", params! {"b" => 1i64})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing parameter :a"), "{err}");
    }
}
