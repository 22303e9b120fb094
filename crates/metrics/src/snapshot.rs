//! The JSON-ready view of recorded operations, for `/io-metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::connection::SnapshotParts;
use crate::histogram::{Summary, WINDOW};
use crate::operation::Backend;

/// Figures for every connection of a [`Registry`](crate::Registry).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    /// One entry per connection, ordered by backend then name.
    pub connections: Vec<ConnectionSnapshot>,
}

impl Snapshot {
    /// The entry for the connection `name` of `backend`, if any operation
    /// was recorded for it.
    pub fn connection(&self, backend: Backend, name: &str) -> Option<&ConnectionSnapshot> {
        self.connections
            .iter()
            .find(|c| c.backend == backend.as_str() && c.name == name)
    }
}

/// Figures for one connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionSnapshot {
    /// The connection's configured name.
    pub name: String,
    /// `postgresql`, `sqlite`, `redis` or `http`.
    pub backend: &'static str,
    /// Figures per operation kind (`query`, `read`, …), only for kinds that
    /// were recorded.
    pub operations: BTreeMap<&'static str, OperationStats>,
    /// Cache hits recorded on this connection.
    pub hits: u64,
    /// Cache misses recorded on this connection.
    pub misses: u64,
}

/// Figures for one operation kind of one connection: since the connection
/// was first recorded, and over the last minute.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct OperationStats {
    /// Operations recorded.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// `(count - errors) / count`; 1.0 when nothing was recorded.
    pub success_rate: f64,
    /// Latency percentiles and maximum, in milliseconds.
    pub latency_ms: LatencyMs,
    /// The same figures over the last minute only.
    pub recent: RecentStats,
}

/// Figures over a sliding window: operations that finished in the current
/// 10-second slot and the five before it (50 to 60 seconds).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RecentStats {
    /// The window's full length, seconds (60).
    pub window_s: u64,
    /// Operations recorded in the window.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// `(count - errors) / count`; 1.0 when nothing was recorded.
    pub success_rate: f64,
    /// Latency percentiles and maximum in the window, in milliseconds.
    pub latency_ms: LatencyMs,
}

/// Latency percentiles in milliseconds. Percentiles carry the histogram's
/// resolution (within about 3% of the true value); `max` is exact.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest recorded value.
    pub max: f64,
}

fn millis(d: Duration) -> f64 {
    // Three decimals (microseconds) keep the JSON short and readable.
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn success_rate(s: &Summary) -> f64 {
    if s.count == 0 {
        1.0
    } else {
        (s.count.saturating_sub(s.errors)) as f64 / s.count as f64
    }
}

fn latency(s: &Summary) -> LatencyMs {
    LatencyMs {
        p50: millis(s.p50),
        p95: millis(s.p95),
        p99: millis(s.p99),
        max: millis(s.max),
    }
}

impl ConnectionSnapshot {
    pub(crate) fn from_parts(backend: Backend, parts: SnapshotParts<'_>) -> Self {
        let operations = parts
            .kinds
            .into_iter()
            .map(|(kind, total, recent)| {
                let stats = OperationStats {
                    count: total.count,
                    errors: total.errors,
                    success_rate: success_rate(&total),
                    latency_ms: latency(&total),
                    recent: RecentStats {
                        window_s: WINDOW.as_secs(),
                        count: recent.count,
                        errors: recent.errors,
                        success_rate: success_rate(&recent),
                        latency_ms: latency(&recent),
                    },
                };
                (kind.as_str(), stats)
            })
            .collect();
        Self {
            name: parts.name.to_owned(),
            backend: backend.as_str(),
            operations,
            hits: parts.hits,
            misses: parts.misses,
        }
    }
}
