#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`serve`] (`serve.rs`): the hyper-util server loop.
//! - [`router`] (`routes/`): users, external data, ops routes.
//! - `edge/`: the tower layers (request ids, access log, metrics, panics,
//!   timeout, body size, authentication, load shedding).
//! - `extract.rs`: path parameters and JSON bodies with the contract's statuses.
//! - [`AppError`] (`error.rs`): the error envelope and the mapping from
//!   each layer's typed errors.
//! - [`AppState`], [`ServerConfig`]: everything the server is given.
//! - [`tls_config`] (`tls.rs`): optional HTTPS from PEM files.

mod config;
mod edge;
mod envelope;
mod error;
mod extract;
mod routes;
mod serve;
mod state;
mod tls;

pub use config::ServerConfig;
pub use error::{AppError, ErrorCode, FieldError, current_request_id};
pub use routes::{router, router_with};
pub use serve::{serve, serve_router, serve_with};
pub use state::{AppState, CACHE_PREFIX, CACHE_REDIS, EXTERNAL_API, PRIMARY_DATABASE};
pub use tls::{TlsError, tls_config};
