//! What the manager reports: the JSON metrics of every named connection
//! (the `/io-metrics` document) and the health of every dependency.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sluice_metrics::OperationStats;
use sluice_pool::PoolStats;

/// Figures per operation kind (`query`, `execute`, `read`, `write`,
/// `request`, …), since start.
pub type Operations = BTreeMap<&'static str, OperationStats>;

/// Every named connection's pool and figures, as `/io-metrics` shows
/// them. Memory does not grow with traffic: figures are histograms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IoMetrics {
    /// Always true (the design's envelope).
    pub success: bool,
    /// SQL databases by name.
    pub database: BTreeMap<String, DatabaseMetrics>,
    /// Redis connections by name (`cache` in the design's document).
    pub cache: BTreeMap<String, RedisMetrics>,
    /// Upstream APIs by name.
    pub api: BTreeMap<String, ApiMetrics>,
}

/// One database.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatabaseMetrics {
    /// `postgresql` or `sqlite`.
    pub backend: &'static str,
    /// Pool sizes now.
    pub pool: PoolStats,
    /// Figures per operation kind.
    pub operations: Operations,
}

/// One Redis connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RedisMetrics {
    /// `redis`.
    pub backend: &'static str,
    /// Pool sizes now.
    pub pool: PoolStats,
    /// Figures per operation kind.
    pub operations: Operations,
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found none.
    pub misses: u64,
}

/// One upstream API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiMetrics {
    /// The base URL, credentials removed.
    pub base_url: String,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Connections now.
    pub pool: PoolStats,
    /// Figures per operation kind.
    pub operations: Operations,
    /// Distinct calls in flight that concurrent identical GETs share (the
    /// coalescing map's size): 0 when idle, whatever callers gave up.
    pub coalesced_in_flight: usize,
}

/// The result of [`IoManager::health`](crate::IoManager::health).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// Whether every check passed.
    pub healthy: bool,
    /// One check per dependency, databases first, then Redis, then APIs.
    pub checks: Vec<Check>,
}

/// One dependency's check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    /// `database`, `redis` or `api`.
    pub kind: &'static str,
    /// The connection's name.
    pub name: String,
    /// Whether it answered.
    pub ok: bool,
    /// How long it took.
    #[serde(serialize_with = "millis")]
    pub latency: Duration,
    /// Why it failed (never a secret: errors do not quote URLs or values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Health {
    /// The checks that failed, as `kind:name`.
    pub fn failing(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}:{}", c.kind, c.name))
            .collect()
    }
}
