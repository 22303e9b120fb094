#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`serve`] (`serve.rs`): the hyper-util server loop.
//! - [`router`] (`routes/`): users, external data, ops routes.
//! - `middleware.rs`: request ids, access log, server metrics, body size,
//!   load shedding, request timeout, authentication.
//! - [`AppError`] (`error.rs`): the error envelope and the mapping from
//!   each layer's typed errors.
//! - [`AppState`], [`ServerConfig`]: everything the server is given.
//! - [`tls_config`] (`tls.rs`): optional HTTPS from PEM files.

mod body;
mod config;
mod error;
mod middleware;
mod routes;
mod serve;
mod state;
mod tls;

pub use config::ServerConfig;
pub use error::{AppError, FieldError, current_request_id};
pub use routes::router;
pub use serve::{serve, serve_with};
pub use state::AppState;
pub use tls::{TlsError, tls_config};
