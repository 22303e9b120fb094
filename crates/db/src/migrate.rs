//! The application schema as versioned migrations, embedded in the binary.
//!
//! `migrations/postgres/` and `migrations/sqlite/` hold the same versions
//! in each dialect. sqlx records applied versions (with checksums) in
//! `_sqlx_migrations`; on PostgreSQL an advisory lock keeps two servers
//! starting together from migrating twice (not behind PgBouncer: see
//! [`Database::migrate`]).

use std::borrow::Cow;

use sluice_pool::Kind;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::database::Database;
use crate::error::{DbError, Result};
use crate::params;

/// `(version, description, postgres sql, sqlite sql)`, oldest first.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[(
    1,
    "users and profiles",
    include_str!("../migrations/postgres/0001_users_profiles.sql"),
    include_str!("../migrations/sqlite/0001_users_profiles.sql"),
)];

fn migrator(kind: Kind) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, pg, sqlite)| {
                let sql = if kind == Kind::Postgres { *pg } else { *sqlite };
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

impl Database {
    /// Applies the migrations this database has not seen yet. Idempotent.
    ///
    /// Behind PgBouncer in transaction pooling, sqlx's migrator cannot run
    /// (it prepares named statements and takes a session-level advisory
    /// lock, both tied to one server connection that PgBouncer does not
    /// keep): the same migrations are applied by [`Database::transaction`]
    /// instead, each with its row in the same `_sqlx_migrations` table and
    /// checksums, in one transaction. Without the lock, when several
    /// servers start at once against a new database behind PgBouncer, one
    /// of them may fail on a duplicate version: start one first.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = migrator(self.kind());
        if self.pool.pgbouncer() {
            return self.migrate_statement_by_statement(&migrator).await;
        }
        let result = match (self.pool.as_postgres(), self.pool.as_sqlite()) {
            (Some(pg), _) => migrator.run(pg).await,
            (_, Some(sqlite)) => migrator.run(sqlite).await,
            _ => return Err(DbError::invalid("unsupported database backend")),
        };
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => DbError::from(inner),
            other => DbError::Other(sqlx::Error::Migrate(Box::new(other))),
        })
    }

    async fn migrate_statement_by_statement(&self, migrator: &Migrator) -> Result<()> {
        // sqlx's own table, so that either way of migrating sees the other's.
        self.execute(
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations ( \
                version BIGINT PRIMARY KEY, \
                description TEXT NOT NULL, \
                installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
                success BOOLEAN NOT NULL, \
                checksum BYTEA NOT NULL, \
                execution_time BIGINT NOT NULL)",
            (),
        )
        .await?;
        let applied: Vec<(i64, Vec<u8>)> = self
            .query(
                "SELECT version, checksum FROM _sqlx_migrations WHERE success",
                (),
            )
            .await?;
        for migration in migrator.iter() {
            match applied
                .iter()
                .find(|(version, _)| *version == migration.version)
            {
                Some((_, checksum)) if checksum[..] == migration.checksum[..] => continue,
                Some(_) => {
                    return Err(DbError::Other(sqlx::Error::Migrate(Box::new(
                        sqlx::migrate::MigrateError::VersionMismatch(migration.version),
                    ))));
                }
                None => {}
            }
            let started = std::time::Instant::now();
            let (version, description, checksum) = (
                migration.version,
                migration.description.to_string(),
                migration.checksum.to_vec(),
            );
            let script = migration.sql.as_str().to_owned();
            self.transaction(|tx| {
                let (description, checksum, script) =
                    (description.clone(), checksum.clone(), script.clone());
                Box::pin(async move {
                    tx.run_script(&script).await?;
                    let took = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
                    tx.execute(
                        "INSERT INTO _sqlx_migrations \
                         (version, description, success, checksum, execution_time) \
                         VALUES ($1, $2, TRUE, $3, $4)",
                        params![version, description, checksum, took],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await?;
        }
        Ok(())
    }
}
