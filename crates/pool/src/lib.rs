#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`ConnectionConfig`] (`config.rs`, `env.rs`): one configuration for
//!   every backend, from fields, a URL, or the design's variables.
//! - [`SqlPool`] (`sql.rs`): PostgreSQL and SQLite on sqlx; several
//!   PostgreSQL hosts and failover (`servers.rs`), outage detection
//!   (`outage.rs`).
//! - [`RedisPool`] (`redis.rs`): Redis on fred.
//! - [`HttpPool`] (`http/`): outbound HTTP on hyper-util and rustls.
//! - [`Pools`] (`registry.rs`): pools by name; [`PoolStats`] (`stats.rs`).
//! - [`Secret`] (`secret.rs`): values that never format.
//!
//! This crate knows nothing about SQL text or HTTP routes: it opens,
//! lends, measures and closes connections.

mod config;
mod error;
mod hosts;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "sql")]
mod outage;
#[cfg(feature = "redis")]
mod redis;
#[cfg(all(feature = "sql", feature = "redis", feature = "http"))]
mod registry;
#[cfg(any(feature = "redis", feature = "http"))]
mod roots;
mod secret;
#[cfg(feature = "sql")]
mod servers;
#[cfg(feature = "sql")]
mod sql;
mod stats;
#[cfg(any(feature = "sql", feature = "http"))]
mod sweep;

pub use config::{ConnectionConfig, Kind, RedisTopology, TlsConfig, TlsMode, kind_of_url};
#[cfg(feature = "redis")]
pub use error::redis_class;
#[cfg(feature = "sql")]
pub use error::sqlx_class;
pub use error::{ConnectError, Error, Result};
#[cfg(feature = "http")]
pub use http::{HttpBody, HttpPool, HttpPoolConfig, HttpSlot, SendError};
#[cfg(feature = "redis")]
pub use redis::RedisPool;
#[cfg(all(feature = "sql", feature = "redis", feature = "http"))]
pub use registry::{AnyPool, Pools};
pub use secret::{Secret, redact_url};
#[cfg(feature = "sql")]
pub use sql::{LentConnection, SqlConnection, SqlPool, VALIDATE_AFTER_IDLE};
pub use stats::PoolStats;
