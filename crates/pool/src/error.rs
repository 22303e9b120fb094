//! Errors of opening and using pools.

use std::time::Duration;

use sluice_retry::{Class, Classify, RetryError};

/// A pool could not be configured, opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; `field` names it (the environment
    /// variable when the config came from the environment).
    #[error("invalid configuration {field}: {reason}")]
    Config {
        /// The field or environment variable.
        field: String,
        /// What is wrong with it (never the value itself: it may be secret).
        reason: String,
    },
    /// The pool could not connect after its connect retries.
    #[error("cannot connect {name} ({backend})")]
    Connect {
        /// The connection's configured name.
        name: String,
        /// `postgresql`, `sqlite` or `redis`.
        backend: &'static str,
        /// Every attempt and why it failed.
        #[source]
        source: RetryError<ConnectError>,
    },
    /// No connection became free within the acquire timeout.
    #[error("{name}: no connection available within {waited:?}")]
    Timeout {
        /// The connection's configured name.
        name: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The dependency is failing and the pool is not trying it for a
    /// while (its breaker is open): fail fast, come back after `retry_after`.
    #[error("{name} is unavailable, retry in {retry_after:?}")]
    Unavailable {
        /// The connection's configured name.
        name: String,
        /// When the pool will try the dependency again.
        retry_after: Duration,
    },
    /// Getting a connection failed (connection refused, reset, TLS…).
    #[cfg(feature = "sql")]
    #[error("{name}: cannot get a connection")]
    Acquire {
        /// The connection's configured name.
        name: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The pool was closed.
    #[error("{name} is closed")]
    Closed {
        /// The connection's configured name.
        name: String,
    },
    /// A health check failed.
    #[error("{name}: health check failed")]
    Ping {
        /// The connection's configured name.
        name: String,
        /// What failed.
        #[source]
        source: ConnectError,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    #[cfg_attr(not(any(feature = "sql", feature = "redis")), allow(dead_code))]
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the dependency is down or overloaded (the server answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Unavailable { .. }
                | Error::Ping { .. }
        ) || self.is_acquire()
    }

    #[cfg(feature = "sql")]
    fn is_acquire(&self) -> bool {
        matches!(self, Error::Acquire { .. })
    }

    #[cfg(not(feature = "sql"))]
    fn is_acquire(&self) -> bool {
        false
    }
}

impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::Config { .. } | Error::Closed { .. } => Class::Permanent,
            Error::Connect { source, .. } => source.class(),
            #[cfg(feature = "sql")]
            Error::Acquire { source, .. } => sqlx_class(source),
            Error::Timeout { .. } | Error::Unavailable { .. } | Error::Ping { .. } => {
                Class::Transient
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A driver error met while connecting or pinging.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// From sqlx (PostgreSQL, SQLite).
    #[cfg(feature = "sql")]
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// From fred (Redis).
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    /// The attempt took longer than the connect timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl Classify for ConnectError {
    fn class(&self) -> Class {
        match self {
            #[cfg(feature = "sql")]
            ConnectError::Sql(e) => sqlx_class(e),
            #[cfg(feature = "redis")]
            ConnectError::Redis(e) => redis_class(e),
            ConnectError::Timeout(_) => Class::Transient,
        }
    }
}

#[cfg(feature = "sql")]
/// Whether a retry may help with a sqlx error: I/O and pool timeouts are
/// transient, database errors go by SQLSTATE (serialization failures and
/// "the database is starting up" are transient; bad passwords are not).
pub fn sqlx_class(error: &sqlx::Error) -> Class {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Class::Transient,
        sqlx::Error::Database(db) => db
            .code()
            .map_or(Class::Permanent, |code| sluice_retry::sqlstate_class(&code)),
        _ => Class::Permanent,
    }
}

#[cfg(feature = "redis")]
/// Whether a retry may help with a fred error.
pub fn redis_class(error: &fred::error::Error) -> Class {
    use fred::error::ErrorKind;
    match error.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Cluster
        | ErrorKind::Routing
        | ErrorKind::Sentinel => Class::Transient,
        _ => Class::Permanent,
    }
}
