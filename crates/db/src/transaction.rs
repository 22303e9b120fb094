//! Transactions as closures: one connection, commit only on success.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use sluice_metrics::{ConnectionMetrics, OpKind};
use sluice_pool::{Kind, LentConnection, SqlConnection, SqlPool};
use sluice_retry::{Backoff, Class, Classify, Jitter, Policy};
use sqlx::{Acquire, Connection, Postgres, Sqlite};

use crate::database::Database;
use crate::error::{DbError, Result};
use crate::executor::{self, Conn, Persistent, Record};
use crate::params::Params;
use crate::statement::{Sql, prepare};

/// The future a transaction closure returns (as sqlx's own
/// `Connection::transaction` takes).
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// An open transaction, lent to the closure given to
/// [`Database::transaction`]. Every statement runs on its one connection,
/// watched by the pool's outage gate as statements outside transactions
/// are: one still running after a second starts a probe, and if the
/// server is found down it is abandoned with `Unavailable`, the
/// transaction is given up without waiting for a rollback (the server
/// rolls back when the connection goes), and the connection is discarded.
#[derive(Debug)]
pub struct Transaction<'c> {
    inner: Inner<'c>,
    persistent: Persistent,
    metrics: ConnectionMetrics,
    pool: SqlPool,
    /// Set when a statement was abandoned because the server is down.
    abandoned: bool,
}

/// Runs `statement` under the pool's outage gate; a server found down
/// marks the transaction abandoned.
async fn watched<T>(
    pool: &SqlPool,
    abandoned: &mut bool,
    statement: impl Future<Output = std::result::Result<T, sqlx::Error>>,
) -> Result<T> {
    match pool.unless_down(statement).await {
        Ok(result) => Ok(result?),
        Err(down) => {
            *abandoned = true;
            Err(down.into())
        }
    }
}

#[derive(Debug)]
enum Inner<'c> {
    Pg(sqlx::Transaction<'c, Postgres>),
    Sqlite(sqlx::Transaction<'c, Sqlite>),
}

fn conn<'a>(inner: &'a mut Inner<'_>) -> Conn<'a> {
    match inner {
        Inner::Pg(tx) => Conn::Pg(tx),
        Inner::Sqlite(tx) => Conn::Sqlite(tx),
    }
}

impl Transaction<'_> {
    fn kind(&self) -> Kind {
        match self.inner {
            Inner::Pg(_) => Kind::Postgres,
            Inner::Sqlite(_) => Kind::Sqlite,
        }
    }

    /// Rows decoded into `T`.
    pub async fn query<T: Record>(
        &mut self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Vec<T>> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let (persistent, metrics) = (self.persistent, self.metrics.clone());
        metrics
            .timed(OpKind::Query, async {
                let Self {
                    inner,
                    pool,
                    abandoned,
                    ..
                } = self;
                let statement = Box::pin(executor::fetch_all(conn(inner), prepared, persistent));
                watched(pool, abandoned, statement).await
            })
            .await
    }

    /// The first row, or [`DbError::NotFound`].
    pub async fn query_one<T: Record>(
        &mut self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<T> {
        self.query_optional(sql, params)
            .await?
            .ok_or(DbError::NotFound)
    }

    /// The first row, if any.
    pub async fn query_optional<T: Record>(
        &mut self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Option<T>> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let (persistent, metrics) = (self.persistent, self.metrics.clone());
        metrics
            .timed(OpKind::Query, async {
                let Self {
                    inner,
                    pool,
                    abandoned,
                    ..
                } = self;
                let statement =
                    Box::pin(executor::fetch_optional(conn(inner), prepared, persistent));
                watched(pool, abandoned, statement).await
            })
            .await
    }

    /// Rows as JSON objects.
    pub async fn query_json(
        &mut self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Vec<Map<String, Json>>> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let (persistent, metrics) = (self.persistent, self.metrics.clone());
        metrics
            .timed(OpKind::Query, async {
                let Self {
                    inner,
                    pool,
                    abandoned,
                    ..
                } = self;
                let statement = Box::pin(executor::fetch_json(conn(inner), prepared, persistent));
                watched(pool, abandoned, statement).await
            })
            .await
    }

    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute(&mut self, sql: impl Into<Sql>, params: impl Into<Params>) -> Result<u64> {
        let prepared = prepare(&sql.into(), params.into(), self.kind())?;
        let (persistent, metrics) = (self.persistent, self.metrics.clone());
        metrics
            .timed(OpKind::Execute, async {
                let Self {
                    inner,
                    pool,
                    abandoned,
                    ..
                } = self;
                let statement = Box::pin(executor::execute(conn(inner), prepared, persistent));
                watched(pool, abandoned, statement).await
            })
            .await
    }

    /// Runs a script of several statements, without parameters, by the
    /// simple-query protocol (for migrations).
    pub(crate) async fn run_script(&mut self, script: &str) -> Result<()> {
        let script = sqlx::AssertSqlSafe(script.to_owned());
        let Self {
            inner,
            pool,
            abandoned,
            ..
        } = self;
        match inner {
            Inner::Pg(tx) => {
                let run = Box::pin(sqlx::raw_sql(script).execute(&mut **tx));
                watched(pool, abandoned, run).await.map(drop)
            }
            Inner::Sqlite(tx) => {
                let run = Box::pin(sqlx::raw_sql(script).execute(&mut **tx));
                watched(pool, abandoned, run).await.map(drop)
            }
        }
    }

    async fn commit(self) -> Result<()> {
        match self.inner {
            Inner::Pg(tx) => tx.commit().await?,
            Inner::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Whether the rollback went through. A failed rollback means the
    /// connection is gone, and the server rolls back on its own; the
    /// caller's error is the one to report.
    async fn rollback(self) -> bool {
        match self.inner {
            Inner::Pg(tx) => tx.rollback().await.is_ok(),
            Inner::Sqlite(tx) => tx.rollback().await.is_ok(),
        }
    }
}

/// How a transaction left its connection.
enum Ended {
    /// Committed or rolled back: idle, nothing left to read or send.
    Clean,
    /// A statement or the commit failed: sqlx's release check decides.
    Unsure,
    /// The server was found down meanwhile: the connection is discarded.
    ServerDown,
}

/// One attempt's error; only lost races between transactions and writes
/// a read-only server refused (nothing committed: the pool has moved to
/// the writable server meanwhile) are retried. A connection lost
/// mid-commit may or may not have committed.
struct Attempt(DbError);

impl Classify for Attempt {
    fn class(&self) -> Class {
        match self.0 {
            DbError::Busy(_) | DbError::ReadOnly(_) => Class::Transient,
            _ => Class::Permanent,
        }
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn retry_policy() -> Policy {
    // Constant values that `try_new`/`build` accept: this cannot fail.
    let backoff = Backoff::try_new(
        Duration::from_millis(10),
        Duration::from_millis(500),
        Jitter::Full,
    )
    .expect("constant backoff is valid");
    Policy::builder()
        .attempts(5)
        .backoff(backoff)
        .no_deadline()
        .no_breaker()
        .no_budget()
        .build()
        .expect("constant policy is valid")
}

impl Database {
    /// Runs `work` in a transaction and commits if it returns `Ok`.
    ///
    /// Every statement inside runs on one connection, so a later statement
    /// can use what an earlier one returned. The transaction is rolled back
    /// when `work` returns an error, when it panics, and when the returned
    /// future is dropped before it finishes (the connection goes back to
    /// the pool with the rollback queued, and is rolled back before reuse).
    /// Serialization failures and deadlocks (SQLite: busy) re-run the whole
    /// closure, up to 5 times with jittered backoff, so `work` must not have
    /// effects outside the database. SQLite transactions start with
    /// `BEGIN IMMEDIATE`, taking the write lock up front.
    ///
    /// ```no_run
    /// # async fn demo(db: sluice_db::Database) -> sluice_db::Result<()> {
    /// use sluice_db::params;
    /// let user_id: i64 = db
    ///     .transaction(|tx| Box::pin(async move {
    ///         let (id,): (i64,) = tx
    ///             .query_one("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id", params!["Ada", "ada@example.com"])
    ///             .await?;
    ///         tx.execute("INSERT INTO profiles (user_id, bio) VALUES ($1, $2)", params![id, ""]).await?;
    ///         Ok(id)
    ///     }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, F>(&self, work: F) -> Result<T>
    where
        T: Send,
        F: for<'t, 'c> FnMut(&'t mut Transaction<'c>) -> TxFuture<'t, T> + Send,
    {
        let work = tokio::sync::Mutex::new(work);
        let policy = retry_policy();
        self.metrics
            .timed(OpKind::Transaction, async {
                policy
                    .run(|_| async {
                        let mut work = work.lock().await;
                        self.transaction_once(&mut *work).await.map_err(Attempt)
                    })
                    .await
                    .map_err(|e| match e.into_last_error() {
                        Some(Attempt(error)) => error,
                        None => DbError::invalid("transaction gave up without an error"),
                    })
            })
            .await
    }

    async fn transaction_once<T, F>(&self, work: &mut F) -> Result<T>
    where
        F: for<'t, 'c> FnMut(&'t mut Transaction<'c>) -> TxFuture<'t, T>,
    {
        let mut conn = self.pool.acquire().await?;
        let (outcome, ended) = self.transaction_on(&mut conn, work).await;
        match ended {
            // Its protocol state is unknown: closed, not returned; the
            // server rolls back what it had when the connection goes.
            Ended::ServerDown => conn.discard(),
            _ if matches!(outcome, Err(DbError::ReadOnly(_))) => conn.found_read_only(),
            // Committed, or rolled back after the work's error (a
            // duplicate key, say): the connection can go straight to the
            // next caller.
            Ended::Clean => conn.finished(),
            // sqlx's release check decides.
            Ended::Unsure => {}
        }
        outcome
    }

    /// One transaction on `conn`, and how it left the connection.
    async fn transaction_on<T, F>(
        &self,
        conn: &mut SqlConnection,
        work: &mut F,
    ) -> (Result<T>, Ended)
    where
        F: for<'t, 'c> FnMut(&'t mut Transaction<'c>) -> TxFuture<'t, T>,
    {
        let begun = match conn.lent_mut() {
            LentConnection::Postgres(c) => self
                .pool
                .unless_down(c.begin())
                .await
                .map(|begun| begun.map(Inner::Pg)),
            LentConnection::Sqlite(c) => {
                Ok((**c).begin_with("BEGIN IMMEDIATE").await.map(Inner::Sqlite))
            }
            _ => {
                return (
                    Err(DbError::invalid("unsupported database backend")),
                    Ended::Unsure,
                );
            }
        };
        let inner = match begun {
            Ok(Ok(inner)) => inner,
            Ok(Err(e)) => return (Err(e.into()), Ended::Unsure),
            Err(down) => return (Err(down.into()), Ended::ServerDown),
        };
        let mut tx = Transaction {
            inner,
            persistent: Persistent::for_pool(self.pool.pgbouncer(), true),
            metrics: self.metrics.clone(),
            pool: self.pool.clone(),
            abandoned: false,
        };
        match work(&mut tx).await {
            Ok(value) => match self.pool.unless_down(Box::pin(tx.commit())).await {
                Ok(Ok(())) => (Ok(value), Ended::Clean),
                Ok(Err(e)) => (Err(e), Ended::Unsure),
                // Whether it committed is unknown; the caller hears
                // `Unavailable`, not success.
                Err(down) => (Err(down.into()), Ended::ServerDown),
            },
            // The server is down: a rollback would wait on it too.
            Err(error) if tx.abandoned => (Err(error), Ended::ServerDown),
            Err(error) => {
                let ended = if tx.rollback().await {
                    Ended::Clean
                } else {
                    Ended::Unsure
                };
                (Err(error), ended)
            }
        }
    }
}
