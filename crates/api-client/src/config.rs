//! [`UpstreamConfig`]: one named upstream API.

use std::path::PathBuf;
use std::time::Duration;

use sluice_pool::Secret;
use sluice_retry::BreakerConfig;

/// A configuration value was rejected; `field` names it (the environment
/// variable when it came from the environment). Never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration {field}: {reason}")]
pub struct ConfigError {
    /// The field or variable.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn config_error(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One upstream: the design's `initialize_api(name, base_url, headers,
/// timeout, ssl_verify)` plus the limits it lacked. `Debug` shows the
/// base URL without credentials and no header values.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// The upstream's name (labels metrics and errors).
    pub name: String,
    /// `http://` or `https://` base URL; request paths are appended to it.
    pub base_url: url::Url,
    /// Headers sent with every request. Values are secrets (tokens): never
    /// logged or formatted, and marked sensitive for HTTP/2 header tables.
    pub headers: Vec<(String, Secret<String>)>,
    /// Time allowed for one attempt, body included. Default 10 s: a third
    /// of the default deadline, so that a hung upstream's attempt that
    /// times out leaves room for two more within it.
    pub timeout: Duration,
    /// Time allowed for a whole call, retries and delays included.
    /// Default 30 s.
    pub deadline: Duration,
    /// Verify the upstream's TLS certificate. Default true.
    pub ssl_verify: bool,
    /// A PEM file of CA certificates to trust instead of the bundled roots.
    pub ca_file: Option<PathBuf>,
    /// Most requests in flight to this upstream (and so connections).
    /// Default 100.
    pub max_connections: u32,
    /// Idle connections close after this. Default 20 s.
    pub idle_timeout: Duration,
    /// Largest response body read. Default 10 MiB.
    pub max_body_bytes: usize,
    /// Most response-body bytes one batch may hold (its distinct answers
    /// together). Past it, the batch stops fetching and its remaining
    /// items fail with [`ApiError::BatchTooLarge`](crate::ApiError). Default
    /// 32 MiB: with the in-flight cap's bodies being read, a batch of 1,000
    /// distinct 1 MiB answers stays well under 100 MiB.
    pub max_batch_bytes: usize,
    /// Attempts for idempotent requests. Default 3 (`IO_RETRY_ATTEMPTS`).
    pub retry_attempts: u32,
    /// Base retry delay. Default 1 s (`IO_RETRY_DELAY`).
    pub retry_delay: Duration,
    /// The upstream's circuit breaker.
    pub breaker: BreakerConfig,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &sluice_pool::redact_url(self.base_url.as_str()))
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .field("ssl_verify", &self.ssl_verify)
            .field("ca_file", &self.ca_file)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_delay", &self.retry_delay)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl UpstreamConfig {
    /// Defaults for an upstream at `base_url`.
    pub fn new(name: impl Into<String>, base_url: &str) -> Result<Self, ConfigError> {
        let base_url =
            url::Url::parse(base_url).map_err(|_| config_error("base_url", "not a valid URL"))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
            return Err(config_error(
                "base_url",
                "expected an http:// or https:// URL with a host",
            ));
        }
        Ok(Self {
            name: name.into(),
            base_url,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            ssl_verify: true,
            ca_file: None,
            max_connections: 100,
            idle_timeout: Duration::from_secs(20),
            max_body_bytes: 10 * 1024 * 1024,
            max_batch_bytes: 32 * 1024 * 1024,
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
        })
    }

    /// Checks values that cannot work, naming the field (`headers`,
    /// `timeout`, `deadline`, `max_connections`, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(config_error("timeout", "must be greater than zero"));
        }
        if self.deadline.is_zero() {
            return Err(config_error("deadline", "must be greater than zero"));
        }
        if self.max_connections == 0 {
            return Err(config_error("max_connections", "must be at least 1"));
        }
        if self.max_body_bytes == 0 || self.max_batch_bytes == 0 {
            return Err(config_error("max_body_bytes", "must be at least 1"));
        }
        if self.retry_attempts == 0 {
            return Err(config_error("retry_attempts", "must be at least 1"));
        }
        self.validate_headers()
    }

    pub(crate) fn validate_headers(&self) -> Result<(), ConfigError> {
        for (name, value) in &self.headers {
            http::HeaderName::try_from(name.as_str())
                .map_err(|_| config_error("headers", format!("invalid header name {name:?}")))?;
            http::HeaderValue::try_from(value.expose().as_str()).map_err(|_| {
                config_error("headers", format!("invalid value for header {name:?}"))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(
            UpstreamConfig::new("x", "ftp://h").unwrap_err().field,
            "base_url"
        );
        let mut c = UpstreamConfig::new("x", "http://127.0.0.1:1").unwrap();
        assert!(c.validate().is_ok());
        c.headers
            .push(("bad header".into(), Secret::new("v".into())));
        assert_eq!(c.validate().unwrap_err().field, "headers");
        c.headers.clear();
        c.base_url = url::Url::parse("https://ada:hunter2@api.example.com/v1").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        c.max_connections = 0;
        assert_eq!(c.validate().unwrap_err().field, "max_connections");
    }
}
