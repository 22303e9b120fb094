#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`operation`](Backend): the typed vocabulary (backend, kind, outcome).
//! - [`ConnectionMetrics`]: the per-connection recording handle, with
//!   [`ConnectionMetrics::timed`] to time a future.
//! - [`Registry`]: connections by name and the JSON [`Snapshot`].
//! - [`prometheus`]: installing the exporter (binaries only).
//! - [`server`]: inbound request metrics.
//! - [`PoolMetrics`]: connection pool sizes, waits and connects.
//! - [`ResilienceMetrics`]: retry attempts, give-ups and breaker state.
//! - [`names`]: metric names and histogram buckets.

mod connection;
mod histogram;
pub mod names;
mod operation;
mod pool;
pub mod prometheus;
mod registry;
mod resilience;
pub mod server;
mod snapshot;
mod timed;

pub use connection::ConnectionMetrics;
pub use operation::{Backend, ErrorClass, OpKind, Outcome, method_label, status_class};
pub use pool::PoolMetrics;
pub use registry::Registry;
pub use resilience::{CircuitState, ResilienceMetrics};
pub use snapshot::{ConnectionSnapshot, LatencyMs, OperationStats, Snapshot};
