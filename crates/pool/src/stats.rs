//! [`PoolStats`]: the same figures for every kind of pool.

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
