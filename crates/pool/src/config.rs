//! [`ConnectionConfig`]: one configuration type for every backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Which kind of server a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// PostgreSQL (also behind PgBouncer).
    Postgres,
    /// SQLite: a file, or memory.
    Sqlite,
    /// Redis: standalone, cluster or sentinel.
    Redis,
}

impl Kind {
    /// `postgresql`, `sqlite` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgresql",
            Kind::Sqlite => "sqlite",
            Kind::Redis => "redis",
        }
    }

    /// The matching `sluice-metrics` backend, for recording operations.
    pub fn metrics_backend(self) -> sluice_metrics::Backend {
        match self {
            Kind::Postgres => sluice_metrics::Backend::Postgresql,
            Kind::Sqlite => sluice_metrics::Backend::Sqlite,
            Kind::Redis => sluice_metrics::Backend::Redis,
        }
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Kind::Postgres => Some(5432),
            Kind::Redis => Some(6379),
            Kind::Sqlite => None,
        }
    }
}

/// How TLS is used on connections to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS if the server offers it, without verifying its certificate
    /// (PostgreSQL's `prefer`).
    Prefer,
    /// TLS, verifying the certificate chain and host name against the
    /// system's or the given CA roots. The default whenever TLS is asked for.
    VerifyFull,
    /// TLS without verifying the certificate. For test rigs only: it
    /// protects against eavesdropping, not against impersonation.
    RequireNoVerify,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// Whether and how to use TLS. Default: off (local servers); turning it
    /// on means [`TlsMode::VerifyFull`] unless verification is disabled.
    pub mode: TlsMode,
    /// A PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate chain, for servers that authenticate
    /// clients by certificate; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// How a Redis deployment is laid out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RedisTopology {
    /// One server (`host:port`).
    #[default]
    Standalone,
    /// A Redis Cluster, discovered from these seed nodes.
    Cluster {
        /// `(host, port)` of some cluster nodes.
        nodes: Vec<(String, u16)>,
    },
    /// A primary found through Sentinel.
    Sentinel {
        /// The monitored service's name.
        service: String,
        /// `(host, port)` of the sentinels.
        nodes: Vec<(String, u16)>,
    },
}

/// Everything needed to open a pool, for any backend.
///
/// `Default`-like values come from [`ConnectionConfig::new`]; every field
/// is public and documented with its default. A `url`, when set, wins over
/// the split fields it covers (host, port, database, user, password, TLS).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    /// The connection's name: labels its metrics and its errors.
    pub name: String,
    /// The backend.
    pub kind: Kind,
    /// A connection URL (`postgres://…`, `sqlite://…`, `redis://…`,
    /// `rediss://…`, `redis-cluster://…`, `redis-sentinel://…`). Secret:
    /// it may hold a password.
    pub url: Option<Secret<String>>,
    /// Server host. Default `127.0.0.1`.
    pub host: String,
    /// Server port. Default: the backend's (5432, 6379).
    pub port: Option<u16>,
    /// Database name (PostgreSQL), file path (SQLite; `:memory:` for an
    /// in-memory database), or database number (Redis).
    pub database: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret<String>>,
    /// TLS settings. Default: off.
    pub tls: TlsConfig,
    /// Connections of the pool proper. Default 10 for SQL; for Redis 1,
    /// since one multiplexed client pipelines every caller's commands on
    /// its connection, and more clients only split those batches (see the
    /// crate README). With `max_overflow` 0 (the default) this is the most
    /// connections open at once.
    pub pool_size: u32,
    /// Further SQL connections opened when all `pool_size` are busy, and
    /// closed again after `idle_timeout` without use (the design's
    /// `max_overflow`). Default 0. The pool then keeps `pool_size`
    /// connections warm: once opened, those are not closed for idleness.
    pub max_overflow: u32,
    /// Connections kept open when idle, opened at start. Default 1.
    pub min_idle: u32,
    /// A SQL connection idle for this long is closed (unless it is one of
    /// `min_idle`, or of `pool_size` when `max_overflow` is set). Default
    /// 10 min.
    pub idle_timeout: Duration,
    /// A SQL connection older than this is closed and replaced. Default
    /// 30 min.
    pub max_lifetime: Duration,
    /// Each SQL connection's lifetime is shortened by a random fraction up
    /// to this, fixed when it opens, so that connections opened together
    /// do not all expire together. Default 0.1; 0 turns it off.
    pub lifetime_jitter: f64,
    /// Time allowed to open one connection. Default 2 s. For PostgreSQL it
    /// also bounds the outage probe: a server that accepts TCP but never
    /// answers is found down after about this long (plus 100 ms), and
    /// callers fail fast from then on.
    pub connect_timeout: Duration,
    /// Time a caller waits for a free connection before `Timeout`. Default 5 s.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`; Redis command timeout. Default:
    /// none for PostgreSQL, 1 s for Redis.
    pub command_timeout: Option<Duration>,
    /// Connect attempts when opening the pool. Default 3.
    pub retry_attempts: u32,
    /// Base delay between connect attempts, and the pause between
    /// reconnect probes while the server is down. Default 1 s.
    pub retry_delay: Duration,
    /// Running behind PgBouncer in transaction pooling: no named prepared
    /// statements. Default false.
    pub pgbouncer: bool,
    /// Redis layout. Default standalone.
    pub redis_topology: RedisTopology,
    /// A PostgreSQL read replica (URL, possibly with several hosts) for
    /// reads that tolerate lag. This crate does not use it: `sluice-io`
    /// opens a second pool on it, named `<name>_replica`, with the same
    /// settings (`sluice_db::Database::with_replica`). Secret. Default none.
    pub read_replica_url: Option<Secret<String>>,
}

impl ConnectionConfig {
    /// A configuration with every default, for the backend `kind`.
    pub fn new(name: impl Into<String>, kind: Kind) -> Self {
        Self {
            name: name.into(),
            kind,
            url: None,
            host: "127.0.0.1".to_owned(),
            port: None,
            database: None,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            pool_size: match kind {
                Kind::Redis => 1,
                _ => 10,
            },
            max_overflow: 0,
            min_idle: 1,
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
            lifetime_jitter: 0.1,
            connect_timeout: Duration::from_secs(2),
            acquire_timeout: Duration::from_secs(5),
            command_timeout: match kind {
                Kind::Redis => Some(Duration::from_secs(1)),
                _ => None,
            },
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            pgbouncer: false,
            redis_topology: RedisTopology::Standalone,
            read_replica_url: None,
        }
    }

    /// A configuration from a URL; the backend comes from its scheme.
    pub fn from_url(name: impl Into<String>, url: &str) -> Result<Self> {
        let kind = kind_of_url(url).ok_or_else(|| {
            Error::config("url", "unknown scheme (expected postgres, postgresql, sqlite, redis, rediss, redis-cluster or redis-sentinel)")
        })?;
        let mut config = Self::new(name, kind);
        config.url = Some(Secret::new(url.to_owned()));
        config.validate()?;
        Ok(config)
    }

    /// The port to use: the configured one or the backend's default.
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or(self.kind.default_port())
    }

    /// Checks values that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::config("pool_size", "must be at least 1"));
        }
        if self.min_idle > self.pool_size {
            return Err(Error::config("min_idle", "must not exceed pool_size"));
        }
        if self.retry_attempts == 0 {
            return Err(Error::config("retry_attempts", "must be at least 1"));
        }
        if self.connect_timeout.is_zero() || self.acquire_timeout.is_zero() {
            return Err(Error::config("timeout", "must be greater than zero"));
        }
        if self.idle_timeout.is_zero() || self.max_lifetime.is_zero() {
            return Err(Error::config("idle_timeout", "must be greater than zero"));
        }
        if !(0.0..=1.0).contains(&self.lifetime_jitter) {
            return Err(Error::config(
                "lifetime_jitter",
                "must be a fraction from 0 to 1",
            ));
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err(Error::config(
                "tls",
                "a client certificate needs its key, and a key its certificate",
            ));
        }
        if self.pool_size.checked_add(self.max_overflow).is_none() {
            return Err(Error::config("max_overflow", "too large"));
        }
        if self.retry_delay.is_zero() {
            return Err(Error::config("retry_delay", "must be greater than zero"));
        }
        if self.kind == Kind::Postgres && self.url.is_none() {
            // One host or several (`db1,db2:5433`), checked before any
            // connect.
            crate::hosts::split_hosts(&self.host, "host")?;
        }
        if let Some(replica) = &self.read_replica_url {
            if self.kind != Kind::Postgres || kind_of_url(replica.expose()) != Some(Kind::Postgres)
            {
                return Err(Error::config(
                    "read_replica_url",
                    "a read replica is a postgres:// URL, for a PostgreSQL database",
                ));
            }
            check_postgres_url(replica.expose(), "read_replica_url")?;
        }
        if let Some(url) = &self.url {
            if kind_of_url(url.expose()) != Some(self.kind) {
                return Err(Error::config(
                    "url",
                    format!("scheme does not match the {} backend", self.kind.as_str()),
                ));
            }
            match self.kind {
                Kind::Postgres => check_postgres_url(url.expose(), "url")?,
                Kind::Redis if url::Url::parse(url.expose()).is_err() => {
                    return Err(Error::config("url", "not a valid URL"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The policy for opening the pool: `retry_attempts` tries, backoff
    /// from `retry_delay`, each try bounded by `connect_timeout`.
    #[cfg(any(feature = "sql", feature = "redis"))]
    pub(crate) fn connect_policy(&self) -> Result<sluice_retry::Policy> {
        sluice_retry::Policy::builder()
            .attempts(self.retry_attempts)
            .base_delay(self.retry_delay)
            .attempt_timeout(self.connect_timeout)
            .no_deadline()
            .no_breaker()
            .no_budget()
            .build()
            .map_err(|e| Error::config("retry", e.to_string()))
    }

    /// A description safe to log: backend, host, port and database, never
    /// credentials.
    pub fn describe(&self) -> String {
        if let Some(url) = &self.url {
            let redacted = crate::secret::redact_url(url.expose());
            let shown = match url::Url::parse(url.expose()) {
                Ok(_) => redacted.split('@').next_back().unwrap_or("").to_owned(),
                // Several hosts (`db1:5432,db2:5432`) are not a URL to the
                // `url` crate: show the hosts and the path, nothing else.
                Err(_) => hosts_and_path(url.expose()).unwrap_or(redacted),
            };
            return format!("{} {shown}", self.kind.as_str());
        }
        match self.kind {
            Kind::Sqlite => format!("sqlite {}", self.database.as_deref().unwrap_or(":memory:")),
            kind => format!(
                "{} {}:{}/{}",
                kind.as_str(),
                self.host,
                self.port_or_default().unwrap_or(0),
                self.database.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Checks a PostgreSQL URL (one host or several) as the pool will read
/// it, naming `field` in errors and never quoting the URL (it may hold a
/// password).
fn check_postgres_url(url: &str, field: &'static str) -> Result<()> {
    let named = |e: Error| match e {
        Error::Config { reason, .. } => Error::config(field, reason),
        other => other,
    };
    // Several hosts are not a URL to the `url` crate or to sqlx: the URL
    // with its first host must be.
    let first = crate::hosts::split_url(url).map_err(named)?.url;
    if url::Url::parse(&first).is_err() {
        return Err(Error::config(field, "not a valid URL"));
    }
    // What the driver itself refuses (`sslmode=bogus`, a bad port
    // parameter…) is a configuration error too, found before any connect.
    #[cfg(feature = "sql")]
    if <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&first).is_err() {
        return Err(Error::config(
            field,
            "not a valid PostgreSQL URL (check its query parameters, e.g. sslmode)",
        ));
    }
    Ok(())
}

/// `db1:5432,db2/app` out of `postgres://user:pw@db1:5432,db2/app?…`.
fn hosts_and_path(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let rest = rest.split('?').next().unwrap_or(rest);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!("{hosts}{path}"))
}

/// The backend a URL's scheme names.
pub fn kind_of_url(url: &str) -> Option<Kind> {
    let scheme = url.split_once(':')?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" => Some(Kind::Postgres),
        "sqlite" => Some(Kind::Sqlite),
        "redis" | "rediss" | "redis-cluster" | "redis-sentinel" => Some(Kind::Redis),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_scheme_picks_the_backend() {
        assert_eq!(
            ConnectionConfig::from_url("a", "postgres://u@h/db")
                .unwrap()
                .kind,
            Kind::Postgres
        );
        assert_eq!(
            ConnectionConfig::from_url("a", "sqlite://x.db")
                .unwrap()
                .kind,
            Kind::Sqlite
        );
        assert_eq!(
            ConnectionConfig::from_url("a", "rediss://h:6380")
                .unwrap()
                .kind,
            Kind::Redis
        );
        assert_eq!(
            ConnectionConfig::from_url("a", "redis-cluster://h:7000")
                .unwrap()
                .kind,
            Kind::Redis
        );
        let err = ConnectionConfig::from_url("a", "mysql://h/db").unwrap_err();
        assert!(err.to_string().contains("unknown scheme"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_describe() {
        let mut c =
            ConnectionConfig::from_url("primary", "postgres://ada:hunter2@db.internal:5432/app")
                .unwrap();
        c.password = Some(Secret::new("s3cret".into()));
        let shown = format!("{c:?} {}", c.describe());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(
            c.describe().contains("db.internal:5432/app"),
            "{}",
            c.describe()
        );
        let several = ConnectionConfig::from_url(
            "primary",
            "postgres://ada:p@ss@db1:5432,db2:5433/app?password=hunter2&target_session_attrs=read-write",
        )
        .unwrap();
        let shown = format!("{several:?} {}", several.describe());
        assert!(
            !shown.contains("hunter2") && !shown.contains("p@ss"),
            "{shown}"
        );
        assert_eq!(several.describe(), "postgresql db1:5432,db2:5433/app");
    }

    #[test]
    fn impossible_values_are_named() {
        let mut c = ConnectionConfig::new("p", Kind::Postgres);
        c.min_idle = 20;
        assert!(c.validate().unwrap_err().to_string().contains("min_idle"));
        c.min_idle = 1;
        c.pool_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("pool_size"));
    }
}
