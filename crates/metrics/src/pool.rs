//! [`PoolMetrics`]: what connection pools record.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::names;

/// Handles for one pool's connection metrics (OpenTelemetry's
/// `db.client.connection.*` in Prometheus form), under the pool's
/// configured name. Cloning shares them.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    wait: Histogram,
    connects: Counter,
    connect_failures: Counter,
    idle: Gauge,
    used: Gauge,
    max: Gauge,
    pending: Gauge,
}

impl PoolMetrics {
    /// Handles for the pool `pool`.
    pub fn new(pool: &str) -> Self {
        let state = |state: &'static str| metrics::gauge!(names::POOL_CONNECTIONS, "pool" => pool.to_owned(), "state" => state);
        Self {
            wait: metrics::histogram!(names::POOL_WAIT, "pool" => pool.to_owned()),
            connects: metrics::counter!(names::POOL_CONNECTS, "pool" => pool.to_owned(), "outcome" => "ok"),
            connect_failures: metrics::counter!(names::POOL_CONNECTS, "pool" => pool.to_owned(), "outcome" => "error"),
            idle: state("idle"),
            used: state("used"),
            max: metrics::gauge!(names::POOL_MAX, "pool" => pool.to_owned()),
            pending: metrics::gauge!(names::POOL_PENDING, "pool" => pool.to_owned()),
        }
    }

    /// Records how long a caller waited for a connection.
    pub fn waited(&self, elapsed: Duration) {
        self.wait.record(elapsed);
    }

    /// Counts a new connection, or a failed attempt to open one.
    pub fn connected(&self, ok: bool) {
        if ok {
            self.connects.increment(1);
        } else {
            self.connect_failures.increment(1);
        }
    }

    /// Publishes the pool's current sizes.
    pub fn sizes(&self, idle: u32, used: u32, max: u32, pending: u32) {
        self.idle.set(f64::from(idle));
        self.used.set(f64::from(used));
        self.max.set(f64::from(max));
        self.pending.set(f64::from(pending));
    }
}
