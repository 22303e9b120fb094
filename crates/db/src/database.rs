//! [`Database`]: queries and statements on a pool, timed and classified.

use serde_json::{Map, Value as Json};
use sluice_metrics::{ConnectionMetrics, OpKind, Registry};
use sluice_pool::{ConnectionConfig, Kind, LentConnection, SqlConnection, SqlPool};

use crate::error::{DbError, Result};
use crate::executor::{self, Conn, Persistent, Record};
use crate::params::Params;
use crate::statement::{Sql, prepare};

/// A database: a [`SqlPool`] plus timing, classification and the same
/// API for PostgreSQL and SQLite. Clones share the pool.
///
/// Every operation is recorded in `sluice-metrics` under the pool's name
/// (never with SQL text or values), inside a `tracing` span `io`.
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) pool: SqlPool,
    pub(crate) metrics: ConnectionMetrics,
    /// Serves the reads that tolerate lag (`replica.rs`).
    pub(crate) replica: Option<std::sync::Arc<Database>>,
}

impl Database {
    /// Opens the pool described by `config` (see [`SqlPool::open`]).
    pub async fn open(config: &ConnectionConfig) -> Result<Self> {
        Ok(Self::new(SqlPool::open(config).await?))
    }

    /// Wraps an open pool, recording into the global metrics registry.
    pub fn new(pool: SqlPool) -> Self {
        Self::with_registry(pool, Registry::global())
    }

    /// Wraps an open pool, recording into `registry`.
    pub fn with_registry(pool: SqlPool, registry: &Registry) -> Self {
        let metrics = registry.connection(pool.kind().metrics_backend(), pool.name());
        Self {
            pool,
            metrics,
            replica: None,
        }
    }

    /// The pool underneath.
    pub fn pool(&self) -> &SqlPool {
        &self.pool
    }

    /// PostgreSQL or SQLite.
    pub fn kind(&self) -> Kind {
        self.pool.kind()
    }

    /// Rows decoded into `T` (a `#[derive(sqlx::FromRow)]` struct or a tuple).
    pub async fn query<T: Record>(
        &self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Vec<T>> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let persistent = Persistent::for_pool(self.pool.pgbouncer(), false);
        self.metrics
            .timed(OpKind::Query, async {
                let mut conn = self.pool.acquire().await?;
                let statement = Box::pin(executor::fetch_all(
                    conn_of(&mut conn)?,
                    prepared,
                    persistent,
                ));
                let outcome = self.pool.unless_down(statement).await;
                finish(&mut conn, outcome)
            })
            .await
    }

    /// The first row, or [`DbError::NotFound`].
    pub async fn query_one<T: Record>(
        &self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<T> {
        self.query_optional(sql, params)
            .await?
            .ok_or(DbError::NotFound)
    }

    /// The first row, if any.
    pub async fn query_optional<T: Record>(
        &self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Option<T>> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let persistent = Persistent::for_pool(self.pool.pgbouncer(), false);
        self.metrics
            .timed(OpKind::Query, async {
                let mut conn = self.pool.acquire().await?;
                let statement = Box::pin(executor::fetch_optional(
                    conn_of(&mut conn)?,
                    prepared,
                    persistent,
                ));
                let outcome = self.pool.unless_down(statement).await;
                finish(&mut conn, outcome)
            })
            .await
    }

    /// Rows as JSON objects keyed by column name, for generic use.
    /// Integers, floats, booleans, text, JSON and timestamps (RFC 3339) map
    /// to their JSON forms; other column types are an error naming the
    /// column (cast them to text in the query).
    pub async fn query_json(
        &self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Vec<Map<String, Json>>> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let persistent = Persistent::for_pool(self.pool.pgbouncer(), false);
        self.metrics
            .timed(OpKind::Query, async {
                let mut conn = self.pool.acquire().await?;
                let statement = Box::pin(executor::fetch_json(
                    conn_of(&mut conn)?,
                    prepared,
                    persistent,
                ));
                let outcome = self.pool.unless_down(statement).await;
                finish(&mut conn, outcome)
            })
            .await
    }

    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute(&self, sql: impl Into<Sql>, params: impl Into<Params>) -> Result<u64> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let persistent = Persistent::for_pool(self.pool.pgbouncer(), false);
        self.metrics
            .timed(OpKind::Execute, async {
                let mut conn = self.pool.acquire().await?;
                let statement =
                    Box::pin(executor::execute(conn_of(&mut conn)?, prepared, persistent));
                let outcome = self.pool.unless_down(statement).await;
                finish(&mut conn, outcome)
            })
            .await
    }

    /// Checks that the database answers, within the pool's acquire timeout.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.pool.ping().await?)
    }

    /// Closes the pool, waiting for borrowed connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A statement's result; when the server was found down while it ran, the
/// connection is discarded (its protocol state is unknown) and the error
/// is the pool's `Unavailable`. After a failed statement the connection
/// goes back through sqlx's release check.
fn finish<T, E: Into<DbError>>(
    conn: &mut SqlConnection,
    outcome: std::result::Result<std::result::Result<T, E>, sluice_pool::Error>,
) -> Result<T> {
    match outcome {
        Ok(Ok(value)) => {
            // Ran to its end: the connection can go straight to the next
            // caller.
            conn.finished();
            Ok(value)
        }
        Ok(Err(e)) => {
            let e = e.into();
            if matches!(e, DbError::ReadOnly(_)) {
                conn.found_read_only();
            }
            Err(e)
        }
        Err(down) => {
            conn.discard();
            Err(down.into())
        }
    }
}

pub(crate) fn conn_of(conn: &mut SqlConnection) -> Result<Conn<'_>> {
    match conn.lent_mut() {
        LentConnection::Postgres(c) => Ok(Conn::Pg(c)),
        LentConnection::Sqlite(c) => Ok(Conn::Sqlite(c)),
        _ => Err(DbError::invalid("unsupported database backend")),
    }
}
