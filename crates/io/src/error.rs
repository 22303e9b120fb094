//! [`IoError`]: what a call through the manager can fail with.

use sluice_api_client::ApiError;
use sluice_db::{DbError, KvError};

use crate::read::ConfigError;

/// A manager call failed: the name is unknown, or the database, Redis
/// or upstream behind it failed (the source says how).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// No database of that name was initialized.
    #[error("no database named {0:?}")]
    UnknownDatabase(String),
    /// No Redis of that name was initialized.
    #[error("no redis named {0:?}")]
    UnknownRedis(String),
    /// No upstream API of that name was initialized.
    #[error("no api named {0:?}")]
    UnknownApi(String),
    /// A name is already taken by another connection of the same kind.
    #[error("a {kind} named {name:?} is already initialized")]
    Duplicate {
        /// `database`, `redis` or `api`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A batch is larger than `IO_MAX_BATCH_SIZE`.
    #[error("a batch of {len} exceeds the limit of {max}")]
    BatchTooLarge {
        /// Items asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A database or Redis pool could not be opened.
    #[error("cannot open {name}")]
    Open {
        /// The connection's name.
        name: String,
        /// Why.
        #[source]
        source: sluice_pool::Error,
    },
    /// A database operation failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A Redis operation failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// An upstream request failed.
    #[error(transparent)]
    Api(#[from] ApiError),
}
