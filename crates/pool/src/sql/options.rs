//! sqlx's options for a [`SqlPool`](super::SqlPool): connect options from
//! the configuration, pool options with the connection callbacks
//! (lifetime, demotion, idle ping, connect timing) and the lifetime jitter.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_metrics::PoolMetrics;
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::{ACQUIRING, VALIDATE_AFTER_IDLE};
use crate::config::{ConnectionConfig, TlsMode};
use crate::error::{Error, Result};
use crate::hosts::TargetSession;
use crate::outage::OutageGate;
use crate::servers::Servers;

type Check<'c> = std::pin::Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// What a backend adds to sqlx's connection callbacks.
pub(super) trait ConnectionChecks<DB: sqlx::Database>: Send + Sync + 'static {
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
pub(super) struct NoChecks;

impl<DB: sqlx::Database> ConnectionChecks<DB> for NoChecks {}

/// PostgreSQL: the server choice of `servers.rs`.
pub(super) struct PgChecks(pub(super) Arc<OutageGate>);

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
pub(super) fn pool_options<DB: sqlx::Database>(
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
            // Tells the acquire how old the connection it may get is.
            let _ = ACQUIRING.try_with(|a| a.opened.set(Instant::now().checked_sub(meta.age)));
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
            match ACQUIRING.try_with(|a| {
                a.opened.set(Some(Instant::now()));
                a.started.elapsed()
            }) {
                Ok(elapsed) => connected.created(elapsed),
                Err(_) => connected.created_untimed(),
            }
            let checks = Arc::clone(&checks);
            Box::pin(async move { checks.check(conn).await })
        })
}

/// Connections sqlx keeps open: with overflow, the pool proper stays warm
/// and only overflow connections close for idleness.
pub(super) fn min_connections(config: &ConnectionConfig) -> u32 {
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
pub(super) fn jittered_lifetime(lifetime: Duration, jitter: f64, age: Duration) -> Duration {
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
pub(super) fn postgres_servers(config: &ConnectionConfig) -> Result<Servers> {
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
pub(super) fn sqlite_options(config: &ConnectionConfig) -> Result<(SqliteConnectOptions, bool)> {
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
