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
    /// Time a client has to send a request's headers, so that a slow-loris
    /// client cannot hold a connection. Default 10 s.
    pub header_read_timeout: Duration,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_concurrency: 1024,
            auth_tokens: Vec::new(),
            user_cache_ttl: Duration::from_secs(60),
            external_cache_ttl: Duration::ZERO,
            max_batch_size: 1000,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
