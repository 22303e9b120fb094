//! [`HttpPoolMetrics`]: what outbound HTTP connection pools record.

use std::time::Duration;

use metrics::{Gauge, Histogram};

use crate::names;

/// Handles for one upstream's connection metrics: OpenTelemetry's
/// `http.client.open_connections` by state, and Sluice's wait time and
/// waiting callers, labelled by `server_address` and `server_port`.
/// Cloning shares them.
#[derive(Debug, Clone)]
pub struct HttpPoolMetrics {
    active: Gauge,
    idle: Gauge,
    pending: Gauge,
    wait: Histogram,
}

impl HttpPoolMetrics {
    /// Handles for the upstream at `address`:`port`.
    pub fn new(address: &str, port: u16) -> Self {
        let port = port.to_string();
        let state = |state: &'static str| {
            metrics::gauge!(
                names::HTTP_OPEN_CONNECTIONS,
                "http_connection_state" => state,
                "server_address" => address.to_owned(),
                "server_port" => port.clone(),
            )
        };
        Self {
            active: state("active"),
            idle: state("idle"),
            pending: metrics::gauge!(names::HTTP_PENDING, "server_address" => address.to_owned(), "server_port" => port.clone()),
            wait: metrics::histogram!(names::HTTP_WAIT, "server_address" => address.to_owned(), "server_port" => port.clone()),
        }
    }

    /// Records how long a caller waited for a slot.
    pub fn waited(&self, elapsed: Duration) {
        self.wait.record(elapsed);
    }

    /// Publishes the current connections and waiting callers.
    pub fn sizes(&self, active: u32, idle: u32, pending: u32) {
        self.active.set(f64::from(active));
        self.idle.set(f64::from(idle));
        self.pending.set(f64::from(pending));
    }
}
