//! [`DbError`]: database failures classified for the layers above.

use std::time::Duration;

use sluice_metrics::ErrorClass;
use sluice_retry::{Class, Classify};

/// A database operation failed. Variants are what the caller can act on;
/// the driver's error is kept as the `source` for logs, never for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A query that must return a row returned none.
    #[error("no row found")]
    NotFound,
    /// A unique constraint rejected the write.
    #[error("conflict with an existing row{}", constraint.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Conflict {
        /// The constraint's name, when the database reports it.
        constraint: Option<String>,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The statement or its parameters are invalid: a missing parameter, a
    /// value the column rejects, a foreign key or check violation.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong, without parameter values.
        reason: String,
        /// The driver's error, if it came from the database.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The database could not be reached or had no free connection.
    #[error("database unavailable")]
    Unavailable(#[source] sluice_pool::Error),
    /// The connection was lost mid-operation.
    #[error("database connection lost")]
    ConnectionLost(#[source] sqlx::Error),
    /// The server refused a write because it is read-only (SQLSTATE
    /// 25006): a standby, or a primary being failed over. With several
    /// hosts and `target_session_attrs=read-write` the pool moves to the
    /// writable one (see `sluice-pool`); the caller may retry.
    #[error("database server is read-only")]
    ReadOnly(#[source] sqlx::Error),
    /// A transaction kept losing to concurrent ones (serialization failure,
    /// deadlock, SQLite busy) after its retries.
    #[error("database busy: concurrent transactions conflicted")]
    Busy(#[source] sqlx::Error),
    /// Anything else: a bug in a statement, an unexpected driver error.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

/// Result alias for this crate.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

impl DbError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        DbError::InvalidInput {
            reason: reason.into(),
            source: None,
        }
    }

    /// Whether the database is down or overloaded (the server answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable(_)
                | DbError::ConnectionLost(_)
                | DbError::Busy(_)
                | DbError::ReadOnly(_)
        )
    }

    /// How long the caller should wait before trying again, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DbError::Unavailable(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl From<sluice_pool::Error> for DbError {
    fn from(error: sluice_pool::Error) -> Self {
        DbError::Unavailable(error)
    }
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match &error {
            sqlx::Error::RowNotFound => DbError::NotFound,
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => DbError::ConnectionLost(error),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                DbError::Unavailable(sluice_pool::Error::Acquire {
                    name: String::new(),
                    source: error,
                })
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => DbError::Other(error),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if is_busy_code(&code) {
                    return DbError::Busy(error);
                }
                if code == "25006" {
                    return DbError::ReadOnly(error);
                }
                match db.kind() {
                    ErrorKind::UniqueViolation => {
                        let constraint = db.constraint().map(str::to_owned);
                        DbError::Conflict {
                            constraint,
                            source: error,
                        }
                    }
                    ErrorKind::ForeignKeyViolation => DbError::InvalidInput {
                        reason: "a referenced row does not exist".into(),
                        source: Some(error),
                    },
                    ErrorKind::NotNullViolation => DbError::InvalidInput {
                        reason: "a required value is missing".into(),
                        source: Some(error),
                    },
                    ErrorKind::CheckViolation => DbError::InvalidInput {
                        reason: "a value is out of range".into(),
                        source: Some(error),
                    },
                    _ if code.starts_with("22") => DbError::InvalidInput {
                        reason: "a value is not valid for its column".into(),
                        source: Some(error),
                    },
                    _ if matches!(sluice_retry::sqlstate_class(&code), Class::Transient) => {
                        DbError::ConnectionLost(error)
                    }
                    _ => DbError::Other(error),
                }
            }
            _ => DbError::Other(error),
        }
    }
}

/// Serialization failure, deadlock (PostgreSQL) or busy/locked (SQLite:
/// 5, 6 and their extended codes).
fn is_busy_code(code: &str) -> bool {
    matches!(code, "40001" | "40P01" | "5" | "6" | "261" | "262" | "517")
}

impl Classify for DbError {
    /// Busy and connection-level failures are transient; everything the
    /// caller's input decides (not found, conflict, invalid) is permanent.
    fn class(&self) -> Class {
        match self {
            DbError::Busy(_) | DbError::ConnectionLost(_) | DbError::ReadOnly(_) => {
                Class::Transient
            }
            DbError::Unavailable(e) => e.class(),
            _ => Class::Permanent,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        DbError::retry_after(self)
    }
}

impl ErrorClass for DbError {
    fn error_class(&self) -> &'static str {
        match self {
            DbError::NotFound => "not_found",
            DbError::Conflict { .. } => "conflict",
            DbError::InvalidInput { .. } => "invalid_input",
            DbError::Unavailable(_) => "unavailable",
            DbError::ConnectionLost(_) => "connection_lost",
            DbError::Busy(_) => "busy",
            DbError::ReadOnly(_) => "read_only",
            DbError::Other(_) => "other",
        }
    }
}
