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

mod body;
mod config;
mod error;
mod middleware;
mod routes;
mod serve;
mod state;

pub use config::ServerConfig;
pub use error::{AppError, FieldError, current_request_id};
pub use routes::router;
pub use serve::serve;
pub use state::AppState;
