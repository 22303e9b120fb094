//! [`ServerConfig`]: limits and behaviour of the HTTP server.

use std::time::Duration;

use sluice_pool::Secret;

/// What the server needs besides its dependencies. Every limit has a
/// default; the binary fills these from the environment.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body; larger ones get 413 without being read to the
    /// end. Default 1 MiB (`SLUICE_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Time a request may take in the server, I/O included; past it the
    /// client gets 503 `timeout`. Default 30 s (`IO_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Time a connection may take from accept (or from the first byte of a
    /// new request) to a complete set of request headers: the TLS
    /// handshake, protocol detection, the HTTP/2 preface and first stream,
    /// HTTP/1 headers. A silent or slow-loris client is cut off after it.
    /// Default 10 s (`SLUICE_HEADER_READ_TIMEOUT`).
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection (no request in flight, nothing
    /// sent) is kept open. Default 60 s (`SLUICE_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Time a request body may take to arrive, from the request's headers
    /// to its last byte; past it the answer is 408. Default 10 s
    /// (`SLUICE_BODY_READ_TIMEOUT`).
    pub body_read_timeout: Duration,
    /// Open connections at once; past it the server stops accepting (the
    /// kernel's backlog holds new ones) until one closes. Default 10,000;
    /// the binary derives it from the file-descriptor limit
    /// (`SLUICE_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time between the shutdown signal (when `/readyz` turns 503) and the
    /// listener closing, so that balancers stop sending first. Default 1 s
    /// (`SLUICE_SHUTDOWN_LINGER`).
    pub shutdown_linger: Duration,
    /// Requests handled at once; past it the server sheds load with 503
    /// `overloaded` and `Retry-After` instead of queueing. Default 1024.
    pub max_concurrency: usize,
    /// Bearer tokens; empty means no authentication (`SLUICE_AUTH_TOKENS`).
    pub auth_tokens: Vec<Secret<String>>,
    /// Time-to-live of cached users. Default 60 s (`SLUICE_USER_CACHE_TTL`).
    pub user_cache_ttl: Duration,
    /// Time-to-live of cached upstream answers; zero turns it off.
    /// Default 0 (`API_EXTERNAL_CACHE_TTL`).
    pub external_cache_ttl: Duration,
    /// Most ids in one batch request. Default 1000 (`IO_MAX_BATCH_SIZE`).
    pub max_batch_size: usize,
    /// Time in-flight requests get to finish on shutdown. Default 30 s
    /// (`SLUICE_SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// Whether the server is served over TLS: the `url_scheme` label of
    /// its request metric (`https`). Default false.
    pub https: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            shutdown_linger: Duration::from_secs(1),
            max_concurrency: 1024,
            auth_tokens: Vec::new(),
            user_cache_ttl: Duration::from_secs(60),
            external_cache_ttl: Duration::ZERO,
            max_batch_size: 1000,
            shutdown_grace: Duration::from_secs(30),
            https: false,
        }
    }
}
