//! [`SqlPool`]: pooled PostgreSQL or SQLite connections on sqlx.

mod handoff;
mod options;

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sluice_metrics::PoolMetrics;
use sluice_retry::{BreakerConfig, CircuitBreaker, Window};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection as _, Postgres, Sqlite};

use crate::config::{ConnectionConfig, Kind};
use crate::error::{ConnectError, Error, Result};
use crate::hosts::TargetSession;
use crate::outage::{OutageGate, PROBE_AFTER, PROBE_STATEMENT_AFTER, Watched};
use crate::stats::{PoolStats, Waiting};
use handoff::{Acquired, Given, Handoff, Kept, Taken, Wait, first_of};
use options::{
    NoChecks, PgChecks, jittered_lifetime, min_connections, pool_options, postgres_servers,
    sqlite_options,
};

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
    /// Connections' lifetime and its jitter (`before_acquire` and the
    /// handoff both apply them).
    lifetime: Duration,
    jitter: f64,
    waiting: AtomicU32,
    breaker: CircuitBreaker,
    metrics: PoolMetrics,
    /// PostgreSQL connections passed between callers (`handoff.rs`).
    handoff: Handoff,
    /// The runtime the pool was opened in.
    runtime: Option<tokio::runtime::Handle>,
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
    /// `None` only once dropped.
    lent: Option<LentConnection>,
    /// When the connection was opened, where known (PostgreSQL).
    opened: Option<Instant>,
    /// Set by [`finished`](Self::finished), cleared by
    /// [`lent_mut`](Self::lent_mut).
    finished: bool,
    discarded: bool,
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
        self.finished = false;
        match &mut self.lent {
            Some(lent) => lent,
            None => unreachable!("a connection is taken out only when dropped"),
        }
    }

    /// Says that the work on this connection finished cleanly: every
    /// statement ran to its end and no transaction is open. Such a
    /// PostgreSQL connection goes straight to the next caller when it is
    /// dropped, without sqlx's release check (a Sync round trip to the
    /// server and a task). Without this call, or after
    /// [`lent_mut`](Self::lent_mut) again, sqlx checks it as usual. A
    /// connection that is in a transaction or has unsent messages (a
    /// dropped transaction's queued rollback) is checked in any case.
    pub fn finished(&mut self) {
        self.finished = true;
    }

    /// Closes this connection when it is dropped instead of returning it
    /// to the pool: for a connection whose statement was abandoned midway.
    pub fn discard(&mut self) {
        self.discarded = true;
        match &mut self.lent {
            Some(LentConnection::Postgres(c)) => c.close_on_drop(),
            Some(LentConnection::Sqlite(c)) => c.close_on_drop(),
            None => {}
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
        let Some(LentConnection::Postgres(conn)) = self.lent.take() else {
            return;
        };
        match self.opened {
            Some(opened) if self.finished && !self.discarded => self.pool.hand_off(conn, opened),
            // Dropped here: sqlx checks it (or closes it, when discarded).
            _ => self.pool.to_sqlx(conn),
        }
    }
}

/// What sqlx's callbacks tell the acquire running in their task (sqlx runs
/// them inline, in the caller's task; those of a background connect see
/// none).
struct Acquiring {
    /// When the acquire started: a connection that sqlx opens for it is
    /// timed from there.
    started: Instant,
    /// When the connection sqlx settled on was opened.
    opened: Cell<Option<Instant>>,
}

impl Acquiring {
    fn new(started: Instant) -> Self {
        Self {
            started,
            opened: Cell::new(None),
        }
    }
}

tokio::task_local! {
    static ACQUIRING: Acquiring;
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
        let postgres = matches!(driver, Driver::Postgres(..));
        let pool = Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                driver,
                max,
                pgbouncer: config.pgbouncer,
                acquire_timeout: config.acquire_timeout,
                lifetime: config.max_lifetime,
                jitter: config.lifetime_jitter,
                waiting: AtomicU32::new(0),
                breaker,
                metrics,
                handoff: Handoff::default(),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        };
        if postgres {
            sweep_kept(Arc::downgrade(&pool.inner));
        }
        Ok(pool)
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
        // included) and is tens of kilobytes: boxed (here and in
        // `acquire_postgres`), every future that awaits this one stays
        // small and cheap to move.
        let result = match &inner.driver {
            Driver::Postgres(pool, gate) => {
                match self.acquire_postgres(pool, gate, started).await {
                    Watched::Done(result) => result,
                    Watched::Down => {
                        drop(waiting);
                        inner.metrics.waited(started.elapsed());
                        inner.metrics.connect_failed();
                        return Err(self.unavailable(gate.retry_after()));
                    }
                }
            }
            Driver::Sqlite(pool) => {
                Box::pin(ACQUIRING.scope(Acquiring::new(started), pool.acquire()))
                    .await
                    .map(|c| (LentConnection::Sqlite(c), None))
            }
        };
        drop(waiting);
        let waited = started.elapsed();
        inner.metrics.waited(waited);
        match result {
            Ok((lent, opened)) => {
                permit.success(Duration::ZERO);
                Ok(SqlConnection {
                    lent: Some(lent),
                    opened,
                    finished: false,
                    discarded: false,
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

    /// A PostgreSQL connection with when it was opened (where known): a
    /// kept one, a handed-over one, or sqlx's; `Down` when the outage gate
    /// finds the server down meanwhile.
    async fn acquire_postgres(
        &self,
        pool: &PgPool,
        gate: &Arc<OutageGate>,
        started: Instant,
    ) -> Watched<std::result::Result<(LentConnection, Option<Instant>), sqlx::Error>> {
        let inner = &self.inner;
        // sqlx at its maximum can only lend what comes back to it: wait
        // for a handoff too. With room, it opens a connection.
        let wait = if pool.size() >= inner.max && pool.num_idle() == 0 {
            Wait::Handoff
        } else {
            Wait::Sqlx
        };
        let mut unfit = Vec::new();
        let taken = inner.handoff.take(|k| self.lendable(k), &mut unfit, wait);
        // Back to sqlx, which checks them.
        drop(unfit);
        let acquire = || {
            Box::pin(ACQUIRING.scope(Acquiring::new(started), async {
                let result = pool.acquire().await;
                (result, ACQUIRING.with(|a| a.opened.get()))
            }))
        };
        let watched = match taken {
            Taken::Kept(kept) => Watched::Done((Acquired::Handed(kept), None)),
            Taken::Handoff(handed) => {
                let deadline = started + inner.acquire_timeout;
                gate.watch(first_of(handed, deadline, acquire), PROBE_AFTER)
                    .await
            }
            Taken::Sqlx(counted) => {
                let watched = gate
                    .watch(acquire(), PROBE_AFTER)
                    .await
                    .map(|(result, opened)| (Acquired::Sqlx(result, opened), None));
                drop(counted);
                watched
            }
        };
        watched.map(|(acquired, extra)| {
            if let Some(extra) = extra {
                self.pass_on(extra);
            }
            match acquired {
                Acquired::Handed(kept) => {
                    Ok((LentConnection::Postgres(kept.conn), Some(kept.opened)))
                }
                Acquired::Sqlx(result, opened) => {
                    result.map(|c| (LentConnection::Postgres(c), opened))
                }
            }
        })
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

    /// Whether a kept connection may be lent without sqlx's checks: it
    /// came back less than [`VALIDATE_AFTER_IDLE`] ago and is
    /// [`fresh`](Self::fresh).
    fn lendable(&self, kept: &Kept) -> bool {
        kept.returned.elapsed() < VALIDATE_AFTER_IDLE && self.fresh(kept.opened)
    }

    /// Whether a PostgreSQL connection opened at `opened` is within its
    /// jittered lifetime and was not opened before a demotion: what
    /// `before_acquire` checks.
    fn fresh(&self, opened: Instant) -> bool {
        let inner = &self.inner;
        let age = opened.elapsed();
        let demoted = match &inner.driver {
            Driver::Postgres(_, gate) => gate.servers().opened_before_demotion(age),
            Driver::Sqlite(_) => false,
        };
        !demoted && age < jittered_lifetime(inner.lifetime, inner.jitter, age)
    }

    /// A PostgreSQL connection whose work finished cleanly: to the next
    /// caller, or kept, unless it needs sqlx's release check (then it is
    /// dropped, which returns it to sqlx).
    fn hand_off(&self, conn: PoolConnection<Postgres>, opened: Instant) {
        if conn.is_in_transaction() || conn.should_flush() || !self.fresh(opened) {
            self.to_sqlx(conn);
            return;
        }
        self.pass_on(Kept {
            conn,
            opened,
            // Stamped by `give` if it is kept (not read when handed over).
            returned: opened,
        });
    }

    /// Drops `conn`, which returns it to sqlx (checked, or closed when
    /// marked so), and sends the oldest caller waiting for a handoff to
    /// sqlx after it. Otherwise that caller would wait alone for up to
    /// `HANDOFF_ALONE` (50 ms) while the connection sits idle in sqlx: with
    /// one `POST /users` in six failing on a duplicate email, 17% of
    /// acquires waited that long.
    fn to_sqlx(&self, conn: PoolConnection<Postgres>) {
        drop(conn);
        self.inner.handoff.send_one_to_sqlx();
    }

    /// Gives `kept` to the handoff; what it does not take goes to sqlx.
    fn pass_on(&self, kept: Kept) {
        match self.inner.handoff.give(kept) {
            Given::Done => {}
            Given::Back(kept) => drop(kept),
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
            // sqlx counts kept connections as lent.
            Driver::Postgres(pool, _) => (pool.size(), pool.num_idle() + self.inner.handoff.len()),
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
            Driver::Postgres(pool, _) => {
                // Kept connections are lent as far as sqlx knows: back to
                // it, so that its close does not wait for them.
                drop(self.inner.handoff.close());
                pool.close().await;
            }
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

/// Every second, gives the connections kept unused for
/// [`VALIDATE_AFTER_IDLE`] back to sqlx (idle there, they are checked and
/// closed by its idle timeout as usual). Ends with the pool.
fn sweep_kept(pool: Weak<Inner>) {
    crate::sweep::every(VALIDATE_AFTER_IDLE, pool, |inner| {
        if let Some(cutoff) = Instant::now().checked_sub(VALIDATE_AFTER_IDLE) {
            drop(inner.handoff.expired(cutoff));
        }
    });
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
        // Kept connections are lent as far as sqlx knows, and dropping one
        // spawns sqlx's return task: inside the pool's runtime, also when
        // the last handle is dropped outside it (after `block_on`, say).
        let kept = self.handoff.close();
        if !kept.is_empty() {
            let _entered = self.runtime.as_ref().map(|r| r.enter());
            drop(kept);
        }
    }
}
