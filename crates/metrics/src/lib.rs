#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`operation`](Backend): the typed vocabulary (backend, kind, outcome).
//! - [`ConnectionMetrics`]: the per-connection recording handle, with
//!   [`ConnectionMetrics::timed`] to time a future.
//! - [`Registry`]: connections by name and the JSON [`Snapshot`].
//! - [`prometheus`]: installing the exporter (binaries only).
//! - [`server`]: inbound request metrics.
//! - [`PoolMetrics`]: database and Redis pool sizes, waits and connects.
//! - [`HttpPoolMetrics`]: upstream connections and waits.
//! - [`ResilienceMetrics`]: retry attempts, give-ups and breaker state.
//! - [`dependency_up`]: the health probe result of each dependency.
//! - [`trace_context`]: the process-wide switch for trace propagation.
//! - [`names`]: the table of every metric, its labels and buckets.

pub mod conformance;
mod connection;
mod dependency;
mod histogram;
mod http_pool;
pub mod names;
mod operation;
mod pool;
pub mod prometheus;
mod registry;
mod resilience;
pub mod server;
mod snapshot;
mod timed;
pub mod trace_context;

pub use connection::ConnectionMetrics;
pub use dependency::dependency_up;
pub use http_pool::HttpPoolMetrics;
pub use operation::{Backend, ErrorClass, OpKind, Outcome, method_label, status_code_label};
pub use pool::PoolMetrics;
pub use registry::Registry;
pub use resilience::{CircuitState, ResilienceMetrics};
pub use snapshot::{ConnectionSnapshot, LatencyMs, OperationStats, RecentStats, Snapshot};
