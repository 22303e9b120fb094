//! The server's configuration from environment variables: the only place
//! in Sluice that reads them. Parsing goes through a lookup function, so
//! tests pass a map instead of mutating the process environment.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_api_client::UpstreamConfig;
use sluice_http_server::ServerConfig;
use sluice_pool::{ConnectionConfig, Kind, Secret};

/// A variable that stops start-up: its name and what is wrong (never its
/// value, which may be a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) variable: String,
    pub(crate) reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid configuration {}: {}",
            self.variable, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

fn error(variable: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        reason: reason.into(),
    }
}

/// Every variable the server reads, for `--help`.
pub(crate) const VARIABLES: &str = "\
Environment variables (all optional; a bad value stops start-up naming it):
  SLUICE_BIND                    listen address (default 127.0.0.1:8000)
  SLUICE_DB_SQLITE_PATH          SQLite file when no PostgreSQL is configured (default sluice.db)
  DATABASE_URL                   PostgreSQL URL; wins over the DB_POSTGRES_* parts
  DB_POSTGRES_HOST               PostgreSQL host (setting it selects PostgreSQL)
  DB_POSTGRES_PORT               port (default 5432)
  DB_POSTGRES_DATABASE           database name
  DB_POSTGRES_USERNAME           user
  DB_POSTGRES_PASSWORD           password (never logged)
  DB_POSTGRES_POOL_SIZE          most connections (default 10)
  DB_POSTGRES_TIMEOUT            seconds to wait for a free connection, and to connect unless set below (default 5)
  DB_POSTGRES_CONNECT_TIMEOUT    seconds to open one connection; a server that never answers is found down after it (default 2)
  DB_POSTGRES_SSL                disable, prefer, require (verified) (default disable)
  DB_POSTGRES_SSL_CA             CA file for require
  DB_POSTGRES_PGBOUNCER          true behind PgBouncer in transaction pooling
  DB_POSTGRES_COMMAND_TIMEOUT    statement_timeout, seconds
  REDIS_URL                      Redis URL (redis://, rediss://, redis-cluster://, redis-sentinel://); Redis is optional
  REDIS_HOST                     Redis host (setting it enables the cache)
  REDIS_PORT                     port (default 6379)
  REDIS_DATABASE                 database number
  REDIS_POOL_SIZE                clients (default 10)
  REDIS_TIMEOUT                  seconds per command and to connect (default 1)
  REDIS_CLUSTER_NODES            host:port,host:port of a Redis Cluster
  REDIS_SENTINEL_SERVICE         with REDIS_SENTINEL_NODES: a primary found through Sentinel
  API_EXTERNAL_BASE_URL          the upstream behind /external-data (any API_<NAME>_* group is read the same way)
  API_EXTERNAL_TIMEOUT           seconds per attempt (default 10: room for retries within the 30 s deadline)
  API_EXTERNAL_SSL_VERIFY        false to skip certificate checks (default true)
  API_EXTERNAL_TOKEN             sent as Authorization: Bearer (never logged)
  API_EXTERNAL_HEADERS           JSON object of headers sent with every request
  API_EXTERNAL_MAX_CONNECTIONS   requests in flight to the upstream (default 100)
  API_EXTERNAL_MAX_BODY_BYTES    largest upstream answer read (default 10485760)
  API_EXTERNAL_MAX_BATCH_BYTES   upstream answer bytes one batch may hold; later items fail (default 33554432)
  API_EXTERNAL_CACHE_TTL         seconds to cache upstream answers in Redis (default 0: off)
  IO_RETRY_ATTEMPTS              attempts for retried I/O (default 3)
  IO_RETRY_DELAY                 base retry delay, seconds (default 1.0)
  IO_MAX_CONCURRENT_REQUESTS     upstream requests in flight, whole server (default 100)
  IO_REQUEST_TIMEOUT             seconds a request may take (default 30)
  IO_MAX_BATCH_SIZE              ids per batch request (default 1000)
  SLUICE_MAX_BODY_BYTES          request body limit (default 1048576)
  SLUICE_MAX_CONCURRENCY         requests handled at once before shedding load (default 1024)
  SLUICE_AUTH_TOKENS             comma-separated bearer tokens (default: no auth)
  SLUICE_USER_CACHE_TTL          seconds users stay cached in Redis (default 60)
  SLUICE_SHUTDOWN_GRACE          seconds in-flight requests get on shutdown (default 30)
  SLUICE_SHUTDOWN_LINGER         seconds between readiness off and the listener closing (default 1)
  SLUICE_HEADER_READ_TIMEOUT     seconds from accept or a request's first byte to its headers (default 10)
  SLUICE_IDLE_TIMEOUT            seconds an idle keep-alive connection is kept (default 60)
  SLUICE_BODY_READ_TIMEOUT       seconds a request body may take to arrive; 408 after (default 10)
  SLUICE_MAX_CONNECTIONS         open connections at once (default: from the file-descriptor limit)
  SLUICE_TLS_CERT                PEM certificate chain: serve HTTPS (with SLUICE_TLS_KEY)
  SLUICE_TLS_KEY                 PEM private key
  RUST_LOG                       log filter (default info)";

/// Whether `name` is one of the server's variables (so a value that is
/// not UTF-8 stops start-up instead of being ignored).
pub(crate) fn is_ours(name: &str) -> bool {
    ["SLUICE_", "DB_", "API_", "REDIS_", "IO_"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "DATABASE_URL"
}

/// The largest count any variable accepts (connections, sizes, caps).
const MAX_COUNT: usize = 1 << 30;

/// `SLUICE_AUTH_TOKENS`: unset means no authentication; set, it must name
/// at least one token (a list of nothing — empty, `,`, spaces — is an
/// error, never "auth off").
fn auth_tokens(raw: Option<String>) -> Result<Vec<Secret<String>>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let tokens: Vec<Secret<String>> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.to_owned()))
        .collect();
    if tokens.is_empty() {
        return Err(error(
            "SLUICE_AUTH_TOKENS",
            "names no token; unset it to turn authentication off",
        ));
    }
    if tokens
        .iter()
        .any(|t| t.expose().chars().any(|c| !c.is_ascii_graphic()))
    {
        return Err(error(
            "SLUICE_AUTH_TOKENS",
            "tokens must be printable ASCII without spaces",
        ));
    }
    Ok(tokens)
}

/// Everything start-up needs.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) bind: SocketAddr,
    pub(crate) database: ConnectionConfig,
    /// The variable that configured the database, named if it is unreachable.
    pub(crate) database_variable: &'static str,
    pub(crate) redis: Option<ConnectionConfig>,
    /// The variable that configured Redis.
    pub(crate) redis_variable: &'static str,
    pub(crate) upstream: Option<UpstreamConfig>,
    /// Further `API_<NAME>_*` groups, by name.
    pub(crate) other_upstreams: Vec<UpstreamConfig>,
    pub(crate) max_in_flight: usize,
    pub(crate) server: ServerConfig,
    /// Certificate chain and key files for HTTPS.
    pub(crate) tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Settings {
    /// `names` are the variables set (to find `API_<NAME>_BASE_URL`
    /// groups); `lookup` reads one.
    pub(crate) fn from_lookup(
        names: &[String],
        lookup: &dyn Fn(&str) -> Option<String>,
        default_max_connections: usize,
    ) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let pool_error = |e: sluice_pool::Error| match e {
            sluice_pool::Error::Config { field, reason } => ConfigError {
                variable: field,
                reason,
            },
            other => error("database", other.to_string()),
        };
        let bind = match get("SLUICE_BIND") {
            Some(v) => v
                .parse()
                .map_err(|_| error("SLUICE_BIND", "expected an address such as 127.0.0.1:8000"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
        };
        // DATABASE_URL stands in for DB_POSTGRES_URL: a URL wins over parts.
        let postgres_lookup = |key: &str| match key {
            "DB_POSTGRES_URL" => get("DATABASE_URL"),
            other => get(other),
        };
        let database = if get("DATABASE_URL").is_some() || get("DB_POSTGRES_HOST").is_some() {
            let mut c = ConnectionConfig::from_env(
                "primary",
                "DB_POSTGRES",
                Kind::Postgres,
                postgres_lookup,
            )
            .map_err(|e| match e {
                sluice_pool::Error::Config { field, reason } if field == "DB_POSTGRES_URL" => {
                    ConfigError {
                        variable: "DATABASE_URL".into(),
                        reason,
                    }
                }
                other => pool_error(other),
            })?;
            if c.kind != Kind::Postgres {
                return Err(error("DATABASE_URL", "expected a postgres:// URL"));
            }
            c.name = "primary".into();
            c
        } else {
            let mut c = ConnectionConfig::new("primary", Kind::Sqlite);
            c.database = Some(get("SLUICE_DB_SQLITE_PATH").unwrap_or_else(|| "sluice.db".into()));
            c
        };
        let database_variable = if get("DATABASE_URL").is_some() {
            "DATABASE_URL"
        } else if get("DB_POSTGRES_HOST").is_some() {
            "DB_POSTGRES_HOST"
        } else {
            "SLUICE_DB_SQLITE_PATH"
        };
        let redis_variable = if get("REDIS_URL").is_some() {
            "REDIS_URL"
        } else {
            "REDIS_HOST"
        };
        let redis = if get("REDIS_URL").is_some() || get("REDIS_HOST").is_some() {
            Some(
                ConnectionConfig::from_env("redis", "REDIS", Kind::Redis, get)
                    .map_err(pool_error)?,
            )
        } else {
            None
        };
        let mut other_upstreams = Vec::new();
        for name in names {
            let Some(group) = name
                .strip_prefix("API_")
                .and_then(|n| n.strip_suffix("_BASE_URL"))
            else {
                continue;
            };
            if group.is_empty() || group == "EXTERNAL" {
                continue;
            }
            if let Some(config) = UpstreamConfig::from_env(group, get).map_err(|e| ConfigError {
                variable: e.field,
                reason: e.reason,
            })? {
                other_upstreams.push(config);
            }
        }
        other_upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let upstream = UpstreamConfig::from_env("external", get).map_err(|e| ConfigError {
            variable: e.field,
            reason: e.reason,
        })?;
        // Counts are capped well below what would overflow a semaphore or
        // an allocation: a value past the cap is a typo, not a wish.
        let whole = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        error(
                            key,
                            format!("expected a whole number from 1 to {MAX_COUNT}"),
                        )
                    }),
            }
        };
        let seconds =
            |key: &str, default: Duration, zero_ok: bool| -> Result<Duration, ConfigError> {
                match get(key) {
                    None => Ok(default),
                    Some(v) if zero_ok && v.parse::<f64>() == Ok(0.0) => Ok(Duration::ZERO),
                    Some(v) => sluice_pool::seconds(key, &v)
                        .map_err(|_| error(key, "expected a number of seconds greater than 0")),
                }
            };
        // The retry settings feed every pool and upstream; check them even
        // when nothing that retries is configured, so a typo never waits.
        whole("IO_RETRY_ATTEMPTS", 3)?;
        seconds("IO_RETRY_DELAY", Duration::from_secs(1), true)?;
        let defaults = ServerConfig::default();
        let server = ServerConfig {
            max_body_bytes: whole("SLUICE_MAX_BODY_BYTES", defaults.max_body_bytes)?,
            request_timeout: seconds("IO_REQUEST_TIMEOUT", defaults.request_timeout, false)?,
            header_read_timeout: seconds(
                "SLUICE_HEADER_READ_TIMEOUT",
                defaults.header_read_timeout,
                false,
            )?,
            idle_timeout: seconds("SLUICE_IDLE_TIMEOUT", defaults.idle_timeout, false)?,
            body_read_timeout: seconds(
                "SLUICE_BODY_READ_TIMEOUT",
                defaults.body_read_timeout,
                false,
            )?,
            max_connections: whole("SLUICE_MAX_CONNECTIONS", default_max_connections)?,
            shutdown_linger: seconds("SLUICE_SHUTDOWN_LINGER", defaults.shutdown_linger, true)?,
            max_concurrency: whole("SLUICE_MAX_CONCURRENCY", defaults.max_concurrency)?,
            auth_tokens: auth_tokens(lookup("SLUICE_AUTH_TOKENS"))?,
            user_cache_ttl: seconds("SLUICE_USER_CACHE_TTL", defaults.user_cache_ttl, false)?,
            external_cache_ttl: seconds(
                "API_EXTERNAL_CACHE_TTL",
                defaults.external_cache_ttl,
                true,
            )?,
            max_batch_size: whole("IO_MAX_BATCH_SIZE", defaults.max_batch_size)?,
            shutdown_grace: seconds("SLUICE_SHUTDOWN_GRACE", defaults.shutdown_grace, false)?,
        };
        let tls = match (get("SLUICE_TLS_CERT"), get("SLUICE_TLS_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(error("SLUICE_TLS_KEY", "required with SLUICE_TLS_CERT"));
            }
            (None, Some(_)) => {
                return Err(error("SLUICE_TLS_CERT", "required with SLUICE_TLS_KEY"));
            }
        };
        Ok(Self {
            bind,
            database,
            database_variable,
            redis,
            redis_variable,
            upstream,
            other_upstreams,
            max_in_flight: whole("IO_MAX_CONCURRENT_REQUESTS", 100)?,
            server,
            tls,
        })
    }

    /// One line for the log: where it listens and on what, no secrets.
    pub(crate) fn describe(&self) -> String {
        format!(
            "listening on {}://{} with database {}, cache {}, upstream {}{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.bind,
            self.database.describe(),
            self.redis
                .as_ref()
                .map_or_else(|| "off".to_owned(), ConnectionConfig::describe),
            self.upstream.as_ref().map_or_else(
                || "off".to_owned(),
                |u| sluice_pool::redact_url(u.base_url.as_str())
            ),
            if self.server.auth_tokens.is_empty() {
                ""
            } else {
                ", auth on"
            },
        )
    }

    /// The SQLite file in use, if any.
    #[cfg(test)]
    pub(crate) fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        (self.database.kind == Kind::Sqlite)
            .then(|| std::path::PathBuf::from(self.database.database.clone().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = map.keys().cloned().collect();
        Settings::from_lookup(&names, &move |k: &str| map.get(k).cloned(), 1000)
    }

    #[test]
    fn further_api_groups_are_read_and_checked() {
        let s = settings(&[
            ("API_INTERNAL_BASE_URL", "http://10.0.0.1:9000"),
            ("API_BILLING_BASE_URL", "https://billing.example.com"),
        ])
        .unwrap();
        let names: Vec<&str> = s.other_upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["billing", "internal"]);
        let err = settings(&[
            ("API_INTERNAL_BASE_URL", "http://x"),
            ("API_INTERNAL_TIMEOUT", "never"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "API_INTERNAL_TIMEOUT");
    }

    #[test]
    fn nothing_configured_means_sqlite_on_localhost() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.bind, SocketAddr::from(([127, 0, 0, 1], 8000)));
        assert_eq!(s.sqlite_path(), Some(std::path::PathBuf::from("sluice.db")));
        assert!(s.redis.is_none() && s.upstream.is_none());
        assert_eq!(s.max_in_flight, 100);
    }

    #[test]
    fn urls_win_and_passwords_stay_out_of_the_description() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://ada:hunter2@db:5432/app"),
            ("DB_POSTGRES_HOST", "ignored"),
            ("DB_POSTGRES_POOL_SIZE", "20"),
            ("REDIS_URL", "redis://:hunter2@cache:6379/0"),
            (
                "API_EXTERNAL_BASE_URL",
                "https://user:hunter2@api.example.com",
            ),
            ("SLUICE_AUTH_TOKENS", "a, b"),
        ])
        .unwrap();
        assert_eq!(s.database.kind, Kind::Postgres);
        assert_eq!(s.database.pool_size, 20);
        assert_eq!(s.server.auth_tokens.len(), 2);
        let line = s.describe();
        assert!(!line.contains("hunter2"), "{line}");
        assert!(
            line.contains("db:5432/app") && line.contains("auth on"),
            "{line}"
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (key, value, named) in [
            ("SLUICE_BIND", "localhost", "SLUICE_BIND"),
            ("DATABASE_URL", "mysql://x/y", "DATABASE_URL"),
            ("DB_POSTGRES_HOST", "db", "none"),
            (
                "IO_MAX_CONCURRENT_REQUESTS",
                "lots",
                "IO_MAX_CONCURRENT_REQUESTS",
            ),
            ("IO_REQUEST_TIMEOUT", "-3", "IO_REQUEST_TIMEOUT"),
            ("SLUICE_MAX_BODY_BYTES", "1MB", "SLUICE_MAX_BODY_BYTES"),
            (
                "API_EXTERNAL_BASE_URL",
                "not a url",
                "API_EXTERNAL_BASE_URL",
            ),
            ("REDIS_PORT", "x", "none"),
            ("SLUICE_TLS_CERT", "cert.pem", "SLUICE_TLS_KEY"),
        ] {
            let mut pairs = vec![(key, value)];
            if named == "none" {
                // Valid alone; pair it with a broken companion.
                pairs.push(if key == "DB_POSTGRES_HOST" {
                    ("DB_POSTGRES_PORT", "99999")
                } else {
                    ("REDIS_HOST", "cache")
                });
                let err = settings(&pairs).unwrap_err();
                assert!(err.variable.ends_with("_PORT"), "{err}");
                continue;
            }
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.variable, named, "{err}");
            assert!(!err.to_string().contains(value) || value.len() < 3, "{err}");
        }
    }
}
