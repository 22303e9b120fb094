//! [`PoolMetrics`]: what connection pools record.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::names;

/// Handles for one pool's connection metrics (OpenTelemetry's
/// `db.client.connection.*` in Prometheus form), under the pool's
/// configured name (`db_client_connection_pool_name`). Cloning shares them.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    wait: Histogram,
    use_time: Histogram,
    create_time: Histogram,
    timeouts: Counter,
    connects: Counter,
    connect_failures: Counter,
    idle: Gauge,
    used: Gauge,
    max: Gauge,
    idle_max: Gauge,
    idle_min: Gauge,
    pending: Gauge,
}

impl PoolMetrics {
    /// Handles for the pool `pool`.
    pub fn new(pool: &str) -> Self {
        const POOL: &str = "db_client_connection_pool_name";
        let pool = || pool.to_owned();
        let state = |state: &'static str| metrics::gauge!(names::POOL_COUNT, POOL => pool(), "db_client_connection_state" => state);
        let connects = |outcome: &'static str| metrics::counter!(names::POOL_CONNECTS, POOL => pool(), "outcome" => outcome);
        Self {
            wait: metrics::histogram!(names::POOL_WAIT, POOL => pool()),
            use_time: metrics::histogram!(names::POOL_USE_TIME, POOL => pool()),
            create_time: metrics::histogram!(names::POOL_CREATE_TIME, POOL => pool()),
            timeouts: metrics::counter!(names::POOL_TIMEOUTS, POOL => pool()),
            connects: connects("ok"),
            connect_failures: connects("error"),
            idle: state("idle"),
            used: state("used"),
            max: metrics::gauge!(names::POOL_MAX, POOL => pool()),
            idle_max: metrics::gauge!(names::POOL_IDLE_MAX, POOL => pool()),
            idle_min: metrics::gauge!(names::POOL_IDLE_MIN, POOL => pool()),
            pending: metrics::gauge!(names::POOL_PENDING, POOL => pool()),
        }
    }

    /// Records how long a caller waited for a connection.
    pub fn waited(&self, elapsed: Duration) {
        self.wait.record(elapsed);
    }

    /// Records how long a connection was lent before it came back.
    pub fn used_for(&self, elapsed: Duration) {
        self.use_time.record(elapsed);
    }

    /// Counts an acquire that timed out while the pool was full.
    pub fn timed_out(&self) {
        self.timeouts.increment(1);
    }

    /// Counts a new connection and records how long it took to open.
    pub fn created(&self, elapsed: Duration) {
        self.connects.increment(1);
        self.create_time.record(elapsed);
    }

    /// Counts a new connection whose opening time is unknown (opened in the
    /// background).
    pub fn created_untimed(&self) {
        self.connects.increment(1);
    }

    /// Counts a failed attempt to open a connection.
    pub fn connect_failed(&self) {
        self.connect_failures.increment(1);
    }

    /// Publishes the pool's configured bounds: most connections, and the
    /// idle connections it keeps at most and at least.
    pub fn limits(&self, max: u32, idle_max: u32, idle_min: u32) {
        self.max.set(f64::from(max));
        self.idle_max.set(f64::from(idle_max));
        self.idle_min.set(f64::from(idle_min));
    }

    /// Publishes the pool's current sizes.
    pub fn sizes(&self, idle: u32, used: u32, pending: u32) {
        self.idle.set(f64::from(idle));
        self.used.set(f64::from(used));
        self.pending.set(f64::from(pending));
    }
}
