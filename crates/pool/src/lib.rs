#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`ConnectionConfig`] (`config.rs`, `env.rs`): one configuration for
//!   every backend, from fields, a URL, or the design's variables.
//! - [`SqlPool`] (`sql.rs`): PostgreSQL and SQLite on sqlx.
//! - [`RedisPool`] (`redis.rs`): Redis on fred.
//! - [`HttpPool`] (`http/`): outbound HTTP on hyper-util and rustls.
//! - [`Pools`] (`registry.rs`): pools by name; [`PoolStats`] (`stats.rs`).
//! - [`Secret`] (`secret.rs`): values that never format.
//!
//! This crate knows nothing about SQL text or HTTP routes: it opens,
//! lends, measures and closes connections.

mod config;
mod error;
mod http;
mod outage;
mod redis;
mod registry;
mod secret;
mod sql;
mod stats;

pub use config::{ConnectionConfig, Kind, RedisTopology, TlsConfig, TlsMode, kind_of_url};
pub use error::{ConnectError, Error, Result, redis_class, sqlx_class};
pub use http::{HttpPool, HttpPoolConfig, HttpSlot, SendError};
pub use redis::RedisPool;
pub use registry::{AnyPool, Pools};
pub use secret::{Secret, redact_url};
pub use sql::{SqlConnection, SqlPool, VALIDATE_AFTER_IDLE};
pub use stats::PoolStats;
