//! [`ResilienceMetrics`]: what retry policies and circuit breakers record.

use metrics::{Counter, Gauge};

use crate::names;
use crate::operation::Backend;

/// The state of a circuit breaker, as exported in `sluice_circuit_state`
/// (0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are rejected at once.
    Open,
    /// A few probe calls decide between closing and re-opening.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
        }
    }
}

/// Counters and gauges of one connection's retry policy and breaker.
///
/// Handles are registered with the recorder installed at creation; cloning
/// is cheap and shares them.
#[derive(Debug, Clone)]
pub struct ResilienceMetrics {
    system: &'static str,
    connection: String,
    first_attempts: Counter,
    retries: Counter,
    circuit_state: Gauge,
}

impl ResilienceMetrics {
    /// Handles for the connection `connection` (its configured name) to a
    /// `system` (the `system` label: `postgresql`, `sqlite`, `redis`,
    /// `http`).
    pub fn new(system: Backend, connection: &str) -> Self {
        let system = system.as_str();
        let attempts = |kind: &'static str| metrics::counter!(names::RETRY_ATTEMPTS, "system" => system, "connection" => connection.to_owned(), "attempt" => kind);
        Self {
            first_attempts: attempts("first"),
            retries: attempts("retry"),
            circuit_state: metrics::gauge!(names::CIRCUIT_STATE, "system" => system, "connection" => connection.to_owned()),
            system,
            connection: connection.to_owned(),
        }
    }

    /// Counts an attempt; `retry` is false for the first one.
    pub fn attempt(&self, retry: bool) {
        if retry {
            self.retries.increment(1);
        } else {
            self.first_attempts.increment(1);
        }
    }

    /// Counts a call that failed for good; `reason` is a fixed word such as
    /// `"attempts_exhausted"`, `"deadline"`, `"circuit_open"`, `"budget"` or
    /// `"permanent"`.
    pub fn give_up(&self, reason: &'static str) {
        metrics::counter!(names::RETRY_GIVE_UPS, "system" => self.system, "connection" => self.connection.clone(), "reason" => reason)
            .increment(1);
    }

    /// Records a breaker transition into `to`.
    pub fn transition(&self, to: CircuitState) {
        self.circuit_state.set(to.gauge_value());
        metrics::counter!(names::CIRCUIT_TRANSITIONS, "system" => self.system, "connection" => self.connection.clone(), "to" => to.as_str())
            .increment(1);
    }
}
