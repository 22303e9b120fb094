//! Metric names, in OpenTelemetry's semantic conventions as Prometheus
//! renders them (dots become underscores, units and `_total` are suffixes).

/// Histogram: database and cache operation latency, seconds.
/// Labels: `db_system`, `connection`, `operation`, `outcome`.
pub const DB_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// Counter: failed database and cache operations.
/// Labels: `db_system`, `connection`, `operation`, `error_class`.
pub const DB_OPERATION_ERRORS: &str = "db_client_operation_errors_total";
/// Counter: cache hits. Labels: `db_system`, `connection`.
pub const CACHE_HITS: &str = "sluice_cache_hits_total";
/// Counter: cache misses. Labels: `db_system`, `connection`.
pub const CACHE_MISSES: &str = "sluice_cache_misses_total";
/// Histogram: outbound HTTP request latency, seconds.
/// Labels: `server` (the upstream's configured name), `method`, `status_class`.
pub const HTTP_CLIENT_DURATION: &str = "http_client_request_duration_seconds";
/// Counter: failed outbound HTTP requests.
/// Labels: `server`, `operation`, `error_class`.
pub const HTTP_CLIENT_ERRORS: &str = "http_client_request_errors_total";
/// Histogram: inbound HTTP request latency, seconds.
/// Labels: `route` (the route template), `method`, `status_class`.
pub const HTTP_SERVER_DURATION: &str = "http_server_request_duration_seconds";
/// Counter: attempts made by retry policies.
/// Labels: `connection`, `attempt` (`first` or `retry`).
pub const RETRY_ATTEMPTS: &str = "sluice_retry_attempts_total";
/// Counter: calls a retry policy gave up on.
/// Labels: `connection`, `reason`.
pub const RETRY_GIVE_UPS: &str = "sluice_retry_give_ups_total";
/// Gauge: circuit breaker state (0 closed, 1 open, 2 half-open).
/// Labels: `connection`.
pub const CIRCUIT_STATE: &str = "sluice_circuit_state";
/// Counter: circuit breaker transitions. Labels: `connection`, `to`.
pub const CIRCUIT_TRANSITIONS: &str = "sluice_circuit_transitions_total";

/// Histogram: time callers waited to get a pooled connection, seconds.
/// Labels: `pool`.
pub const POOL_WAIT: &str = "db_client_connection_wait_time_seconds";
/// Gauge: pooled connections by state (`idle`, `used`). Labels: `pool`,
/// `state`. (OpenTelemetry's `db.client.connection.count` would render as
/// `…_count`, a suffix Prometheus reserves for histograms and summaries,
/// so this keeps the convention's earlier name.)
pub const POOL_CONNECTIONS: &str = "db_client_connections_usage";
/// Gauge: the pool's maximum size. Labels: `pool`.
pub const POOL_MAX: &str = "db_client_connection_max";
/// Gauge: callers waiting for a connection. Labels: `pool`.
pub const POOL_PENDING: &str = "db_client_connection_pending_requests";
/// Counter: connections opened (`outcome` `ok`) or failed to open
/// (`error`). Labels: `pool`, `outcome`.
pub const POOL_CONNECTS: &str = "sluice_pool_connects_total";

/// Histogram bucket bounds, in seconds, for every `*_seconds` histogram.
///
/// Dense below a millisecond (a local point select takes 50–500 µs) and
/// reaching 30 s (the longest request deadline that makes sense).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.002_5, 0.005, 0.007_5, 0.01, 0.025,
    0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0,
];

/// Registers the help text and unit of every metric above with the current
/// recorder. [`prometheus::install`](crate::prometheus::install) calls it;
/// call it yourself when installing another recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        DB_OPERATION_DURATION,
        Unit::Seconds,
        "Duration of database and cache operations."
    );
    describe_counter!(
        DB_OPERATION_ERRORS,
        "Database and cache operations that failed, by error class."
    );
    describe_counter!(CACHE_HITS, "Cache reads that found a value.");
    describe_counter!(CACHE_MISSES, "Cache reads that found no value.");
    describe_histogram!(
        HTTP_CLIENT_DURATION,
        Unit::Seconds,
        "Duration of outbound HTTP requests."
    );
    describe_counter!(
        HTTP_CLIENT_ERRORS,
        "Outbound HTTP requests that failed, by error class."
    );
    describe_histogram!(
        HTTP_SERVER_DURATION,
        Unit::Seconds,
        "Duration of inbound HTTP requests."
    );
    describe_histogram!(
        POOL_WAIT,
        Unit::Seconds,
        "Time spent waiting for a pooled connection."
    );
    describe_gauge!(POOL_CONNECTIONS, "Pooled connections by state.");
    describe_gauge!(POOL_MAX, "Maximum size of the pool.");
    describe_gauge!(POOL_PENDING, "Callers waiting for a pooled connection.");
    describe_counter!(
        POOL_CONNECTS,
        "Connections opened or failed to open, by outcome."
    );
    describe_counter!(
        RETRY_ATTEMPTS,
        "Attempts made by retry policies, first or retry."
    );
    describe_counter!(
        RETRY_GIVE_UPS,
        "Calls that retry policies gave up on, by reason."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        CIRCUIT_TRANSITIONS,
        "Circuit breaker transitions, by new state."
    );
}

/// Every metric name, for checks that each has a description.
pub const ALL: &[&str] = &[
    DB_OPERATION_DURATION,
    DB_OPERATION_ERRORS,
    CACHE_HITS,
    CACHE_MISSES,
    HTTP_CLIENT_DURATION,
    HTTP_CLIENT_ERRORS,
    HTTP_SERVER_DURATION,
    POOL_WAIT,
    POOL_CONNECTIONS,
    POOL_MAX,
    POOL_PENDING,
    POOL_CONNECTS,
    RETRY_ATTEMPTS,
    RETRY_GIVE_UPS,
    CIRCUIT_STATE,
    CIRCUIT_TRANSITIONS,
];
