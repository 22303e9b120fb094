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
use crate::hosts::TargetSession;
use crate::outage::{OutageGate, PROBE_AFTER, PROBE_STATEMENT_AFTER, Watched};
use crate::servers::Servers;
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

/// A connection lent by a [`SqlPool`]; it goes back when dropped, and the
/// time it was out is recorded (`db_client_connection_use_time_seconds`).
#[derive(Debug)]
pub struct SqlConnection {
    lent: LentConnection,
    since: Instant,
    pool: SqlPool,
}

/// The driver's connection inside a [`SqlConnection`].
#[derive(Debug)]
#[non_exhaustive]
pub enum LentConnection {
    /// A PostgreSQL connection.
    Postgres(PoolConnection<Postgres>),
    /// An SQLite connection.
    Sqlite(PoolConnection<Sqlite>),
}

impl SqlConnection {
    /// The driver's connection, to run statements on.
    pub fn lent_mut(&mut self) -> &mut LentConnection {
        &mut self.lent
    }

    /// Closes this connection when it is dropped instead of returning it
    /// to the pool: for a connection whose statement was abandoned midway.
    pub fn discard(&mut self) {
        match &mut self.lent {
            LentConnection::Postgres(c) => c.close_on_drop(),
            LentConnection::Sqlite(c) => c.close_on_drop(),
        }
    }

    /// Reports that a statement on this connection failed because the
    /// server is read-only (SQLSTATE 25006). With
    /// `target_session_attrs=read-write`, the server was demoted under
    /// open connections: every connection opened before now is closed
    /// instead of lent again, and the pool looks for the writable server
    /// among its hosts. This connection is closed in any case.
    pub fn found_read_only(&mut self) {
        self.discard();
        if let Driver::Postgres(_, gate) = &self.pool.inner.driver
            && gate.servers().target() == TargetSession::ReadWrite
        {
            gate.servers().demoted();
            gate.recheck();
        }
    }
}

impl Drop for SqlConnection {
    fn drop(&mut self) {
        self.pool.inner.metrics.used_for(self.since.elapsed());
    }
}

tokio::task_local! {
    /// When the acquire running in this task started: a connection that
    /// sqlx opens for it (inline, in the same task) is timed from there.
    static ACQUIRE_STARTED: Instant;
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
                let servers = Arc::new(postgres_servers(config)?);
                if servers.chooses() {
                    // Start on the first host that answers and is accepted;
                    // if none does yet, on the first (and the retries below
                    // wait for it).
                    servers.find(config.connect_timeout).await;
                }
                let options = servers.current();
                let gate = OutageGate::new(
                    config.connect_timeout,
                    config.retry_delay,
                    Arc::clone(&servers),
                );
                let checks = Arc::new(PgChecks(Arc::clone(&gate)));
                let pool_options = pool_options::<Postgres>(config, &metrics, true, checks);
                let pool = policy
                    .run(|_| {
                        let (pool_options, options) = (pool_options.clone(), options.clone());
                        let metrics = metrics.clone();
                        async move {
                            pool_options.connect_with(options).await.map_err(|e| {
                                metrics.connect_failed();
                                ConnectError::Sql(e)
                            })
                        }
                    })
                    .await
                    .map_err(|source| connect_error(config, source))?;
                servers.attach(&pool);
                Driver::Postgres(pool, gate)
            }
            Kind::Sqlite => {
                let (options, in_memory) = sqlite_options(config)?;
                let mut pool_options =
                    pool_options::<Sqlite>(config, &metrics, !in_memory, Arc::new(NoChecks));
                if in_memory {
                    // The database lives as long as one connection does.
                    pool_options = pool_options.min_connections(config.min_idle.max(1));
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
        let system = match config.kind {
            Kind::Sqlite => sluice_metrics::Backend::Sqlite,
            _ => sluice_metrics::Backend::Postgresql,
        };
        let resilience = sluice_metrics::ResilienceMetrics::new(system, &config.name);
        let breaker = CircuitBreaker::with_metrics(
            BreakerConfig {
                window: Window::Count(10),
                min_calls: 3,
                failure_rate: 0.5,
                open_interval: config.retry_delay,
                max_open_interval: config.retry_delay,
                half_open_probes: 1,
                slow_call: None,
                consecutive_failures: 3,
            },
            resilience,
        )
        .map_err(|e| Error::config("retry_delay", e.to_string()))?;
        let max = config.pool_size.saturating_add(config.max_overflow);
        // sqlx keeps every returned connection idle (up to the maximum)
        // and warms `min_connections` of them.
        metrics.limits(max, max, min_connections(config));
        tracing::info!(target = %config.describe(), size = config.pool_size, "pool open");
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                driver,
                max,
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
                let acquire = Box::pin(ACQUIRE_STARTED.scope(started, pool.acquire()));
                match gate.watch(acquire, PROBE_AFTER).await {
                    Watched::Done(result) => result.map(LentConnection::Postgres),
                    Watched::Down => {
                        drop(waiting);
                        inner.metrics.waited(started.elapsed());
                        inner.metrics.connect_failed();
                        return Err(self.unavailable(gate.retry_after()));
                    }
                }
            }
            Driver::Sqlite(pool) => Box::pin(ACQUIRE_STARTED.scope(started, pool.acquire()))
                .await
                .map(LentConnection::Sqlite),
        };
        drop(waiting);
        let waited = started.elapsed();
        inner.metrics.waited(waited);
        match result {
            Ok(lent) => {
                permit.success(Duration::ZERO);
                Ok(SqlConnection {
                    lent,
                    since: Instant::now(),
                    pool: self.clone(),
                })
            }
            Err(sqlx::Error::PoolTimedOut) => {
                inner.metrics.timed_out();
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
                inner.metrics.connect_failed();
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
        let Driver::Postgres(_, gate) = &self.inner.driver else {
            return Ok(statement.await);
        };
        match gate.watch(statement, PROBE_STATEMENT_AFTER).await {
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

    /// Most connections open at once: `pool_size + max_overflow`.
    pub fn max_connections(&self) -> u32 {
        self.inner.max
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
            .sizes(stats.idle, stats.in_use, stats.waiting);
        stats
    }

    /// Checks that the database answers `SELECT 1`, within the acquire timeout.
    pub async fn ping(&self) -> Result<()> {
        let check = async {
            let mut conn = self.acquire().await?;
            let result = match conn.lent_mut() {
                LentConnection::Postgres(c) => {
                    sqlx::query("SELECT 1").execute(&mut **c).await.map(drop)
                }
                LentConnection::Sqlite(c) => {
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

impl Drop for Inner {
    fn drop(&mut self) {
        // The pool's callbacks hold the servers, and the servers the pool.
        if let Driver::Postgres(_, gate) = &self.driver {
            gate.servers().detach();
        }
    }
}

type Check<'c> = std::pin::Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// What a backend adds to sqlx's connection callbacks.
trait ConnectionChecks<DB: sqlx::Database>: Send + Sync + 'static {
    /// Whether a connection `age` old must be closed instead of lent.
    fn stale(&self, _age: Duration) -> bool {
        false
    }

    /// Checks a new connection; an error closes it, and sqlx connects
    /// again (within the acquire timeout).
    fn check<'c>(&'c self, _conn: &'c mut DB::Connection) -> Check<'c> {
        Box::pin(async { Ok(()) })
    }
}

/// SQLite: nothing to check.
struct NoChecks;

impl<DB: sqlx::Database> ConnectionChecks<DB> for NoChecks {}

/// PostgreSQL: the server choice of `servers.rs`.
struct PgChecks(Arc<OutageGate>);

impl ConnectionChecks<Postgres> for PgChecks {
    fn stale(&self, age: Duration) -> bool {
        self.0.servers().opened_before_demotion(age)
    }

    fn check<'c>(&'c self, conn: &'c mut sqlx::PgConnection) -> Check<'c> {
        Box::pin(async move {
            if self.0.servers().accepts(conn).await? {
                return Ok(());
            }
            // Landed on a standby: look for the writable server, and let
            // sqlx connect again (to it, once found).
            self.0.recheck();
            Err(sqlx::Error::Configuration(
                "the server is read-only and target_session_attrs=read-write".into(),
            ))
        })
    }
}

/// `recycle`: whether connections expire (an in-memory SQLite database
/// lives only as long as its connections, so they must not).
fn pool_options<DB: sqlx::Database>(
    config: &ConnectionConfig,
    metrics: &PoolMetrics,
    recycle: bool,
    checks: Arc<dyn ConnectionChecks<DB>>,
) -> PoolOptions<DB> {
    let connected = metrics.clone();
    let (lifetime, jitter) = (config.max_lifetime, config.lifetime_jitter);
    let min = min_connections(config);
    let on_acquire = Arc::clone(&checks);
    PoolOptions::<DB>::new()
        .max_connections(config.pool_size.saturating_add(config.max_overflow))
        .min_connections(min)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let stale = on_acquire.stale(meta.age);
            Box::pin(async move {
                if recycle && meta.age >= jittered_lifetime(lifetime, jitter, meta.age) {
                    // Closed and replaced by sqlx, one at a time as each
                    // reaches its own lifetime.
                    return Ok(false);
                }
                if stale {
                    // Opened on a server since demoted to a standby.
                    return Ok(false);
                }
                if meta.idle_for >= VALIDATE_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .idle_timeout(recycle.then_some(config.idle_timeout))
        // The upper bound, for connections that sit idle; a connection
        // in use is replaced at its jittered lifetime (`before_acquire`).
        .max_lifetime(recycle.then_some(lifetime))
        .after_connect(move |conn, _meta| {
            // A connection opened for an acquire is timed from the
            // acquire's start (sqlx opens it at once when the pool has
            // room); one opened in the background to keep the pool warm is
            // counted, not timed.
            match ACQUIRE_STARTED.try_with(Instant::elapsed) {
                Ok(elapsed) => connected.created(elapsed),
                Err(_) => connected.created_untimed(),
            }
            let checks = Arc::clone(&checks);
            Box::pin(async move { checks.check(conn).await })
        })
}

/// Connections sqlx keeps open: with overflow, the pool proper stays warm
/// and only overflow connections close for idleness.
fn min_connections(config: &ConnectionConfig) -> u32 {
    if config.max_overflow > 0 {
        config.pool_size.max(config.min_idle)
    } else {
        config.min_idle
    }
}

/// The lifetime of the connection that is `age` old now: `lifetime`
/// shortened by up to `jitter` of it, by a fraction drawn from the
/// connection's opening time, taken to 100 µs. That time reads the same
/// at every check (the clock is read microseconds after sqlx measured the
/// age), so each connection keeps its lifetime, and connections that
/// finish opening 100 µs apart get different ones. A rare check that
/// lands on a quantum's edge draws again, still within the bounds.
pub(crate) fn jittered_lifetime(lifetime: Duration, jitter: f64, age: Duration) -> Duration {
    if jitter <= 0.0 {
        return lifetime;
    }
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // The opening time in 100 µs quanta from the first check, either way.
    let quanta = |d: Duration| (d.as_micros() / 100) as u64;
    let opened = match Instant::now().checked_sub(age) {
        Some(t) if t >= epoch => quanta(t - epoch),
        Some(t) => !quanta(epoch - t),
        None => 0,
    };
    // SplitMix64 of the opening quantum: uniform in [0, 1).
    let mut x = opened.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let fraction = (x >> 11) as f64 / (1u64 << 53) as f64;
    lifetime.mul_f64(1.0 - jitter.min(1.0) * fraction)
}

/// The servers of a PostgreSQL pool: the options from the URL or the
/// fields, for each listed host.
fn postgres_servers(config: &ConnectionConfig) -> Result<Servers> {
    let (url, hosts, target) = match &config.url {
        Some(url) => {
            let split = crate::hosts::split_url(url.expose())?;
            (Some(split.url), split.hosts, split.target)
        }
        None => (
            None,
            crate::hosts::split_hosts(&config.host, "host")?,
            TargetSession::Any,
        ),
    };
    let base = postgres_options(config, url.as_deref(), hosts.first())?;
    Ok(Servers::new(base, &hosts, target))
}

/// The options for `url` (the URL with its first host) or the fields
/// (with `first` host).
fn postgres_options(
    config: &ConnectionConfig,
    url: Option<&str>,
    first: Option<&crate::hosts::HostPort>,
) -> Result<PgConnectOptions> {
    let mut options = match url {
        // The parse error could quote the URL, password included: replace it.
        Some(url) => PgConnectOptions::from_str(url)
            .map_err(|_| Error::config("url", "not a valid PostgreSQL URL"))?,
        None => {
            let host = first.map_or(config.host.as_str(), |h| h.host.as_str());
            let mut o = PgConnectOptions::new_without_pgpass().host(host);
            // A port given with the host wins over the port field.
            if let Some(port) = first.and_then(|h| h.port).or(config.port_or_default()) {
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
    if let (Some(cert), Some(key)) = (&config.tls.client_cert, &config.tls.client_key) {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_lifetimes_within_its_fraction() {
        let lifetime = Duration::from_secs(100);
        let mut lifetimes: Vec<Duration> = (0..1000u64)
            .map(|ms| jittered_lifetime(lifetime, 0.2, Duration::from_millis(ms * 7 + 3)))
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        assert!(
            lifetimes
                .iter()
                .all(|l| *l <= lifetime && *l >= lifetime.mul_f64(0.8))
        );
        lifetimes.sort();
        // Spread over most of the allowed range, not bunched.
        let spread = lifetimes[999] - lifetimes[0];
        assert!(spread > Duration::from_secs(18), "{spread:?}");
        let median = lifetimes[500];
        assert!(
            median > Duration::from_secs(88) && median < Duration::from_secs(92),
            "{median:?}"
        );
        assert_eq!(
            jittered_lifetime(lifetime, 0.0, Duration::from_secs(5)),
            lifetime
        );
    }
}
