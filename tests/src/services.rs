//! The services a test talks to, isolated per test.

use std::str::FromStr;

use rand::RngExt;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

const HOW: &str = "run the tests with `cargo xtask test`, which provisions PostgreSQL and Redis, \
                   or set DATABASE_URL and REDIS_URL yourself";

/// The PostgreSQL URL tests use: `DATABASE_URL`. Its user must be allowed to
/// `CREATE DATABASE`. Panics with instructions when it is not set: a
/// real-service test never passes by skipping.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| panic!("DATABASE_URL is not set: {HOW}"))
}

/// The Redis URL tests use: `REDIS_URL`. Panics with instructions when it
/// is not set.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| panic!("REDIS_URL is not set: {HOW}"))
}

/// Whether `DATABASE_URL` points at PgBouncer in transaction pooling
/// (`SLUICE_TEST_PGBOUNCER` set): suites that open PostgreSQL pools then
/// turn on `pgbouncer` mode. `cargo xtask scale` runs the server's suite
/// this way.
pub fn behind_pgbouncer() -> bool {
    std::env::var_os("SLUICE_TEST_PGBOUNCER").is_some()
}

/// A short random suffix, so parallel tests and repeated runs never share
/// a database or key.
pub fn unique_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Creates an empty database of its own for one test on the server of
/// `DATABASE_URL` and returns a URL to it (the `#[sqlx::test]` model).
pub async fn fresh_database(test: &str) -> String {
    fresh_database_on(&database_url(), test).await
}

/// [`fresh_database`] on the server of `master_url`.
pub async fn fresh_database_on(master_url: &str, test: &str) -> String {
    let master =
        PgConnectOptions::from_str(master_url).expect("DATABASE_URL is a valid PostgreSQL URL");
    let name: String = format!("sluice_{test}_{}", unique_suffix())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let mut conn = master
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
    // The name is built from [a-z0-9_] above, so quoting it is enough.
    // A simple query, not a prepared one: through PgBouncer in transaction
    // pooling a named statement may land on a connection that has it.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    master.database(&name).to_url_lossy().to_string()
}

/// The directory every test's scratch files live under; `cargo xtask
/// test` removes it after each run.
pub fn scratch_root() -> std::path::PathBuf {
    std::env::temp_dir().join("sluice-tests")
}

/// A new empty directory of its own for one test, under [`scratch_root`].
pub fn scratch_dir(test: &str) -> std::path::PathBuf {
    let dir = scratch_root().join(format!("{test}-{}", unique_suffix()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A key prefix of its own for one test (`test:<name>:<random>:`).
pub fn redis_prefix(test: &str) -> String {
    format!("test:{test}:{}:", unique_suffix())
}
