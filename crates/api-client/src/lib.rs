#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`ApiClient`] (`client.rs`): one upstream; `request`, `get_json`,
//!   coalescing of identical GETs, the attempt under the policy.
//! - [`ApiClient::batch`] (`batch.rs`): bounded fan-out, input order.
//! - [`ApiRequest`], [`ApiResponse`] (`request.rs`); [`ApiPath`]
//!   (`path.rs`): segments that cannot change the path's structure.
//! - [`UpstreamConfig`] (`config.rs`): from fields or `API_<NAME>_*`.
//! - [`ApiError`] (`error.rs`).

mod batch;
mod client;
mod config;
mod error;
mod path;
mod request;

pub use client::{ApiClient, DEFAULT_MAX_IN_FLIGHT};
pub use config::{ConfigError, UpstreamConfig};
pub use error::{ApiError, Result};
pub use http::Method;
pub use path::ApiPath;
pub use request::{ApiRequest, ApiResponse, is_json_content_type};
/// Breaker settings and state, re-exported so that configuring an upstream
/// needs no direct `sluice-retry` dependency.
pub use sluice_retry::{BreakerConfig, CircuitState, Window};
