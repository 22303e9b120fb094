//! [`PoolStats`]: the same figures for every kind of pool.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;

/// A pool's current sizes, as `/io-metrics` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Open connections not lent out.
    pub idle: u32,
    /// Connections lent out.
    pub in_use: u32,
    /// The most connections the pool will open.
    pub max: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
}

/// Counts one waiting caller in a pool's `waiting` figure for as long as
/// it lives: also when the wait is cancelled (the caller gone).
#[cfg_attr(not(any(feature = "sql", feature = "http")), allow(dead_code))]
pub(crate) struct Waiting<'a>(&'a AtomicU32);

#[cfg_attr(not(any(feature = "sql", feature = "http")), allow(dead_code))]
impl<'a> Waiting<'a> {
    pub(crate) fn new(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
