//! The provisioned services answer, and tests are isolated from each other.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use fred::prelude::*;
use sluice_tests::services;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

#[tokio::test]
async fn postgres_answers_in_a_database_of_its_own() {
    let url = services::fresh_database("provisioned_pg").await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let inserted = sqlx::query("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(inserted, 2);
    let (db, count): (String, i64) =
        sqlx::query_as("SELECT current_database(), (SELECT count(*) FROM t)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(db.starts_with("sluice_provisioned_pg_"), "{db}");
    assert_eq!(count, 2);
    // A second fresh database does not see the first one's table.
    let other = services::fresh_database("provisioned_pg").await;
    let mut other = PgConnection::connect(&other).await.unwrap();
    let missing = sqlx::query("SELECT * FROM t").execute(&mut other).await;
    assert!(missing.is_err());
}

#[tokio::test]
async fn redis_answers_under_a_prefix_of_its_own() {
    let client = Builder::from_config(Config::from_url(&services::redis_url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let prefix = services::redis_prefix("provisioned_redis");
    let key = format!("{prefix}greeting");
    let () = client
        .set(&key, "hello", Some(Expiration::EX(60)), None, false)
        .await
        .unwrap();
    let got: Option<String> = client.get(&key).await.unwrap();
    assert_eq!(got.as_deref(), Some("hello"));
    let other: Option<String> = client
        .get(format!(
            "{}greeting",
            services::redis_prefix("provisioned_redis")
        ))
        .await
        .unwrap();
    assert_eq!(other, None);
    client.quit().await.unwrap();
}
