//! Metric names and labels: OpenTelemetry's semantic conventions in the
//! form of their standard Prometheus translation (dots become underscores,
//! the unit `s` becomes a `_seconds` suffix, counters end `_total`, units
//! in braces such as `{connection}` are dropped), plus Sluice's own
//! resilience metrics under the `sluice_` prefix.
//!
//! [`METRICS`] is the one table of every metric: [`describe`] registers
//! its help texts and units, [`markdown`] renders it for the docs, and the
//! tests check the exposition against it.

/// Histogram: database and cache operation duration, seconds
/// (`db.client.operation.duration`).
pub const DB_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// Histogram: inbound HTTP request duration, seconds
/// (`http.server.request.duration`).
pub const HTTP_SERVER_DURATION: &str = "http_server_request_duration_seconds";
/// Histogram: outbound HTTP request duration, seconds
/// (`http.client.request.duration`).
pub const HTTP_CLIENT_DURATION: &str = "http_client_request_duration_seconds";

/// Gauge: pooled connections by state (`db.client.connection.count`).
pub const POOL_COUNT: &str = "db_client_connection_count";
/// Gauge: most connections the pool may open (`db.client.connection.max`).
pub const POOL_MAX: &str = "db_client_connection_max";
/// Gauge: most idle connections the pool keeps
/// (`db.client.connection.idle.max`).
pub const POOL_IDLE_MAX: &str = "db_client_connection_idle_max";
/// Gauge: fewest idle connections the pool keeps warm
/// (`db.client.connection.idle.min`).
pub const POOL_IDLE_MIN: &str = "db_client_connection_idle_min";
/// Gauge: callers waiting for a connection
/// (`db.client.connection.pending_requests`).
pub const POOL_PENDING: &str = "db_client_connection_pending_requests";
/// Counter: acquires that timed out (`db.client.connection.timeouts`).
pub const POOL_TIMEOUTS: &str = "db_client_connection_timeouts_total";
/// Histogram: time to open a connection, seconds
/// (`db.client.connection.create_time`).
pub const POOL_CREATE_TIME: &str = "db_client_connection_create_time_seconds";
/// Histogram: time callers waited for a connection, seconds
/// (`db.client.connection.wait_time`).
pub const POOL_WAIT: &str = "db_client_connection_wait_time_seconds";
/// Histogram: time a connection was lent before it came back, seconds
/// (`db.client.connection.use_time`).
pub const POOL_USE_TIME: &str = "db_client_connection_use_time_seconds";

/// Gauge: open connections to an upstream, by state (`active`, `idle`)
/// (`http.client.open_connections`).
pub const HTTP_OPEN_CONNECTIONS: &str = "http_client_open_connections";
/// Histogram: time callers waited for a slot of an upstream's pool, seconds.
pub const HTTP_WAIT: &str = "sluice_http_client_wait_time_seconds";
/// Gauge: callers waiting for a slot of an upstream's pool.
pub const HTTP_PENDING: &str = "sluice_http_client_pending_requests";

/// Counter: cache hits.
pub const CACHE_HITS: &str = "sluice_cache_hits_total";
/// Counter: cache misses.
pub const CACHE_MISSES: &str = "sluice_cache_misses_total";
/// Counter: connections opened or failed to open, by `outcome`.
pub const POOL_CONNECTS: &str = "sluice_pool_connects_total";
/// Counter: attempts made by retry policies, `first` or `retry`.
pub const RETRY_ATTEMPTS: &str = "sluice_retry_attempts_total";
/// Counter: calls a retry policy gave up on, by `reason`.
pub const RETRY_GIVE_UPS: &str = "sluice_retry_give_ups_total";
/// Gauge: circuit breaker state (0 closed, 1 open, 2 half-open).
pub const CIRCUIT_STATE: &str = "sluice_circuit_state";
/// Counter: circuit breaker transitions, by new state.
pub const CIRCUIT_TRANSITIONS: &str = "sluice_circuit_transitions_total";
/// Gauge: 1 when the last health probe of a dependency succeeded, else 0.
pub const DEPENDENCY_UP: &str = "sluice_dependency_up";

/// Bucket bounds, seconds, that OpenTelemetry recommends for
/// `http.server.request.duration` and `http.client.request.duration`.
pub const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket bounds, seconds, that OpenTelemetry recommends for
/// `db.client.operation.duration` (also used for the pool's times).
pub const DB_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// The type of a metric, as Prometheus exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up; the name ends `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, `_sum` and `_count`.
    Histogram,
}

impl MetricType {
    /// `counter`, `gauge` or `histogram`, as in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// One row of [`METRICS`].
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// The Prometheus name.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricType,
    /// Its unit, in UCUM as the conventions write it (`s`, `{connection}`).
    pub unit: &'static str,
    /// The OpenTelemetry metric it translates, or `None` for Sluice's own.
    pub convention: Option<&'static str>,
    /// Every label it may carry. Labels marked `?` in the docs appear only
    /// on some series (see [`OPTIONAL_LABELS`]).
    pub labels: &'static [&'static str],
    /// The help text.
    pub help: &'static str,
}

/// Labels that only some series of a metric carry: `error_type` only on
/// failures, `http_response_status_code` only when a response came,
/// `http_route` only when a route matched.
pub const OPTIONAL_LABELS: &[&str] = &["error_type", "http_response_status_code", "http_route"];

const DB_OP: &[&str] = &[
    "db_system_name",
    "db_client_connection_pool_name",
    "db_operation_name",
    "error_type",
];
const POOL: &[&str] = &["db_client_connection_pool_name"];
const RESILIENCE: &[&str] = &["system", "connection"];

/// Every metric Sluice exports.
pub const METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: DB_OPERATION_DURATION,
        kind: MetricType::Histogram,
        unit: "s",
        convention: Some("db.client.operation.duration"),
        labels: DB_OP,
        help: "Duration of database and cache operations.",
    },
    MetricSpec {
        name: HTTP_SERVER_DURATION,
        kind: MetricType::Histogram,
        unit: "s",
        convention: Some("http.server.request.duration"),
        labels: &[
            "http_request_method",
            "url_scheme",
            "http_route",
            "http_response_status_code",
            "error_type",
        ],
        help: "Duration of inbound HTTP requests.",
    },
    MetricSpec {
        name: HTTP_CLIENT_DURATION,
        kind: MetricType::Histogram,
        unit: "s",
        convention: Some("http.client.request.duration"),
        labels: &[
            "http_request_method",
            "server_address",
            "server_port",
            "http_response_status_code",
            "error_type",
        ],
        help: "Duration of outbound HTTP requests.",
    },
    MetricSpec {
        name: POOL_COUNT,
        kind: MetricType::Gauge,
        unit: "{connection}",
        convention: Some("db.client.connection.count"),
        labels: &[
            "db_client_connection_pool_name",
            "db_client_connection_state",
        ],
        help: "Pooled connections by state (idle, used).",
    },
    MetricSpec {
        name: POOL_MAX,
        kind: MetricType::Gauge,
        unit: "{connection}",
        convention: Some("db.client.connection.max"),
        labels: POOL,
        help: "Most connections the pool may open.",
    },
    MetricSpec {
        name: POOL_IDLE_MAX,
        kind: MetricType::Gauge,
        unit: "{connection}",
        convention: Some("db.client.connection.idle.max"),
        labels: POOL,
        help: "Most idle connections the pool keeps.",
    },
    MetricSpec {
        name: POOL_IDLE_MIN,
        kind: MetricType::Gauge,
        unit: "{connection}",
        convention: Some("db.client.connection.idle.min"),
        labels: POOL,
        help: "Fewest idle connections the pool keeps warm.",
    },
    MetricSpec {
        name: POOL_PENDING,
        kind: MetricType::Gauge,
        unit: "{request}",
        convention: Some("db.client.connection.pending_requests"),
        labels: POOL,
        help: "Callers waiting for a pooled connection.",
    },
    MetricSpec {
        name: POOL_TIMEOUTS,
        kind: MetricType::Counter,
        unit: "{timeout}",
        convention: Some("db.client.connection.timeouts"),
        labels: POOL,
        help: "Acquires that timed out while the pool was full.",
    },
    MetricSpec {
        name: POOL_CREATE_TIME,
        kind: MetricType::Histogram,
        unit: "s",
        convention: Some("db.client.connection.create_time"),
        labels: POOL,
        help: "Time taken to open a new connection.",
    },
    MetricSpec {
        name: POOL_WAIT,
        kind: MetricType::Histogram,
        unit: "s",
        convention: Some("db.client.connection.wait_time"),
        labels: POOL,
        help: "Time spent waiting for a pooled connection.",
    },
    MetricSpec {
        name: POOL_USE_TIME,
        kind: MetricType::Histogram,
        unit: "s",
        convention: Some("db.client.connection.use_time"),
        labels: POOL,
        help: "Time a connection was lent before it came back to the pool.",
    },
    MetricSpec {
        name: HTTP_OPEN_CONNECTIONS,
        kind: MetricType::Gauge,
        unit: "{connection}",
        convention: Some("http.client.open_connections"),
        labels: &["http_connection_state", "server_address", "server_port"],
        help: "Open connections to an upstream, by state (active, idle).",
    },
    MetricSpec {
        name: HTTP_WAIT,
        kind: MetricType::Histogram,
        unit: "s",
        convention: None,
        labels: &["server_address", "server_port"],
        help: "Time callers waited for a slot of an upstream's pool.",
    },
    MetricSpec {
        name: HTTP_PENDING,
        kind: MetricType::Gauge,
        unit: "{request}",
        convention: None,
        labels: &["server_address", "server_port"],
        help: "Callers waiting for a slot of an upstream's pool.",
    },
    MetricSpec {
        name: CACHE_HITS,
        kind: MetricType::Counter,
        unit: "{hit}",
        convention: None,
        labels: &["db_system_name", "db_client_connection_pool_name"],
        help: "Cache reads that found a value.",
    },
    MetricSpec {
        name: CACHE_MISSES,
        kind: MetricType::Counter,
        unit: "{miss}",
        convention: None,
        labels: &["db_system_name", "db_client_connection_pool_name"],
        help: "Cache reads that found no value.",
    },
    MetricSpec {
        name: POOL_CONNECTS,
        kind: MetricType::Counter,
        unit: "{connection}",
        convention: None,
        labels: &["db_client_connection_pool_name", "outcome"],
        help: "Connections opened (outcome ok) or failed to open (error).",
    },
    MetricSpec {
        name: RETRY_ATTEMPTS,
        kind: MetricType::Counter,
        unit: "{attempt}",
        convention: None,
        labels: &["system", "connection", "attempt"],
        help: "Attempts made by retry policies, first or retry.",
    },
    MetricSpec {
        name: RETRY_GIVE_UPS,
        kind: MetricType::Counter,
        unit: "{call}",
        convention: None,
        labels: &["system", "connection", "reason"],
        help: "Calls that retry policies gave up on, by reason.",
    },
    MetricSpec {
        name: CIRCUIT_STATE,
        kind: MetricType::Gauge,
        unit: "1",
        convention: None,
        labels: RESILIENCE,
        help: "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
    },
    MetricSpec {
        name: CIRCUIT_TRANSITIONS,
        kind: MetricType::Counter,
        unit: "{transition}",
        convention: None,
        labels: &["system", "connection", "to"],
        help: "Circuit breaker transitions, by new state.",
    },
    MetricSpec {
        name: DEPENDENCY_UP,
        kind: MetricType::Gauge,
        unit: "1",
        convention: None,
        labels: &["system", "connection"],
        help: "1 when the last health probe of the dependency succeeded, else 0.",
    },
];

/// The one finding `promtool check metrics` reports on Sluice's
/// exposition, and which is expected: the convention's own name
/// `db.client.connection.count` translates to a gauge ending `_count`,
/// which its naming lint flags (the exposition is still valid).
pub const PROMTOOL_EXPECTED_FINDING: &str = "db_client_connection_count non-histogram and non-summary metrics should not have \"_count\" suffix";

/// The row of [`METRICS`] named `name`.
pub fn spec(name: &str) -> Option<&'static MetricSpec> {
    METRICS.iter().find(|m| m.name == name)
}

/// Registers the help text and unit of every metric of [`METRICS`] with
/// the current recorder. [`prometheus::install`](crate::prometheus::install)
/// calls it; call it yourself when installing another recorder.
pub fn describe() {
    for m in METRICS {
        match m.kind {
            MetricType::Counter => metrics::describe_counter!(m.name, m.help),
            MetricType::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricType::Histogram => {
                metrics::describe_histogram!(m.name, metrics::Unit::Seconds, m.help)
            }
        }
    }
}

/// [`METRICS`] as a Markdown table: name, type, unit, convention, labels
/// (optional ones marked `?`) and meaning.
pub fn markdown() -> String {
    let mut out = String::from(
        "| metric | type | unit | OpenTelemetry | labels | meaning |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for m in METRICS {
        let labels: Vec<String> = m
            .labels
            .iter()
            .map(|l| {
                let mark = if OPTIONAL_LABELS.contains(l) { "?" } else { "" };
                format!("`{l}`{mark}")
            })
            .collect();
        let convention = m
            .convention
            .map_or("Sluice's own".to_owned(), |c| format!("`{c}`"));
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            m.unit,
            convention,
            labels.join(", "),
            m.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_translation() {
        for m in METRICS {
            match m.kind {
                MetricType::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                MetricType::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                MetricType::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            if let Some(convention) = m.convention {
                let translated = convention.replace('.', "_");
                assert!(
                    m.name.starts_with(&translated),
                    "{} vs {convention}",
                    m.name
                );
            } else {
                assert!(m.name.starts_with("sluice_"), "{}", m.name);
            }
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, m) in METRICS.iter().enumerate() {
            assert!(
                METRICS[i + 1..].iter().all(|o| o.name != m.name),
                "{}",
                m.name
            );
        }
    }
}
