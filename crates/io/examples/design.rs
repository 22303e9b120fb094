//! The design's own usage of its `AsyncIOManager`, ported to `IoManager`:
//! configured from the environment (`DB_MAIN_URL`, `REDIS_URL`,
//! `API_EXTERNAL_BASE_URL`, and any other variable of the table), then a
//! query, a transaction that inserts a user and its profile with the
//! returned id, an API request, a batch, the metrics, health, and
//! `close_all`. `cargo xtask ci` runs it against the provisioned
//! PostgreSQL and Redis and a local upstream; it exits non-zero if any
//! step does not give what it should.
//!
//! ```text
//! DB_MAIN_URL=postgres://… REDIS_URL=redis://… API_EXTERNAL_BASE_URL=http://… \
//!     cargo run -p sluice-io --example design
//! ```

use std::time::Duration;

use sluice_io::api::{ApiPath, ApiRequest};
use sluice_io::db::params;
use sluice_io::{IoConfig, IoManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // initialize_database / initialize_api, from the environment.
    let names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let config = IoConfig::from_lookup(&names, &|k| std::env::var(k).ok())?;
    let io = IoManager::open(&config).await?;

    // execute_query
    io.db("main")?
        .execute(
            "CREATE TABLE IF NOT EXISTS io_example_users \
             (id BIGSERIAL PRIMARY KEY, email TEXT UNIQUE NOT NULL)",
            params![],
        )
        .await?;
    io.db("main")?
        .execute(
            "CREATE TABLE IF NOT EXISTS io_example_profiles \
             (user_id BIGINT NOT NULL REFERENCES io_example_users(id) ON DELETE CASCADE, bio TEXT NOT NULL)",
            params![],
        )
        .await?;
    let email = format!("ada-{}@example.com", std::process::id());

    // execute_transaction: the user and their profile, or neither.
    let user_id: i64 = io
        .execute_transaction("main", |tx| {
            let email = email.clone();
            Box::pin(async move {
                let (id,): (i64,) = tx
                    .query_one(
                        "INSERT INTO io_example_users (email) VALUES ($1) RETURNING id",
                        params![email],
                    )
                    .await?;
                tx.execute(
                    "INSERT INTO io_example_profiles (user_id, bio) VALUES ($1, $2)",
                    params![id, "analytical engines"],
                )
                .await?;
                Ok(id)
            })
        })
        .await?;
    let rows: Vec<(String, String)> = io
        .execute_query(
            "main",
            "SELECT u.email, p.bio FROM io_example_users u \
             JOIN io_example_profiles p ON p.user_id = u.id WHERE u.id = $1",
            params![user_id],
        )
        .await?;
    assert_eq!(rows, vec![(email.clone(), "analytical engines".to_owned())]);
    println!("user {user_id} created with its profile");

    // Redis as a key-value store.
    let kv = io.redis("redis")?;
    kv.set(
        &format!("io-example:{user_id}"),
        email.clone(),
        Some(Duration::from_secs(60)),
    )
    .await?;
    assert_eq!(
        kv.get_string(&format!("io-example:{user_id}")).await?,
        Some(email.clone())
    );

    // make_api_request and make_batch_api_requests
    let one = io
        .make_api_request(
            "external",
            ApiRequest::get(ApiPath::new().push("data").push("42")),
        )
        .await?;
    println!("api answered {} with {} bytes", one.status, one.body.len());
    let batch = (0..20)
        .map(|i| ApiRequest::get(ApiPath::new().push("data").push(&i.to_string())))
        .collect();
    let results = io.make_batch_api_requests("external", batch).await?;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 20, "every batch item succeeds");
    println!("batch: {ok} of {} succeeded", results.len());

    // get_database_metrics / get_api_metrics, and the whole document.
    let db = io.database_metrics("main")?;
    let api = io.api_metrics("external")?;
    println!(
        "database main: {} transactions; api external: circuit {}",
        db.operations.get("transaction").map_or(0, |o| o.count),
        api.circuit
    );
    println!("{}", serde_json::to_string(&io.metrics())?);
    let health = io.health(Duration::from_secs(2)).await;
    assert!(health.healthy, "{:?}", health.failing());

    // Clean up what this run created, then close_all.
    io.db("main")?
        .execute(
            "DELETE FROM io_example_users WHERE id = $1",
            params![user_id],
        )
        .await?;
    kv.del(&[&format!("io-example:{user_id}")]).await?;
    io.close_all().await;
    println!("closed");
    Ok(())
}
