//! [`ApiError`]: what can go wrong calling an upstream.

use std::sync::Arc;
use std::time::Duration;

use sluice_metrics::ErrorClass;
use sluice_retry::{Class, Classify, http_status_class};

/// A call to an upstream failed. Cloneable, so one coalesced or
/// deduplicated call can hand its failure to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request could not be built (bad path, header or body).
    #[error("{upstream}: invalid request: {reason}")]
    InvalidRequest {
        /// The upstream's name.
        upstream: Arc<str>,
        /// What is wrong.
        reason: String,
    },
    /// No connection could be opened (refused, unreachable, TLS).
    #[error("{upstream}: cannot connect")]
    Connect {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The cause.
        #[source]
        source: Arc<sluice_pool::SendError>,
    },
    /// The connection failed after the request was sent (reset, closed).
    #[error("{upstream}: connection failed")]
    Transport {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The cause.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// No complete answer within the time allowed.
    #[error("{upstream}: timed out after {after:?}")]
    Timeout {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The time allowed.
        after: Duration,
    },
    /// The upstream answered a status the caller cannot use: a transient
    /// one (429, 502, 503, 504) until the retries ran out, or any non-2xx
    /// status where a typed helper such as `get_json` needed success.
    #[error("{upstream}: answered {status}")]
    Status {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The status.
        status: u16,
        /// Its `Retry-After`, in seconds form.
        retry_after: Option<Duration>,
    },
    /// The upstream's circuit breaker is open: not called at all.
    #[error("{upstream}: circuit open, retry in {retry_after:?}")]
    CircuitOpen {
        /// The upstream's name.
        upstream: Arc<str>,
        /// When it will be tried again.
        retry_after: Duration,
    },
    /// The request's deadline passed while it queued for local capacity
    /// (the process-wide in-flight cap or the upstream's connection slots):
    /// nothing was sent, and the upstream is not blamed for it.
    #[error("{upstream}: no local request slot within {waited:?}")]
    Overloaded {
        /// The upstream's name.
        upstream: Arc<str>,
        /// How long it queued.
        waited: Duration,
    },
    /// The batch's answers reached its byte limit (`max_batch_bytes`)
    /// before this item's arrived: it was dropped or not fetched.
    #[error("{upstream}: the batch's answers reached {limit} bytes")]
    BatchTooLarge {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The limit.
        limit: usize,
    },
    /// The client was closed (the service is shutting down).
    #[error("{upstream}: the client is closed")]
    Closed {
        /// The upstream's name.
        upstream: Arc<str>,
    },
    /// The response body was larger than the limit.
    #[error("{upstream}: response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The limit.
        limit: usize,
    },
    /// JSON was asked for and the response is not JSON.
    #[error("{upstream}: response is not JSON (content type {content_type:?})")]
    NotJson {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The response's content type, or `""`.
        content_type: String,
    },
    /// The response said JSON but did not parse as the type asked for.
    #[error("{upstream}: invalid JSON in the response")]
    InvalidJson {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The parse error (position, not content).
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// No upstream of that name is configured.
    #[error("upstream {upstream} is not configured")]
    NotConfigured {
        /// The name asked for.
        upstream: Arc<str>,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The status the upstream answered, for [`ApiError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the upstream gave no answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ApiError::Timeout { .. })
    }
}

impl Classify for ApiError {
    fn class(&self) -> Class {
        match self {
            ApiError::Connect { .. } | ApiError::Transport { .. } | ApiError::Timeout { .. } => {
                Class::Transient
            }
            ApiError::Status { status, .. } => http_status_class(*status),
            _ => Class::Permanent,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            ApiError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl ErrorClass for ApiError {
    fn error_class(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Connect { .. } => "connect",
            ApiError::Transport { .. } => "transport",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Status { .. } => "status",
            ApiError::CircuitOpen { .. } => "circuit_open",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Closed { .. } => "closed",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::NotJson { .. } | ApiError::InvalidJson { .. } => "invalid_body",
            ApiError::NotConfigured { .. } => "not_configured",
        }
    }
}
