//! The server's configuration from environment variables: the only place
//! in Sluice that reads them. Every variable is listed in a table — the
//! I/O layer's ([`sluice_io::VARIABLES`]) and the server's own
//! ([`SERVER_VARIABLES`]) — and read through it; `--help` and README's
//! configuration table are rendered from the same tables. Parsing goes
//! through a lookup function, so tests pass a map instead of mutating the
//! process environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_http_server::{CACHE_REDIS, EXTERNAL_API, PRIMARY_DATABASE, ServerConfig};
use sluice_io::{ConfigError, IoConfig, Reader, ValueType, Variable};
use sluice_pool::{ConnectionConfig, Kind, Secret};

/// The server's own variables, beside the I/O layer's.
pub(crate) const SERVER_VARIABLES: &[Variable] = &[
    Variable::new(
        "SLUICE_BIND",
        ValueType::Address,
        "127.0.0.1:8000",
        "listen address",
    ),
    Variable::secret(
        "DATABASE_URL",
        ValueType::Url,
        "PostgreSQL URL of the primary database; stands for DB_POSTGRES_URL",
    ),
    Variable::new(
        "SLUICE_DB_SQLITE_PATH",
        ValueType::Text,
        "sluice.db",
        "SQLite file of the primary database when no DB_POSTGRES_* group is set",
    ),
    Variable::new(
        "SLUICE_MAX_BODY_BYTES",
        ValueType::Count,
        "1048576",
        "request body limit",
    ),
    Variable::new(
        "SLUICE_MAX_CONCURRENCY",
        ValueType::Count,
        "1024",
        "requests handled at once before shedding load",
    ),
    Variable::new(
        "SLUICE_MAX_CONNECTIONS",
        ValueType::Count,
        "from the file-descriptor limit",
        "open connections at once",
    ),
    Variable::secret(
        "SLUICE_AUTH_TOKENS",
        ValueType::List,
        "bearer tokens; unset means no authentication",
    ),
    Variable::new(
        "SLUICE_USER_CACHE_TTL",
        ValueType::Seconds,
        "60",
        "seconds users stay cached in Redis",
    ),
    Variable::new(
        "API_EXTERNAL_CACHE_TTL",
        ValueType::SecondsOrZero,
        "0",
        "seconds /external-data answers stay cached in Redis",
    ),
    Variable::new(
        "SLUICE_SHUTDOWN_GRACE",
        ValueType::Seconds,
        "30",
        "in-flight requests' time to finish on shutdown",
    ),
    Variable::new(
        "SLUICE_SHUTDOWN_LINGER",
        ValueType::SecondsOrZero,
        "1",
        "between readiness off and the listener closing",
    ),
    Variable::new(
        "SLUICE_HEADER_READ_TIMEOUT",
        ValueType::Seconds,
        "10",
        "from accept or a request's first byte to its headers",
    ),
    Variable::new(
        "SLUICE_IDLE_TIMEOUT",
        ValueType::Seconds,
        "60",
        "an idle keep-alive connection is kept this long",
    ),
    Variable::new(
        "SLUICE_BODY_READ_TIMEOUT",
        ValueType::Seconds,
        "10",
        "a request body's time to arrive; 408 after",
    ),
    Variable::new(
        "SLUICE_TLS_CERT",
        ValueType::Text,
        "",
        "PEM certificate chain: serve HTTPS (with SLUICE_TLS_KEY)",
    ),
    Variable::new("SLUICE_TLS_KEY", ValueType::Text, "", "PEM private key"),
    Variable::new("RUST_LOG", ValueType::Text, "info", "log filter"),
    Variable::new(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        ValueType::Url,
        "",
        "OTLP/HTTP collector (http:// or https://): spans go to its /v1/traces, W3C trace context is continued and propagated; unset, nothing is traced",
    ),
    Variable::new(
        "OTEL_SERVICE_NAME",
        ValueType::Text,
        "sluice-server",
        "service.name of the exported spans",
    ),
];

/// Every table the server reads, its own first.
pub(crate) const TABLES: &[&[Variable]] = &[SERVER_VARIABLES, sluice_io::VARIABLES];

/// A table name as the server's own group: `DB_<NAME>_X` is shown as
/// `DB_POSTGRES_X` (the primary database), `REDIS_<NAME>_X` as `REDIS_X`
/// (the cache), `API_<NAME>_X` as `API_EXTERNAL_X`.
pub(crate) fn server_group(name: &str) -> String {
    name.replace("DB_<NAME>_", "DB_POSTGRES_")
        .replace("REDIS_<NAME>_", "REDIS_")
        .replace("API_<NAME>_", "API_EXTERNAL_")
}

/// `--help`'s list of variables, rendered from [`TABLES`].
pub(crate) fn help() -> String {
    format!(
        "Environment variables (all optional; a bad value stops start-up naming it).\n\
         The primary database is DB_POSTGRES_* (or DATABASE_URL), else SQLite at\n\
         SLUICE_DB_SQLITE_PATH; REDIS_* is the cache; API_EXTERNAL_* is the upstream\n\
         of /external-data. Further groups under any name — DB_<NAME>_*,\n\
         REDIS_<NAME>_*, API_<NAME>_*, with the same variables — are opened too and\n\
         reported in /io-metrics.\n{}",
        sluice_io::help_with(TABLES, &server_group)
    )
}

/// Whether `name` is one of the server's variables (so a value that is
/// not UTF-8 stops start-up instead of being ignored).
pub(crate) fn is_ours(name: &str) -> bool {
    sluice_io::is_io_variable(name)
        || name.starts_with("SLUICE_")
        || name == "DATABASE_URL"
        || name.starts_with("OTEL_")
}

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
        return Err(ConfigError::new(
            "SLUICE_AUTH_TOKENS",
            "names no token; unset it to turn authentication off",
        ));
    }
    if tokens
        .iter()
        .any(|t| t.expose().chars().any(|c| !c.is_ascii_graphic()))
    {
        return Err(ConfigError::new(
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
    /// Every named connection; the primary database is named
    /// [`PRIMARY_DATABASE`].
    pub(crate) io: IoConfig,
    pub(crate) server: ServerConfig,
    /// Certificate chain and key files for HTTPS.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// Where to export traces, when tracing is on.
    pub(crate) traces: Option<Traces>,
    /// The variable that configured the primary database.
    database_variable: &'static str,
}

/// Trace export settings (`OTEL_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Traces {
    /// The OTLP/HTTP traces URL: the endpoint with `/v1/traces`.
    pub(crate) endpoint: String,
    /// The `service.name` resource attribute.
    pub(crate) service_name: String,
}

impl Settings {
    /// `names` are the variables set (to find the `DB_<NAME>_*`,
    /// `REDIS_<NAME>_*` and `API_<NAME>_*` groups); `lookup` reads one.
    pub(crate) fn from_lookup(
        names: &[String],
        lookup: &dyn Fn(&str) -> Option<String>,
        default_max_connections: usize,
    ) -> Result<Self, ConfigError> {
        let set = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let database_url = set("DATABASE_URL").is_some();
        // DATABASE_URL stands for DB_POSTGRES_URL and wins over it.
        let aliased = |key: &str| match key {
            "DB_POSTGRES_URL" if database_url => lookup("DATABASE_URL"),
            other => lookup(other),
        };
        let r = Reader::new(TABLES, &aliased);
        let mut names = names.to_vec();
        if database_url {
            names.push("DB_POSTGRES_URL".to_owned());
        }
        let renamed = |e: ConfigError| {
            if database_url && e.variable == "DB_POSTGRES_URL" {
                ConfigError::new("DATABASE_URL", e.reason)
            } else {
                e
            }
        };
        let mut io = IoConfig::from_reader(&names, &r).map_err(renamed)?;
        let database_variable = if database_url {
            "DATABASE_URL"
        } else if set("DB_POSTGRES_URL").is_some() {
            "DB_POSTGRES_URL"
        } else if set("DB_POSTGRES_HOST").is_some() {
            "DB_POSTGRES_HOST"
        } else if set("DB_POSTGRES_PATH").is_some() {
            "DB_POSTGRES_PATH"
        } else {
            "SLUICE_DB_SQLITE_PATH"
        };
        // The `postgres` group is the primary database; without it, an
        // SQLite file.
        match io.databases.iter_mut().find(|c| c.name == "postgres") {
            Some(c) => {
                if c.kind != Kind::Postgres && database_url {
                    return Err(ConfigError::new(
                        "DATABASE_URL",
                        "expected a postgres:// URL",
                    ));
                }
                c.name = PRIMARY_DATABASE.into();
            }
            None => {
                let mut c = ConnectionConfig::new(PRIMARY_DATABASE, Kind::Sqlite);
                c.database = Some(
                    r.text("SLUICE_DB_SQLITE_PATH")?
                        .unwrap_or_else(|| "sluice.db".into()),
                );
                io.databases.insert(0, c);
            }
        }
        if io
            .databases
            .iter()
            .filter(|c| c.name == PRIMARY_DATABASE)
            .count()
            > 1
        {
            return Err(ConfigError::new(
                "DB_PRIMARY_HOST",
                "the name primary is the server's own database: configure it as DB_POSTGRES_*",
            ));
        }
        let defaults = ServerConfig::default();
        let mut server = ServerConfig {
            max_body_bytes: r
                .count_usize("SLUICE_MAX_BODY_BYTES")?
                .unwrap_or(defaults.max_body_bytes),
            request_timeout: io.settings.request_timeout,
            header_read_timeout: r
                .seconds("SLUICE_HEADER_READ_TIMEOUT")?
                .unwrap_or(defaults.header_read_timeout),
            idle_timeout: r
                .seconds("SLUICE_IDLE_TIMEOUT")?
                .unwrap_or(defaults.idle_timeout),
            body_read_timeout: r
                .seconds("SLUICE_BODY_READ_TIMEOUT")?
                .unwrap_or(defaults.body_read_timeout),
            max_connections: r
                .count_usize("SLUICE_MAX_CONNECTIONS")?
                .unwrap_or(default_max_connections),
            shutdown_linger: r
                .seconds("SLUICE_SHUTDOWN_LINGER")?
                .unwrap_or(defaults.shutdown_linger),
            max_concurrency: r
                .count_usize("SLUICE_MAX_CONCURRENCY")?
                .unwrap_or(defaults.max_concurrency),
            auth_tokens: auth_tokens(lookup("SLUICE_AUTH_TOKENS"))?,
            user_cache_ttl: r
                .seconds("SLUICE_USER_CACHE_TTL")?
                .unwrap_or(defaults.user_cache_ttl),
            external_cache_ttl: r
                .seconds("API_EXTERNAL_CACHE_TTL")?
                .unwrap_or(defaults.external_cache_ttl),
            max_batch_size: io.settings.max_batch_size,
            https: false,
            shutdown_grace: r
                .seconds("SLUICE_SHUTDOWN_GRACE")?
                .unwrap_or(defaults.shutdown_grace),
        };
        // Every upstream call happens inside a request: its deadline ends
        // before the request's, so a slow upstream is answered 504 rather
        // than cut off by the server.
        for api in &mut io.apis {
            api.deadline = api.deadline.min(server.request_timeout.mul_f64(0.9));
            api.timeout = api.timeout.min(api.deadline);
        }
        let tls = match (r.text("SLUICE_TLS_CERT")?, r.text("SLUICE_TLS_KEY")?) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "SLUICE_TLS_KEY",
                    "required with SLUICE_TLS_CERT",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SLUICE_TLS_CERT",
                    "required with SLUICE_TLS_KEY",
                ));
            }
        };
        server.https = tls.is_some();
        let traces = match r.text("OTEL_EXPORTER_OTLP_ENDPOINT")? {
            None => None,
            Some(endpoint) => {
                let url = url::Url::parse(&endpoint)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| {
                        ConfigError::new(
                            "OTEL_EXPORTER_OTLP_ENDPOINT",
                            "not an http:// or https:// URL",
                        )
                    })?;
                Some(Traces {
                    endpoint: format!("{}/v1/traces", url.as_str().trim_end_matches('/')),
                    service_name: r
                        .text("OTEL_SERVICE_NAME")?
                        .unwrap_or_else(|| "sluice-server".to_owned()),
                })
            }
        };
        Ok(Self {
            bind: r
                .address("SLUICE_BIND")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
            io,
            server,
            tls,
            traces,
            database_variable,
        })
    }

    /// The variable to name when connection `name` cannot be opened, and
    /// what it is.
    pub(crate) fn variable_of(&self, name: &str) -> (String, String) {
        let redis = |group: &str| {
            let prefix = if group == CACHE_REDIS {
                "REDIS".to_owned()
            } else {
                format!("REDIS_{}", group.to_ascii_uppercase())
            };
            if self
                .io
                .redis
                .iter()
                .any(|c| c.name == group && c.url.is_some())
            {
                format!("{prefix}_URL")
            } else {
                format!("{prefix}_HOST")
            }
        };
        if name == PRIMARY_DATABASE {
            (self.database_variable.to_owned(), "the database".to_owned())
        } else if name == CACHE_REDIS {
            (redis(name), "Redis".to_owned())
        } else if self.io.redis.iter().any(|c| c.name == name) {
            (redis(name), format!("Redis {name}"))
        } else {
            (
                format!("DB_{}_*", name.to_ascii_uppercase()),
                format!("database {name}"),
            )
        }
    }

    /// The database the routes use.
    fn primary(&self) -> Option<&ConnectionConfig> {
        self.io
            .databases
            .iter()
            .find(|c| c.name == PRIMARY_DATABASE)
    }

    /// One line for the log: where it listens and on what, no secrets.
    pub(crate) fn describe(&self) -> String {
        format!(
            "listening on {}://{} with database {}, cache {}, upstream {}{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.bind,
            self.primary()
                .map_or_else(|| "none".to_owned(), ConnectionConfig::describe),
            self.io
                .redis
                .iter()
                .find(|c| c.name == CACHE_REDIS)
                .map_or_else(|| "off".to_owned(), ConnectionConfig::describe),
            self.io
                .apis
                .iter()
                .find(|a| a.name == EXTERNAL_API)
                .map_or_else(
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
    pub(crate) fn sqlite_path(&self) -> Option<PathBuf> {
        self.primary()
            .filter(|c| c.kind == Kind::Sqlite)
            .map(|c| PathBuf::from(c.database.clone().unwrap_or_default()))
    }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
