#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`Policy`] / [`PolicyBuilder`] (`policy.rs`): the composition, and the
//!   attempt loop.
//! - [`Classify`] (`classify.rs`): transient or permanent, and `Retry-After`.
//! - [`Backoff`] (`backoff.rs`): exponential delays with full or
//!   decorrelated jitter.
//! - [`CircuitBreaker`] (`breaker/`): closed → open → half-open over a count
//!   or time window.
//! - [`RetryBudget`] (`budget.rs`): retries as a fraction of traffic.
//! - [`RetryError`] (`error.rs`): why a call gave up, attempt by attempt.

mod backoff;
mod breaker;
mod budget;
mod classify;
mod clock;
mod error;
mod policy;
mod within;

pub use backoff::{Backoff, Jitter};
pub use breaker::{BreakerConfig, CircuitBreaker, OwnedPermit, Permit, Rejected, Window};
pub use budget::{BudgetConfig, RetryBudget};
pub use classify::{
    Class, Classify, classify_source_chain, http_status_class, parse_retry_after, sqlstate_class,
};
pub use error::{Failure, GiveUp, InvalidConfig, RetryError};
pub use policy::{Policy, PolicyBuilder};
pub use sluice_metrics::CircuitState;
