//! [`RedisPool`]: a pool of Redis clients on fred, for one server, a
//! Cluster or a Sentinel group.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::Pool;
use fred::interfaces::ClientLike;
use fred::types::config::{Config, ReconnectPolicy, ServerConfig, TlsConnector};
use sluice_metrics::PoolMetrics;

use crate::config::{ConnectionConfig, Kind, RedisTopology, TlsMode};
use crate::error::{ConnectError, Error, Result};
use crate::stats::PoolStats;

/// A fixed-size pool of multiplexed Redis clients. Clones share it.
///
/// Commands time out after the configured command timeout, so a Redis that
/// is down or slow is reported quickly instead of hanging its caller. Lost
/// connections reconnect in the background with exponential backoff from
/// `retry_delay` up to 30 s, forever: a Redis restart is picked up without
/// reopening the pool.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    pool: Pool,
    size: u32,
    command_timeout: Duration,
    metrics: PoolMetrics,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("name", &self.inner.name)
            .field("size", &self.inner.size)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Builds the clients and connects them, retrying `retry_attempts`
    /// times; fails with one error naming the connection and the causes.
    #[tracing::instrument(skip(config), fields(name = %config.name))]
    pub async fn open(config: &ConnectionConfig) -> Result<Self> {
        config.validate()?;
        if config.kind != Kind::Redis {
            return Err(Error::config(
                "kind",
                "a RedisPool needs a Redis connection",
            ));
        }
        let fred_config = fred_config(config)?;
        let command_timeout = config.command_timeout.unwrap_or(Duration::from_secs(1));
        let delay_ms = u32::try_from(config.retry_delay.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let pool = fred::types::Builder::from_config(fred_config)
            .with_performance_config(|perf| perf.default_command_timeout = command_timeout)
            .with_connection_config(|conn| {
                conn.connection_timeout = config.connect_timeout;
                conn.internal_command_timeout = config.connect_timeout;
                // A command is tried once: retrying is the caller's policy.
                conn.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, delay_ms, 30_000, 2))
            .build_pool(config.pool_size as usize)
            .map_err(|e| Error::config("redis", e.details().to_owned()))?;
        pool.prefer_connected(true);
        let metrics = PoolMetrics::new(&config.name);
        // fred keeps every client of the pool connected, all multiplexed.
        metrics.limits(config.pool_size, config.pool_size, config.pool_size);
        let policy = config.connect_policy()?;
        let connected = policy
            .run(|_| async {
                let result = async {
                    pool.init().await?;
                    pool.ping::<()>(None).await
                }
                .await;
                match &result {
                    Ok(_) => metrics.created_untimed(),
                    Err(_) => metrics.connect_failed(),
                }
                result.map_err(ConnectError::Redis)
            })
            .await;
        if let Err(source) = connected {
            let _ = pool.quit().await;
            return Err(Error::Connect {
                name: config.name.clone(),
                backend: "redis",
                source,
            });
        }
        tracing::info!(target = %config.describe(), size = config.pool_size, "redis pool open");
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                pool,
                size: config.pool_size,
                command_timeout,
                metrics,
            }),
        })
    }

    /// The connection's configured name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The per-command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// The fred pool, for issuing commands (`sluice-db`'s cache uses it).
    pub fn client(&self) -> &Pool {
        &self.inner.pool
    }

    /// Sizes: `size` clients, of which `idle` are connected. Clients are
    /// multiplexed, so none is ever "in use" exclusively and none waits.
    pub fn stats(&self) -> PoolStats {
        let connected = self
            .inner
            .pool
            .clients()
            .iter()
            .filter(|c| c.is_connected())
            .count();
        let connected = u32::try_from(connected).unwrap_or(u32::MAX);
        let stats = PoolStats {
            size: self.inner.size,
            idle: connected,
            in_use: 0,
            max: self.inner.size,
            waiting: 0,
        };
        self.inner.metrics.sizes(stats.idle, 0, 0);
        stats
    }

    /// `PING`, within the command timeout.
    pub async fn ping(&self) -> Result<()> {
        self.inner
            .pool
            .ping::<()>(None)
            .await
            .map_err(|e| Error::Ping {
                name: self.inner.name.clone(),
                source: ConnectError::Redis(e),
            })
    }

    /// Closes every client.
    pub async fn close(&self) {
        let _ = self.inner.pool.quit().await;
    }
}

fn fred_config(config: &ConnectionConfig) -> Result<Config> {
    let mut fred = match &config.url {
        // fred's error could quote the URL; name the field instead.
        Some(url) => Config::from_url(url.expose())
            .map_err(|_| Error::config("url", "not a valid Redis URL"))?,
        None => {
            let port = config.port_or_default().unwrap_or(6379);
            let server = match &config.redis_topology {
                RedisTopology::Standalone => {
                    ServerConfig::new_centralized(config.host.clone(), port)
                }
                RedisTopology::Cluster { nodes } => ServerConfig::new_clustered(nodes.clone()),
                RedisTopology::Sentinel { service, nodes } => {
                    ServerConfig::new_sentinel(nodes.clone(), service.clone())
                }
            };
            let database = match &config.database {
                Some(db) => Some(db.parse::<u8>().map_err(|_| {
                    Error::config("database", "expected a Redis database number 0-255")
                })?),
                None => None,
            };
            Config {
                server,
                username: config.username.clone(),
                password: config.password.as_ref().map(|p| p.expose().clone()),
                database,
                ..Config::default()
            }
        }
    };
    match config.tls.mode {
        TlsMode::Disable => {}
        TlsMode::VerifyFull => fred.tls = Some(tls_connector(config)?.into()),
        TlsMode::Prefer | TlsMode::RequireNoVerify => {
            return Err(Error::config(
                "ssl",
                "Redis TLS is always verified: use require/verify-full (with a CA file for private CAs) or disable",
            ));
        }
    }
    Ok(fred)
}

fn tls_connector(config: &ConnectionConfig) -> Result<TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if config.tls.ca_file.is_none() && config.tls.client_cert.is_none() {
        return TlsConnector::default_rustls()
            .map_err(|e| Error::config("ssl", e.details().to_owned()));
    }
    let roots = crate::roots::ca_roots(config.tls.ca_file.as_deref())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| Error::config("ssl", "no TLS protocol version available"))?
    .with_root_certificates(roots);
    let tls = match (&config.tls.client_cert, &config.tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|_| Error::config("ssl_cert", "cannot read the client certificate"))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::config("ssl_cert", "not a PEM certificate file"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|_| Error::config("ssl_key", "cannot read a PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|_| Error::config("ssl_key", "the key does not match the certificate"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(tls))
}
