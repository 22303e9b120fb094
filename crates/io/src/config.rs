//! [`IoConfig`]: every named database, Redis and upstream, and the
//! manager's own settings, read from the variables of [`crate::VARIABLES`].

use std::path::PathBuf;
use std::time::Duration;

use sluice_api_client::UpstreamConfig;
use sluice_pool::{ConnectionConfig, Kind, RedisTopology, Secret, TlsMode};

use crate::read::{ConfigError, Reader};
use crate::vars::{VARIABLES, Variable, find, group_of};

/// Settings of the whole manager (`IO_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct IoSettings {
    /// Default connect and request attempts. Default 3.
    pub retry_attempts: u32,
    /// Default base retry delay. Default 1 s.
    pub retry_delay: Duration,
    /// Upstream requests in flight, all upstreams together. Default 100.
    pub max_concurrent_requests: usize,
    /// Default deadline of a call. Default 30 s.
    pub request_timeout: Duration,
    /// Most items in one batch. Default 1000.
    pub max_batch_size: usize,
}

impl Default for IoSettings {
    fn default() -> Self {
        Self {
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            max_concurrent_requests: 100,
            request_timeout: Duration::from_secs(30),
            max_batch_size: 1000,
        }
    }
}

/// What an [`IoManager`](crate::IoManager) opens: typed configurations,
/// built by hand or read from variables with [`IoConfig::from_lookup`].
#[derive(Debug, Clone, Default)]
pub struct IoConfig {
    /// SQL databases, each under its own name.
    pub databases: Vec<ConnectionConfig>,
    /// Redis servers, each under its own name.
    pub redis: Vec<ConnectionConfig>,
    /// Upstream APIs, each under its own name.
    pub apis: Vec<UpstreamConfig>,
    /// The manager's settings.
    pub settings: IoSettings,
}

/// The variables whose presence configures a group.
const DB_MARKERS: &[&str] = &["DB_<NAME>_URL", "DB_<NAME>_HOST", "DB_<NAME>_PATH"];
const REDIS_MARKERS: &[&str] = &[
    "REDIS_<NAME>_URL",
    "REDIS_<NAME>_HOST",
    "REDIS_<NAME>_CLUSTER_NODES",
    "REDIS_<NAME>_SENTINEL_SERVICE",
];
const API_MARKERS: &[&str] = &["API_<NAME>_BASE_URL"];

impl IoConfig {
    /// Reads every group configured among `names` (the variables that are
    /// set) through `lookup`. A bad value fails naming its variable.
    ///
    /// A `DB_<NAME>_*` group exists when its `URL`, `HOST` or `PATH` is
    /// set, a `REDIS_*`/`REDIS_<NAME>_*` group when its `URL`, `HOST`,
    /// `CLUSTER_NODES` or `SENTINEL_SERVICE` is, an `API_<NAME>_*` group
    /// when its `BASE_URL` is. Names are the group's in lower case
    /// (`DB_POSTGRES_*` → `postgres`); `REDIS_*` is named `redis`.
    pub fn from_lookup(
        names: &[String],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let tables: &[&[Variable]] = &[VARIABLES];
        Self::from_reader(names, &Reader::new(tables, lookup))
    }

    /// As [`IoConfig::from_lookup`], with a reader whose tables include
    /// [`VARIABLES`] (and maybe the caller's own).
    pub fn from_reader(names: &[String], r: &Reader<'_>) -> Result<Self, ConfigError> {
        let settings = io_settings(r)?;
        let mut config = IoConfig {
            settings,
            ..Self::default()
        };
        for group in groups(names, DB_MARKERS) {
            config
                .databases
                .push(database(r, &group, &config.settings)?);
        }
        for group in groups(names, REDIS_MARKERS) {
            config.redis.push(redis(r, &group, &config.settings)?);
        }
        for group in groups(names, API_MARKERS) {
            config.apis.push(api(r, &group, &config.settings)?);
        }
        Ok(config)
    }
}

/// The groups configured among `names`, sorted and without repeats.
fn groups(names: &[String], markers: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let v = find(&[VARIABLES], name)?;
            markers
                .contains(&v.name)
                .then(|| group_of(v.name, name))
                .flatten()
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

fn io_settings(r: &Reader<'_>) -> Result<IoSettings, ConfigError> {
    let d = IoSettings::default();
    Ok(IoSettings {
        retry_attempts: r
            .count_u32("IO_RETRY_ATTEMPTS")?
            .unwrap_or(d.retry_attempts),
        retry_delay: r.seconds("IO_RETRY_DELAY")?.unwrap_or(d.retry_delay),
        max_concurrent_requests: r
            .count_usize("IO_MAX_CONCURRENT_REQUESTS")?
            .unwrap_or(d.max_concurrent_requests),
        request_timeout: r
            .seconds("IO_REQUEST_TIMEOUT")?
            .unwrap_or(d.request_timeout),
        max_batch_size: r
            .count_usize("IO_MAX_BATCH_SIZE")?
            .unwrap_or(d.max_batch_size),
    })
}

/// Maps a typed configuration's complaint about a field to the variable.
fn field_error(prefix: &str, e: sluice_pool::Error) -> ConfigError {
    match e {
        sluice_pool::Error::Config { field, reason } => {
            let field = match field.as_str() {
                "timeout" => "TIMEOUT".to_owned(),
                "tls" => "SSL_CERT".to_owned(),
                "read_replica_url" => "READ_URL".to_owned(),
                other => other.to_ascii_uppercase(),
            };
            ConfigError::new(format!("{prefix}_{field}"), reason)
        }
        other => ConfigError::new(prefix, other.to_string()),
    }
}

/// The fields every SQL and Redis group shares.
fn connection(
    r: &Reader<'_>,
    prefix: &str,
    mut c: ConnectionConfig,
    io: &IoSettings,
) -> Result<ConnectionConfig, ConfigError> {
    let var = |suffix: &str| format!("{prefix}_{suffix}");
    if let Some(host) = r.text(&var("HOST"))? {
        c.host = host;
    }
    c.port = r.port(&var("PORT"))?;
    if let Some(db) = r.text(&var("DATABASE"))? {
        c.database = Some(db);
    }
    c.username = r.text(&var("USERNAME"))?;
    c.password = r.text(&var("PASSWORD"))?.map(Secret::new);
    if let Some(n) = r.count_u32(&var("POOL_SIZE"))? {
        c.pool_size = n;
        c.min_idle = c.min_idle.min(n);
    }
    if let Some(t) = r.seconds(&var("TIMEOUT"))? {
        c.connect_timeout = t;
        c.acquire_timeout = t;
        if c.kind == Kind::Redis {
            c.command_timeout = Some(t);
        }
    }
    if let Some(t) = r.seconds(&var("CONNECT_TIMEOUT"))? {
        c.connect_timeout = t;
    }
    if let Some(t) = r.seconds(&var("COMMAND_TIMEOUT"))? {
        c.command_timeout = Some(t);
    }
    if let Some(mode) = r.choice(&var("SSL"))? {
        c.tls.mode = match mode {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            _ => TlsMode::VerifyFull,
        };
    }
    if r.boolean(&var("SSL_VERIFY"))? == Some(false) && c.tls.mode == TlsMode::VerifyFull {
        c.tls.mode = TlsMode::RequireNoVerify;
    }
    c.tls.ca_file = r.text(&var("SSL_CA"))?.map(PathBuf::from);
    c.tls.client_cert = r.text(&var("SSL_CERT"))?.map(PathBuf::from);
    c.tls.client_key = r.text(&var("SSL_KEY"))?.map(PathBuf::from);
    match (&c.tls.client_cert, &c.tls.client_key) {
        (Some(_), None) => return Err(ConfigError::new(var("SSL_KEY"), "required with SSL_CERT")),
        (None, Some(_)) => return Err(ConfigError::new(var("SSL_CERT"), "required with SSL_KEY")),
        _ => {}
    }
    c.retry_attempts = r
        .count_u32(&var("RETRY_ATTEMPTS"))?
        .unwrap_or(io.retry_attempts);
    c.retry_delay = match r.seconds(&var("RETRY_DELAY"))? {
        Some(d) => d,
        // IO_RETRY_DELAY may be 0 (no delay between upstream retries);
        // a pool's probe pacing needs a pause, so 0 keeps the default.
        None if io.retry_delay.is_zero() => c.retry_delay,
        None => io.retry_delay,
    };
    Ok(c)
}

fn database(r: &Reader<'_>, group: &str, io: &IoSettings) -> Result<ConnectionConfig, ConfigError> {
    let prefix = format!("DB_{group}");
    let var = |suffix: &str| format!("{prefix}_{suffix}");
    let name = group.to_ascii_lowercase();
    let url = r.text(&var("URL"))?;
    let kind = if let Some(url) = &url {
        sluice_pool::kind_of_url(url)
            .filter(|k| *k != Kind::Redis)
            .ok_or_else(|| {
                ConfigError::new(var("URL"), "expected a postgres:// or sqlite:// URL")
            })?
    } else if r.is_set(&var("PATH")) {
        Kind::Sqlite
    } else {
        match r.choice(&var("KIND"))? {
            Some("sqlite") => Kind::Sqlite,
            _ => Kind::Postgres,
        }
    };
    let mut c = connection(r, &prefix, ConnectionConfig::new(name, kind), io)?;
    if let Some(path) = r.text(&var("PATH"))? {
        c.database = Some(path);
    }
    c.url = url.map(Secret::new);
    if let Some(n) = r.count_u32(&var("MIN_IDLE"))? {
        c.min_idle = n;
    }
    if let Some(n) = r.count_u32(&var("MAX_OVERFLOW"))? {
        c.max_overflow = n;
    }
    if let Some(t) = r.seconds(&var("IDLE_TIMEOUT"))? {
        c.idle_timeout = t;
    }
    if let Some(t) = r.seconds(&var("MAX_LIFETIME"))? {
        c.max_lifetime = t;
    }
    if let Some(f) = r.fraction(&var("LIFETIME_JITTER"))? {
        c.lifetime_jitter = f;
    }
    if let Some(b) = r.boolean(&var("PGBOUNCER"))? {
        c.pgbouncer = b;
    }
    c.read_replica_url = r.text(&var("READ_URL"))?.map(Secret::new);
    c.validate().map_err(|e| field_error(&prefix, e))?;
    Ok(c)
}

fn redis(r: &Reader<'_>, group: &str, io: &IoSettings) -> Result<ConnectionConfig, ConfigError> {
    let prefix = if group.is_empty() {
        "REDIS".to_owned()
    } else {
        format!("REDIS_{group}")
    };
    let var = |suffix: &str| format!("{prefix}_{suffix}");
    let name = if group.is_empty() {
        "redis".to_owned()
    } else {
        group.to_ascii_lowercase()
    };
    let mut c = connection(r, &prefix, ConnectionConfig::new(name, Kind::Redis), io)?;
    if let Some(url) = r.text(&var("URL"))? {
        if sluice_pool::kind_of_url(&url) != Some(Kind::Redis) {
            return Err(ConfigError::new(
                var("URL"),
                "expected a redis://, rediss://, redis-cluster:// or redis-sentinel:// URL",
            ));
        }
        c.url = Some(Secret::new(url));
    }
    if let Some(nodes) = r.nodes(&var("CLUSTER_NODES"))? {
        c.redis_topology = RedisTopology::Cluster { nodes };
    }
    match (
        r.text(&var("SENTINEL_SERVICE"))?,
        r.nodes(&var("SENTINEL_NODES"))?,
    ) {
        (Some(service), Some(nodes)) => {
            c.redis_topology = RedisTopology::Sentinel { service, nodes };
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                var("SENTINEL_NODES"),
                "required with a sentinel service",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                var("SENTINEL_SERVICE"),
                "required with sentinel nodes",
            ));
        }
        (None, None) => {}
    }
    c.validate().map_err(|e| field_error(&prefix, e))?;
    Ok(c)
}

fn api(r: &Reader<'_>, group: &str, io: &IoSettings) -> Result<UpstreamConfig, ConfigError> {
    let prefix = format!("API_{group}");
    let var = |suffix: &str| format!("{prefix}_{suffix}");
    let base = r.text(&var("BASE_URL"))?.unwrap_or_default();
    let mut c = UpstreamConfig::new(group.to_ascii_lowercase(), &base)
        .map_err(|e| ConfigError::new(var("BASE_URL"), e.reason))?;
    if let Some(t) = r.seconds(&var("TIMEOUT"))? {
        c.timeout = t;
    }
    c.deadline = r.seconds(&var("DEADLINE"))?.unwrap_or(io.request_timeout);
    if let Some(b) = r.boolean(&var("SSL_VERIFY"))? {
        c.ssl_verify = b;
    }
    c.ca_file = r.text(&var("SSL_CA"))?.map(PathBuf::from);
    for (header, value) in r.json_object(&var("HEADERS"))?.unwrap_or_default() {
        c.headers.push((header, Secret::new(value)));
    }
    if let Some(token) = r.text(&var("TOKEN"))? {
        c.headers.push((
            "authorization".into(),
            Secret::new(format!("Bearer {token}")),
        ));
    }
    if let Some(n) = r.count_u32(&var("MAX_CONNECTIONS"))? {
        c.max_connections = n;
    }
    if let Some(n) = r.count_usize(&var("MAX_BODY_BYTES"))? {
        c.max_body_bytes = n;
    }
    if let Some(n) = r.count_usize(&var("MAX_BATCH_BYTES"))? {
        c.max_batch_bytes = n;
    }
    c.retry_attempts = r
        .count_u32(&var("RETRY_ATTEMPTS"))?
        .unwrap_or(io.retry_attempts);
    c.retry_delay = match r.seconds(&var("RETRY_DELAY"))? {
        Some(d) => d,
        None if io.retry_delay.is_zero() => {
            return Err(ConfigError::new(
                "IO_RETRY_DELAY",
                format!(
                    "must be greater than 0 when {prefix}_BASE_URL is set (or set {prefix}_RETRY_DELAY)"
                ),
            ));
        }
        None => io.retry_delay,
    };
    c.validate()
        .map_err(|e| ConfigError::new(var(&e.field.to_ascii_uppercase()), e.reason))?;
    Ok(c)
}
