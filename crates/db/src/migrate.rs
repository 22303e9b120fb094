//! The application schema as versioned migrations, embedded in the binary.
//!
//! `migrations/postgres/` and `migrations/sqlite/` hold the same versions
//! in each dialect. sqlx records applied versions (with checksums) in
//! `_sqlx_migrations`; on PostgreSQL an advisory lock keeps two servers
//! starting together from migrating twice.

use std::borrow::Cow;

use sluice_pool::Kind;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::database::Database;
use crate::error::{DbError, Result};

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
    pub async fn migrate(&self) -> Result<()> {
        let migrator = migrator(self.kind());
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
}
