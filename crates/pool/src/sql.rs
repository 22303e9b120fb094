//! [`SqlPool`]: pooled PostgreSQL or SQLite connections on sqlx.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sluice_metrics::PoolMetrics;
use sluice_retry::{BreakerConfig, CircuitBreaker, Window};
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{Postgres, Sqlite};

use crate::config::{ConnectionConfig, Kind, TlsMode};
use crate::error::{ConnectError, Error, Result};
use crate::outage::{OutageGate, PROBE_AFTER, PROBE_STATEMENT_AFTER, Watched};
use crate::stats::{PoolStats, Waiting};

/// A pool of PostgreSQL or SQLite connections.
///
/// Clones share the pool. Getting a connection goes through a circuit
/// breaker: while the database is unreachable, callers fail fast with
/// [`Error::Unavailable`] and one probe per `retry_delay` tries to
/// reconnect, instead of every caller opening its own connection (a
/// reconnect storm). Idle connections are tested before they are lent, so
/// after a database restart stale connections are dropped, not handed out.
#[derive(Debug, Clone)]
pub struct SqlPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    driver: Driver,
    max: u32,
    pgbouncer: bool,
    acquire_timeout: Duration,
    waiting: AtomicU32,
    breaker: CircuitBreaker,
    metrics: PoolMetrics,
}

#[derive(Debug)]
enum Driver {
    /// With its outage gate (an SQLite file does not go away).
    Postgres(PgPool, Arc<OutageGate>),
    Sqlite(SqlitePool),
}

/// A connection lent by a [`SqlPool`]; it goes back when dropped.
#[derive(Debug)]
#[non_exhaustive]
pub enum SqlConnection {
    /// A PostgreSQL connection.
    Postgres(PoolConnection<Postgres>),
    /// An SQLite connection.
    Sqlite(PoolConnection<Sqlite>),
}

impl SqlConnection {
    /// Closes this connection when it is dropped instead of returning it
    /// to the pool: for a connection whose statement was abandoned midway.
    pub fn discard(&mut self) {
        match self {
            SqlConnection::Postgres(c) => c.close_on_drop(),
            SqlConnection::Sqlite(c) => c.close_on_drop(),
        }
    }
}

impl SqlPool {
    /// Opens a pool: connects with retries (a database that is still
    /// starting is waited for, `retry_attempts` times with backoff from
    /// `retry_delay`), warms `min_idle` connections, and fails with one
    /// error naming the connection and every attempt's cause.
    #[tracing::instrument(skip(config), fields(name = %config.name, backend = config.kind.as_str()))]
    pub async fn open(config: &ConnectionConfig) -> Result<Self> {
        config.validate()?;
        let metrics = PoolMetrics::new(&config.name);
        let policy = config.connect_policy()?;
        let driver = match config.kind {
            Kind::Postgres => {
                let options = postgres_options(config)?;
                let pool_options = pool_options::<Postgres>(config, &metrics);
                let pool = policy
                    .run(|_| {
                        let (pool_options, options) = (pool_options.clone(), options.clone());
                        let metrics = metrics.clone();
                        async move {
                            pool_options.connect_with(options).await.map_err(|e| {
                                metrics.connected(false);
                                ConnectError::Sql(e)
                            })
                        }
                    })
                    .await
                    .map_err(|source| connect_error(config, source))?;
                Driver::Postgres(
                    pool,
                    OutageGate::new(config.connect_timeout, config.retry_delay),
                )
            }
            Kind::Sqlite => {
                let (options, in_memory) = sqlite_options(config)?;
                let mut pool_options = pool_options::<Sqlite>(config, &metrics);
                if in_memory {
                    // The database lives as long as one connection does.
                    pool_options = pool_options
                        .min_connections(config.min_idle.max(1))
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                let pool = policy
                    .run(|_| {
                        let (pool_options, options) = (pool_options.clone(), options.clone());
                        async move {
                            pool_options
                                .connect_with(options)
                                .await
                                .map_err(ConnectError::Sql)
                        }
                    })
                    .await
                    .map_err(|source| connect_error(config, source))?;
                Driver::Sqlite(pool)
            }
            Kind::Redis => {
                return Err(Error::config(
                    "kind",
                    "a Redis connection opens as a RedisPool",
                ));
            }
        };
        let breaker = CircuitBreaker::try_new(BreakerConfig {
            window: Window::Count(10),
            min_calls: 3,
            failure_rate: 0.5,
            open_interval: config.retry_delay,
            half_open_probes: 1,
            slow_call: None,
            consecutive_failures: 3,
        })
        .map_err(|e| Error::config("retry_delay", e.to_string()))?;
        tracing::info!(target = %config.describe(), size = config.pool_size, "pool open");
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                driver,
                max: config.pool_size,
                pgbouncer: config.pgbouncer,
                acquire_timeout: config.acquire_timeout,
                waiting: AtomicU32::new(0),
                breaker,
                metrics,
            }),
        })
    }

    /// The connection's configured name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// PostgreSQL or SQLite.
    pub fn kind(&self) -> Kind {
        match self.inner.driver {
            Driver::Postgres(..) => Kind::Postgres,
            Driver::Sqlite(_) => Kind::Sqlite,
        }
    }

    /// Whether statements must not be prepared by name (PgBouncer in
    /// transaction pooling).
    pub fn pgbouncer(&self) -> bool {
        self.inner.pgbouncer
    }

    /// Lends a connection: fails fast with [`Error::Unavailable`] while the
    /// database is known to be down, with [`Error::Timeout`] when none is
    /// free within the acquire timeout.
    pub async fn acquire(&self) -> Result<SqlConnection> {
        let inner = &self.inner;
        if let Driver::Postgres(_, gate) = &inner.driver
            && gate.is_down()
        {
            return Err(self.unavailable(gate.retry_after()));
        }
        let permit = inner
            .breaker
            .try_acquire()
            .map_err(|rejected| self.unavailable(rejected.retry_after))?;
        let waiting = Waiting::new(&inner.waiting);
        let started = Instant::now();
        // sqlx's acquire future embeds the whole connect path (TLS
        // included) and is tens of kilobytes: boxed, every future that
        // awaits this one stays small and cheap to move.
        let result = match &inner.driver {
            Driver::Postgres(pool, gate) => {
                let acquire = Box::pin(pool.acquire());
                match gate
                    .watch(acquire, PROBE_AFTER, || pool.connect_options())
                    .await
                {
                    Watched::Done(result) => result.map(SqlConnection::Postgres),
                    Watched::Down => {
                        drop(waiting);
                        inner.metrics.waited(started.elapsed());
                        inner.metrics.connected(false);
                        return Err(self.unavailable(gate.retry_after()));
                    }
                }
            }
            Driver::Sqlite(pool) => Box::pin(pool.acquire()).await.map(SqlConnection::Sqlite),
        };
        drop(waiting);
        let waited = started.elapsed();
        inner.metrics.waited(waited);
        match result {
            Ok(conn) => {
                permit.success(Duration::ZERO);
                Ok(conn)
            }
            Err(sqlx::Error::PoolTimedOut) => {
                // All connections busy is load, not an outage; fewer than
                // the maximum open means new ones could not be opened.
                if self.stats().size < inner.max {
                    permit.failure();
                }
                Err(Error::Timeout {
                    name: inner.name.clone(),
                    waited,
                })
            }
            Err(sqlx::Error::PoolClosed) => Err(Error::Closed {
                name: inner.name.clone(),
            }),
            Err(source) => {
                permit.failure();
                inner.metrics.connected(false);
                Err(Error::Acquire {
                    name: inner.name.clone(),
                    source,
                })
            }
        }
    }

    /// Runs `statement` (work on a connection of this pool) unless the
    /// server is found down while it runs: then gives up on it with
    /// [`Error::Unavailable`], and the caller must
    /// [`discard`](SqlConnection::discard) the connection (its protocol
    /// state is unknown). A statement still running after a second starts
    /// the same probe as a stalled acquire (PostgreSQL only).
    pub async fn unless_down<F: Future>(&self, statement: F) -> Result<F::Output> {
        let Driver::Postgres(pool, gate) = &self.inner.driver else {
            return Ok(statement.await);
        };
        match gate
            .watch(statement, PROBE_STATEMENT_AFTER, || pool.connect_options())
            .await
        {
            Watched::Done(output) => Ok(output),
            Watched::Down => Err(self.unavailable(gate.retry_after())),
        }
    }

    fn unavailable(&self, retry_after: Duration) -> Error {
        Error::Unavailable {
            name: self.inner.name.clone(),
            retry_after,
        }
    }

    /// Current sizes; also published as gauges.
    pub fn stats(&self) -> PoolStats {
        let (size, idle) = match &self.inner.driver {
            Driver::Postgres(pool, _) => (pool.size(), pool.num_idle()),
            Driver::Sqlite(pool) => (pool.size(), pool.num_idle()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        let stats = PoolStats {
            size,
            idle,
            in_use: size - idle,
            max: self.inner.max,
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        };
        self.inner
            .metrics
            .sizes(stats.idle, stats.in_use, stats.max, stats.waiting);
        stats
    }

    /// Checks that the database answers `SELECT 1`, within the acquire timeout.
    pub async fn ping(&self) -> Result<()> {
        let check = async {
            let mut conn = self.acquire().await?;
            let result = match &mut conn {
                SqlConnection::Postgres(c) => {
                    sqlx::query("SELECT 1").execute(&mut **c).await.map(drop)
                }
                SqlConnection::Sqlite(c) => {
                    sqlx::query("SELECT 1").execute(&mut **c).await.map(drop)
                }
            };
            result.map_err(|e| Error::Ping {
                name: self.inner.name.clone(),
                source: ConnectError::Sql(e),
            })
        };
        match tokio::time::timeout(self.inner.acquire_timeout, check).await {
            Ok(result) => result,
            Err(_) => Err(Error::Ping {
                name: self.inner.name.clone(),
                source: ConnectError::Timeout(self.inner.acquire_timeout),
            }),
        }
    }

    /// Stops lending connections and waits until every borrowed one is
    /// returned, then closes them all.
    pub async fn close(&self) {
        match &self.inner.driver {
            Driver::Postgres(pool, _) => pool.close().await,
            Driver::Sqlite(pool) => pool.close().await,
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        match &self.inner.driver {
            Driver::Postgres(pool, _) => pool.is_closed(),
            Driver::Sqlite(pool) => pool.is_closed(),
        }
    }

    /// The sqlx pool underneath, for what this crate does not cover (and
    /// for benchmarks that compare against sqlx used directly).
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match &self.inner.driver {
            Driver::Postgres(pool, _) => Some(pool),
            Driver::Sqlite(_) => None,
        }
    }

    /// The sqlx pool underneath, when this is SQLite.
    pub fn as_sqlite(&self) -> Option<&SqlitePool> {
        match &self.inner.driver {
            Driver::Sqlite(pool) => Some(pool),
            Driver::Postgres(..) => None,
        }
    }
}

fn connect_error(
    config: &ConnectionConfig,
    source: sluice_retry::RetryError<ConnectError>,
) -> Error {
    Error::Connect {
        name: config.name.clone(),
        backend: config.kind.as_str(),
        source,
    }
}

/// A connection returned to the pool less than this long ago is handed
/// out without a ping; one idle for longer is pinged first (and replaced
/// if the ping fails). sqlx's default pings before every acquire, which
/// costs each query a second round trip; HikariCP trusts a connection used
/// in the last 500 ms. A connection that breaks within the window fails
/// its query with a transient error, as one breaking mid-query would.
pub const VALIDATE_AFTER_IDLE: Duration = Duration::from_secs(1);

fn pool_options<DB: sqlx::Database>(
    config: &ConnectionConfig,
    metrics: &PoolMetrics,
) -> PoolOptions<DB> {
    let connected = metrics.clone();
    PoolOptions::<DB>::new()
        .max_connections(config.pool_size)
        .min_connections(config.min_idle)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= VALIDATE_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .after_connect(move |_conn, _meta| {
            connected.connected(true);
            Box::pin(async { Ok(()) })
        })
}

fn postgres_options(config: &ConnectionConfig) -> Result<PgConnectOptions> {
    let mut options = match &config.url {
        // The parse error could quote the URL, password included: replace it.
        Some(url) => PgConnectOptions::from_str(url.expose())
            .map_err(|_| Error::config("url", "not a valid PostgreSQL URL"))?,
        None => {
            let mut o = PgConnectOptions::new_without_pgpass().host(&config.host);
            if let Some(port) = config.port_or_default() {
                o = o.port(port);
            }
            if let Some(user) = &config.username {
                o = o.username(user);
            }
            if let Some(password) = &config.password {
                o = o.password(password.expose());
            }
            if let Some(db) = &config.database {
                o = o.database(db);
            }
            o
        }
    };
    if config.url.is_none() || config.tls.mode != TlsMode::Disable {
        options = options.ssl_mode(match config.tls.mode {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
            TlsMode::RequireNoVerify => PgSslMode::Require,
        });
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.ssl_root_cert(ca);
    }
    if let Some(timeout) = config.command_timeout {
        options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
    }
    if config.pgbouncer {
        options = options.statement_cache_capacity(0);
    }
    Ok(options.application_name("sluice"))
}

/// Options for an SQLite file (WAL, busy timeout, foreign keys) or an
/// in-memory database shared by the pool's connections.
fn sqlite_options(config: &ConnectionConfig) -> Result<(SqliteConnectOptions, bool)> {
    let path = match &config.url {
        Some(url) => url
            .expose()
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .to_owned(),
        None => config
            .database
            .clone()
            .unwrap_or_else(|| ":memory:".to_owned()),
    };
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let in_memory = path.is_empty() || path == ":memory:";
    let options = SqliteConnectOptions::new()
        .foreign_keys(true)
        .busy_timeout(config.acquire_timeout);
    let options = if in_memory {
        // A named shared-cache database: every connection of this pool sees
        // the same data, and another pool (another name) does not.
        options
            .filename(format!(
                "file:sluice-{}?mode=memory&cache=shared",
                config.name
            ))
            .in_memory(true)
            .shared_cache(true)
    } else {
        options
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    };
    Ok((options, in_memory))
}
