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
/// timeout, ssl_verify)` plus the limits it lacked.
#[derive(Debug, Clone)]
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

    /// The upstream `name` from `API_<NAME>_*` variables through `lookup`
    /// (the library never reads the environment itself). `None` when
    /// `API_<NAME>_BASE_URL` is not set.
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `API_<NAME>_BASE_URL` | the base URL (required) |
    /// | `API_<NAME>_TIMEOUT` | seconds per attempt |
    /// | `API_<NAME>_DEADLINE` | seconds per call; default `IO_REQUEST_TIMEOUT`, else 30 |
    /// | `API_<NAME>_SSL_VERIFY` | `false` to skip certificate checks |
    /// | `API_<NAME>_SSL_CA` | CA file |
    /// | `API_<NAME>_HEADERS` | JSON object of default headers |
    /// | `API_<NAME>_TOKEN` | sends `Authorization: Bearer <token>` |
    /// | `API_<NAME>_MAX_CONNECTIONS` | in-flight limit |
    /// | `API_<NAME>_MAX_BODY_BYTES` | response size limit |
    /// | `API_<NAME>_RETRY_ATTEMPTS`, `_RETRY_DELAY` | default `IO_RETRY_ATTEMPTS`, `IO_RETRY_DELAY` |
    pub fn from_env(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let prefix = format!("API_{}", name.to_ascii_uppercase());
        let get = |key: String| {
            lookup(&key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (key, v))
        };
        let var = |suffix: &str| get(format!("{prefix}_{suffix}"));
        let Some((key, base)) = var("BASE_URL") else {
            return Ok(None);
        };
        let mut c = Self::new(name.to_ascii_lowercase(), &base)
            .map_err(|e| config_error(&key, e.reason))?;
        let secs = |key: &str, v: &str| {
            sluice_pool::seconds(key, v)
                .map_err(|_| config_error(key, "expected a number of seconds greater than 0"))
        };
        if let Some((key, v)) = var("TIMEOUT") {
            c.timeout = secs(&key, &v)?;
        }
        if let Some((key, v)) = var("DEADLINE").or_else(|| get("IO_REQUEST_TIMEOUT".into())) {
            c.deadline = secs(&key, &v)?;
        }
        if let Some((key, v)) = var("SSL_VERIFY") {
            c.ssl_verify = sluice_pool::boolean(&key, &v)
                .map_err(|_| config_error(&key, "expected true or false"))?;
        }
        c.ca_file = var("SSL_CA").map(|(_, v)| PathBuf::from(v));
        if let Some((key, v)) = var("HEADERS") {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&v)
                .map_err(|_| {
                    config_error(
                        &key,
                        "expected a JSON object of header names to string values",
                    )
                })?;
            for (header, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| config_error(&key, "header values must be strings"))?;
                c.headers.push((header, Secret::new(value.to_owned())));
            }
        }
        if let Some((_, token)) = var("TOKEN") {
            c.headers.push((
                "authorization".into(),
                Secret::new(format!("Bearer {token}")),
            ));
        }
        let whole = |key: &str, v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| config_error(key, "expected a whole number greater than 0"))
        };
        if let Some((key, v)) = var("MAX_CONNECTIONS") {
            c.max_connections =
                u32::try_from(whole(&key, &v)?).map_err(|_| config_error(&key, "too large"))?;
        }
        if let Some((key, v)) = var("MAX_BODY_BYTES") {
            c.max_body_bytes =
                usize::try_from(whole(&key, &v)?).map_err(|_| config_error(&key, "too large"))?;
        }
        if let Some((key, v)) = var("MAX_BATCH_BYTES") {
            c.max_batch_bytes =
                usize::try_from(whole(&key, &v)?).map_err(|_| config_error(&key, "too large"))?;
        }
        if let Some((key, v)) = var("RETRY_ATTEMPTS").or_else(|| get("IO_RETRY_ATTEMPTS".into())) {
            c.retry_attempts =
                u32::try_from(whole(&key, &v)?).map_err(|_| config_error(&key, "too large"))?;
        }
        if let Some((key, v)) = var("RETRY_DELAY").or_else(|| get("IO_RETRY_DELAY".into())) {
            c.retry_delay = secs(&key, &v)?;
        }
        c.validate_headers()
            .map_err(|e| config_error(format!("{prefix}_HEADERS"), e.reason))?;
        Ok(Some(c))
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
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_design_variables() {
        let c = UpstreamConfig::from_env(
            "external",
            env(&[
                ("API_EXTERNAL_BASE_URL", "https://api.example.com/v1"),
                ("API_EXTERNAL_TIMEOUT", "2.5"),
                ("API_EXTERNAL_SSL_VERIFY", "false"),
                ("API_EXTERNAL_TOKEN", "s3cret-token"),
                ("IO_RETRY_ATTEMPTS", "4"),
                ("IO_REQUEST_TIMEOUT", "10"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!((c.ssl_verify, c.retry_attempts), (false, 4));
        assert_eq!(c.deadline, Duration::from_secs(10));
        assert!(!format!("{c:?}").contains("s3cret-token"));
        assert!(
            UpstreamConfig::from_env("internal", env(&[]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (key, value) in [
            ("API_EXTERNAL_BASE_URL", "ftp://x"),
            ("API_EXTERNAL_TIMEOUT", "soon"),
            ("API_EXTERNAL_SSL_VERIFY", "maybe"),
            ("API_EXTERNAL_HEADERS", "[1]"),
            ("API_EXTERNAL_MAX_CONNECTIONS", "0"),
        ] {
            let mut pairs = vec![("API_EXTERNAL_BASE_URL", "http://127.0.0.1:1")];
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            let err = UpstreamConfig::from_env("external", env(&pairs)).unwrap_err();
            assert_eq!(err.field, key, "{err}");
        }
    }
}
