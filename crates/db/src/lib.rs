#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`Database`] (`database.rs`): query, query_one, query_optional,
//!   query_json, execute; [`Database::transaction`] (`transaction.rs`);
//!   [`Database::migrate`] (`migrate.rs`, SQL in `migrations/`);
//!   reads that tolerate lag on a replica,
//!   [`Database::query_optional_lagging`] (`replica.rs`).
//! - [`Sql`], [`Params`], [`Value`], [`params!`] (`statement.rs`,
//!   `params.rs`): one SQL text for both dialects, values always bound.
//! - [`DbError`] (`error.rs`): not found, conflict, invalid input,
//!   unavailable, busy, other.
//! - [`Cache`] (`cache.rs`): JSON values in Redis.

mod batch;
mod cache;
mod database;
mod error;
mod executor;
mod kv;
mod migrate;
mod params;
mod replica;
mod statement;
mod transaction;

pub use cache::{Cache, CacheError};
pub use database::Database;
pub use error::{DbError, Result};
pub use executor::Record;
pub use kv::{KeyValue, KvError, Pipeline, Reply};
pub use params::{Params, Value};
pub use statement::Sql;
pub use transaction::{Transaction, TxFuture};

/// Derive this on row structs. The derive's expansion names `::sqlx`, so a
/// crate deriving it needs `sqlx` among its own dependencies; tuples such as
/// `(i64, String)` decode without any derive.
pub use sqlx::FromRow;
