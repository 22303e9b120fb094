//! [`Cache`]: JSON values in Redis under a key prefix, failing fast.

use std::time::Duration;

use fred::interfaces::KeysInterface;
use fred::types::Expiration;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_metrics::{ConnectionMetrics, ErrorClass, OpKind, Registry};
use sluice_pool::RedisPool;
use sluice_retry::{BreakerConfig, CircuitBreaker, Window};

/// A cache operation failed. Callers fall back (to the database) rather
/// than fail their own request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Redis did not answer within the cache's timeout, or is down.
    #[error("cache unavailable")]
    Unavailable(#[source] Option<fred::error::Error>),
    /// Not tried: most recent commands failed, so the cache's breaker is
    /// open and Redis is left alone until its next probe.
    #[error("cache skipped: Redis failed recently (circuit open)")]
    CircuitOpen,
    /// A value could not be encoded, or a stored value did not decode as
    /// the requested type (it is treated as absent by `get`).
    #[error("cache value is not valid JSON for this type")]
    Encoding(#[source] serde_json::Error),
}

impl ErrorClass for CacheError {
    fn error_class(&self) -> &'static str {
        match self {
            CacheError::Unavailable(_) => "unavailable",
            CacheError::CircuitOpen => "circuit_open",
            CacheError::Encoding(_) => "encoding",
        }
    }
}

/// JSON values in Redis, every key under a prefix. Clones share the pool.
///
/// Each command is bounded by the cache's own timeout (default 250 ms),
/// much shorter than a request deadline: a Redis that is down or slow
/// costs a request at most that long before the caller falls back. And
/// it costs that only until a circuit breaker notices: once half of the
/// last 2 seconds' commands (at least 10) failed, commands fail at once
/// with [`CacheError::CircuitOpen`]; one probe a second finds Redis again.
/// Without it, every request would wait out the timeout while Redis is
/// down.
#[derive(Debug, Clone)]
pub struct Cache {
    pool: RedisPool,
    prefix: String,
    timeout: Duration,
    breaker: CircuitBreaker,
    metrics: ConnectionMetrics,
}

/// The cache's breaker: quick to open, and probing every second, since a
/// probe is one cheap command and a skipped cache costs a database query.
/// Three failures in a row open it at any traffic: the cache is optional,
/// so skipping it for a second by mistake costs little, while a hung
/// cache paid by every request costs its timeout each time.
const BREAKER: BreakerConfig = BreakerConfig {
    window: Window::Time(Duration::from_secs(2)),
    min_calls: 10,
    failure_rate: 0.5,
    open_interval: Duration::from_secs(1),
    half_open_probes: 1,
    slow_call: None,
    consecutive_failures: 3,
};

impl Cache {
    /// A cache on `pool` whose keys all start with `prefix`.
    pub fn new(pool: RedisPool, prefix: impl Into<String>) -> Self {
        Self::with_registry(pool, prefix, Registry::global())
    }

    /// As [`Cache::new`], recording into `registry`.
    pub fn with_registry(pool: RedisPool, prefix: impl Into<String>, registry: &Registry) -> Self {
        let metrics = registry.connection(sluice_metrics::Backend::Redis, pool.name());
        let resilience = sluice_metrics::ResilienceMetrics::new(pool.name());
        // A constant, checked by a unit test below: this cannot fail.
        let breaker = CircuitBreaker::with_metrics(BREAKER, resilience)
            .expect("the cache's breaker settings are valid");
        Self {
            pool,
            prefix: prefix.into(),
            timeout: Duration::from_millis(250),
            breaker,
            metrics,
        }
    }

    /// Changes the per-command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pool underneath.
    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `command` within the cache's timeout and breaker. fred's
    /// command futures are about 14 KB: boxed here, at the call, they stay
    /// out of the futures of `get`/`set` and of every caller's state
    /// machine, which would otherwise carry 14 KB per cache call (copied
    /// on every move) even when no cache is configured.
    fn bounded<'a, T: 'a>(
        &'a self,
        command: impl Future<Output = fred::prelude::FredResult<T>> + 'a,
    ) -> impl Future<Output = Result<T, CacheError>> + 'a {
        let command = Box::pin(command);
        async move {
            let permit = self
                .breaker
                .try_acquire()
                .map_err(|_| CacheError::CircuitOpen)?;
            let started = std::time::Instant::now();
            match tokio::time::timeout(self.timeout, command).await {
                Ok(Ok(value)) => {
                    permit.success(started.elapsed());
                    Ok(value)
                }
                Ok(Err(e)) => {
                    permit.failure();
                    Err(CacheError::Unavailable(Some(e)))
                }
                Err(_) => {
                    permit.failure();
                    Err(CacheError::Unavailable(None))
                }
            }
        }
    }

    /// The value under `key`, if present and of type `T`. A value that
    /// does not decode counts as a miss (it is overwritten on the next set).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let key = self.key(key);
        let raw: Option<String> = self
            .metrics
            .timed(OpKind::Read, self.bounded(self.pool.client().get(key)))
            .await?;
        let value = raw.and_then(|raw| serde_json::from_str(&raw).ok());
        match value {
            Some(_) => self.metrics.record_hit(),
            None => self.metrics.record_miss(),
        }
        Ok(value)
    }

    /// Stores `value` under `key` for `ttl` (at least one second).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let json = serde_json::to_string(value).map_err(CacheError::Encoding)?;
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let key = self.key(key);
        self.metrics
            .timed(
                OpKind::Write,
                self.bounded(self.pool.client().set::<(), _, _>(
                    key,
                    json,
                    Some(Expiration::EX(seconds)),
                    None,
                    false,
                )),
            )
            .await
    }

    /// Removes `key`; returns whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let key = self.key(key);
        let removed: i64 = self
            .metrics
            .timed(OpKind::Write, self.bounded(self.pool.client().del(key)))
            .await?;
        Ok(removed > 0)
    }

    /// Values for several keys in one round trip, in order (absent or
    /// undecodable values are `None`).
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let raw: Vec<Option<String>> = self
            .metrics
            .timed(OpKind::Read, self.bounded(self.pool.client().mget(full)))
            .await?;
        Ok(raw
            .into_iter()
            .map(|raw| {
                let value = raw.and_then(|raw| serde_json::from_str(&raw).ok());
                match value {
                    Some(_) => self.metrics.record_hit(),
                    None => self.metrics.record_miss(),
                }
                value
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_settings_are_valid() {
        assert!(CircuitBreaker::try_new(BREAKER).is_ok());
    }
}
