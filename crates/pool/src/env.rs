//! Building a [`ConnectionConfig`] from the design's environment variables.
//!
//! The library never reads the process environment: the caller passes a
//! lookup function (the binary passes `std::env::var`, tests a map). A
//! group prefix names one connection: `DB_POSTGRES`, `REDIS`, or
//! `DB_<NAME>` for further named databases. Variables, for prefix `P`:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `P_URL` | connection URL; wins over the split variables |
//! | `P_KIND` | `postgresql` or `sqlite` (only for `DB_<NAME>` groups without a URL) |
//! | `P_HOST`, `P_PORT`, `P_DATABASE`, `P_USERNAME`, `P_PASSWORD` | the server |
//! | `P_POOL_SIZE`, `P_MIN_IDLE` | pool bounds |
//! | `P_TIMEOUT` | seconds to connect and to wait for a connection (Redis: also per command) |
//! | `P_CONNECT_TIMEOUT` | seconds to open one connection, overriding `P_TIMEOUT` for that (default 2); also bounds the outage probe |
//! | `P_COMMAND_TIMEOUT` | seconds: PostgreSQL `statement_timeout`, Redis command timeout |
//! | `P_SSL` | `disable`, `prefer`, `require`/`true` (verified), `false` |
//! | `P_SSL_VERIFY` | `false` to skip certificate verification (test rigs only) |
//! | `P_SSL_CA` | PEM file of CA certificates to trust |
//! | `P_RETRY_ATTEMPTS`, `P_RETRY_DELAY` | connect retries; default `IO_RETRY_ATTEMPTS`, `IO_RETRY_DELAY` |
//! | `P_PGBOUNCER` | `true` behind PgBouncer in transaction pooling |
//! | `P_CLUSTER_NODES` | Redis Cluster seeds, `host:port,host:port` |
//! | `P_SENTINEL_SERVICE`, `P_SENTINEL_NODES` | Redis Sentinel |

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{ConnectionConfig, Kind, RedisTopology, TlsMode, kind_of_url};
use crate::error::{Error, Result};
use crate::secret::Secret;

impl ConnectionConfig {
    /// Builds the configuration of connection `name` from the variables of
    /// group `prefix`, starting from the defaults of `kind` (a URL's scheme
    /// or `P_KIND` may change it). A bad value fails naming its variable.
    pub fn from_env(
        name: impl Into<String>,
        prefix: &str,
        kind: Kind,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let var = |suffix: &str| {
            let key = format!("{prefix}_{suffix}");
            lookup(&key)
                .map(|v| (key, v.trim().to_owned()))
                .filter(|(_, v)| !v.is_empty())
        };
        let kind = match (var("URL"), var("KIND")) {
            (Some((key, url)), _) => {
                kind_of_url(&url).ok_or_else(|| Error::config(key, "unknown URL scheme"))?
            }
            (None, Some((key, k))) => match k.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => Kind::Postgres,
                "sqlite" => Kind::Sqlite,
                "redis" => Kind::Redis,
                _ => return Err(Error::config(key, "expected postgresql, sqlite or redis")),
            },
            (None, None) => kind,
        };
        let mut c = ConnectionConfig::new(name, kind);
        if let Some((_, url)) = var("URL") {
            c.url = Some(Secret::new(url));
        }
        if let Some((_, host)) = var("HOST") {
            c.host = host;
        }
        if let Some((key, port)) = var("PORT") {
            c.port = Some(
                parse(&key, &port, "a port number between 1 and 65535").and_then(|p: u16| {
                    if p == 0 {
                        Err(Error::config(
                            &key,
                            "expected a port number between 1 and 65535",
                        ))
                    } else {
                        Ok(p)
                    }
                })?,
            );
        }
        c.database = var("DATABASE").map(|(_, v)| v);
        c.username = var("USERNAME").map(|(_, v)| v);
        c.password = var("PASSWORD").map(|(_, v)| Secret::new(v));
        if let Some((key, v)) = var("POOL_SIZE") {
            c.pool_size = parse(&key, &v, "a whole number of connections")?;
            c.min_idle = c.min_idle.min(c.pool_size);
        }
        if let Some((key, v)) = var("MIN_IDLE") {
            c.min_idle = parse(&key, &v, "a whole number of connections")?;
        }
        if let Some((key, v)) = var("TIMEOUT") {
            let timeout = seconds(&key, &v)?;
            c.connect_timeout = timeout;
            c.acquire_timeout = timeout;
            if kind == Kind::Redis {
                c.command_timeout = Some(timeout);
            }
        }
        if let Some((key, v)) = var("CONNECT_TIMEOUT") {
            c.connect_timeout = seconds(&key, &v)?;
        }
        if let Some((key, v)) = var("COMMAND_TIMEOUT") {
            c.command_timeout = Some(seconds(&key, &v)?);
        }
        if let Some((key, v)) = var("SSL") {
            c.tls.mode = match v.to_ascii_lowercase().as_str() {
                "disable" | "false" | "off" | "0" => TlsMode::Disable,
                "prefer" => TlsMode::Prefer,
                "require" | "verify-full" | "true" | "on" | "1" => TlsMode::VerifyFull,
                _ => {
                    return Err(Error::config(
                        key,
                        "expected disable, prefer, require or verify-full",
                    ));
                }
            };
        }
        if let Some((key, v)) = var("SSL_VERIFY")
            && !boolean(&key, &v)?
            && c.tls.mode == TlsMode::VerifyFull
        {
            c.tls.mode = TlsMode::RequireNoVerify;
        }
        c.tls.ca_file = var("SSL_CA").map(|(_, v)| PathBuf::from(v));
        let fallback = |suffix: &str| {
            var(&format!("RETRY_{suffix}")).or_else(|| {
                let key = format!("IO_RETRY_{suffix}");
                lookup(&key)
                    .map(|v| (key, v.trim().to_owned()))
                    .filter(|(_, v)| !v.is_empty())
            })
        };
        if let Some((key, v)) = fallback("ATTEMPTS") {
            c.retry_attempts = parse(&key, &v, "a whole number of attempts")?;
        }
        if let Some((key, v)) = fallback("DELAY") {
            c.retry_delay = seconds(&key, &v)?;
        }
        if let Some((key, v)) = var("PGBOUNCER") {
            c.pgbouncer = boolean(&key, &v)?;
        }
        if let Some((key, v)) = var("CLUSTER_NODES") {
            c.redis_topology = RedisTopology::Cluster {
                nodes: nodes(&key, &v)?,
            };
        }
        if let Some((_, service)) = var("SENTINEL_SERVICE") {
            let (key, v) = var("SENTINEL_NODES").ok_or_else(|| {
                Error::config(
                    format!("{prefix}_SENTINEL_NODES"),
                    "required with a sentinel service",
                )
            })?;
            c.redis_topology = RedisTopology::Sentinel {
                service,
                nodes: nodes(&key, &v)?,
            };
        }
        c.validate().map_err(|e| match e {
            // Name the variable rather than the field.
            Error::Config { field, reason } => {
                Error::config(format!("{prefix}_{}", field.to_ascii_uppercase()), reason)
            }
            other => other,
        })?;
        Ok(c)
    }
}

fn parse<T: FromStr>(key: &str, value: &str, expected: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| Error::config(key, format!("expected {expected}")))
}

/// Seconds as a decimal number (`1`, `0.25`), as the design's variables are.
pub fn seconds(key: &str, value: &str) -> Result<Duration> {
    let secs: f64 = parse(key, value, "a number of seconds")?;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(Error::config(
            key,
            "expected a number of seconds greater than 0 and at most 86400",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `true`/`false` and the usual spellings.
pub fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::config(key, "expected true or false")),
    }
}

fn nodes(key: &str, value: &str) -> Result<Vec<(String, u16)>> {
    value
        .split(',')
        .map(|node| {
            let (host, port) = node
                .trim()
                .rsplit_once(':')
                .ok_or_else(|| Error::config(key, "expected host:port,host:port"))?;
            Ok((
                host.to_owned(),
                parse(key, port, "host:port with a numeric port")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn connect_timeout_overrides_timeout_for_connecting_only() {
        let c = ConnectionConfig::from_env(
            "primary",
            "DB_POSTGRES",
            Kind::Postgres,
            env(&[
                ("DB_POSTGRES_HOST", "db"),
                ("DB_POSTGRES_TIMEOUT", "7"),
                ("DB_POSTGRES_CONNECT_TIMEOUT", "0.5"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.connect_timeout, c.acquire_timeout),
            (Duration::from_millis(500), Duration::from_secs(7))
        );
        let err = ConnectionConfig::from_env(
            "primary",
            "DB_POSTGRES",
            Kind::Postgres,
            env(&[
                ("DB_POSTGRES_HOST", "db"),
                ("DB_POSTGRES_CONNECT_TIMEOUT", "0"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("DB_POSTGRES_CONNECT_TIMEOUT"),
            "{err}"
        );
    }

    #[test]
    fn the_design_variables_build_a_postgres_config() {
        let c = ConnectionConfig::from_env(
            "primary",
            "DB_POSTGRES",
            Kind::Postgres,
            env(&[
                ("DB_POSTGRES_HOST", "db"),
                ("DB_POSTGRES_PORT", "6432"),
                ("DB_POSTGRES_DATABASE", "app"),
                ("DB_POSTGRES_USERNAME", "ada"),
                ("DB_POSTGRES_PASSWORD", "hunter2"),
                ("DB_POSTGRES_POOL_SIZE", "20"),
                ("DB_POSTGRES_TIMEOUT", "2.5"),
                ("DB_POSTGRES_PGBOUNCER", "true"),
                ("DB_POSTGRES_SSL", "require"),
                ("IO_RETRY_ATTEMPTS", "5"),
                ("IO_RETRY_DELAY", "0.5"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.pool_size),
            ("db", Some(6432), 20)
        );
        assert_eq!(c.connect_timeout, Duration::from_millis(2500));
        assert_eq!(c.acquire_timeout, Duration::from_millis(2500));
        assert_eq!(
            (c.retry_attempts, c.retry_delay),
            (5, Duration::from_millis(500))
        );
        assert!(c.pgbouncer);
        assert_eq!(c.tls.mode, TlsMode::VerifyFull);
        assert_eq!(c.password.as_ref().unwrap().expose(), "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_url_wins_and_sets_the_kind() {
        let c = ConnectionConfig::from_env(
            "analytics",
            "DB_ANALYTICS",
            Kind::Postgres,
            env(&[("DB_ANALYTICS_URL", "sqlite://a.db")]),
        )
        .unwrap();
        assert_eq!(c.kind, Kind::Sqlite);
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_secrets() {
        let cases = [
            (("DB_POSTGRES_PORT", "54x2"), "DB_POSTGRES_PORT"),
            (("DB_POSTGRES_PORT", "0"), "DB_POSTGRES_PORT"),
            (("DB_POSTGRES_POOL_SIZE", "-1"), "DB_POSTGRES_POOL_SIZE"),
            (("DB_POSTGRES_POOL_SIZE", "0"), "DB_POSTGRES_POOL_SIZE"),
            (("DB_POSTGRES_TIMEOUT", "soon"), "DB_POSTGRES_TIMEOUT"),
            (("DB_POSTGRES_SSL", "maybe"), "DB_POSTGRES_SSL"),
            (
                ("DB_POSTGRES_URL", "mysql://u:hunter2@h/db"),
                "DB_POSTGRES_URL",
            ),
            (("IO_RETRY_ATTEMPTS", "three"), "IO_RETRY_ATTEMPTS"),
        ];
        for ((key, value), named) in cases {
            let err = ConnectionConfig::from_env(
                "p",
                "DB_POSTGRES",
                Kind::Postgres,
                env(&[(key, value)]),
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(named), "{key}={value}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn redis_cluster_and_sentinel() {
        let c = ConnectionConfig::from_env(
            "cache",
            "REDIS",
            Kind::Redis,
            env(&[("REDIS_CLUSTER_NODES", "a:7000, b:7001")]),
        )
        .unwrap();
        assert_eq!(
            c.redis_topology,
            RedisTopology::Cluster {
                nodes: vec![("a".into(), 7000), ("b".into(), 7001)]
            }
        );
        let err = ConnectionConfig::from_env(
            "cache",
            "REDIS",
            Kind::Redis,
            env(&[("REDIS_SENTINEL_SERVICE", "mymaster")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("REDIS_SENTINEL_NODES"));
        assert_eq!(c.command_timeout, Some(Duration::from_secs(1)));
    }
}
