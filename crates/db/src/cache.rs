//! [`Cache`]: JSON values in Redis under a key prefix, failing fast.

use std::time::Duration;

use fred::interfaces::KeysInterface;
use fred::types::Expiration;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_metrics::{ErrorClass, OpKind, Registry};
use sluice_pool::RedisPool;

use crate::kv::{Failure, KeyValue};

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
/// it costs that only until the connection's circuit breaker (shared with
/// its [`KeyValue`] store) notices: after three failures in a row, or
/// half of the last 2 seconds' commands (at least 10), commands fail at
/// once with [`CacheError::CircuitOpen`]; one probe a second, on a
/// background task, finds Redis again.
#[derive(Debug, Clone)]
pub struct Cache {
    kv: KeyValue,
    prefix: String,
    timeout: Duration,
}

impl Cache {
    /// A cache on `pool` whose keys all start with `prefix`.
    pub fn new(pool: RedisPool, prefix: impl Into<String>) -> Self {
        Self::with_registry(pool, prefix, Registry::global())
    }

    /// As [`Cache::new`], recording into `registry`.
    pub fn with_registry(pool: RedisPool, prefix: impl Into<String>, registry: &Registry) -> Self {
        Self::over(KeyValue::with_registry(pool, registry), prefix)
    }

    /// A cache over a key-value store, sharing its pool, breaker and
    /// metrics.
    pub fn over(kv: KeyValue, prefix: impl Into<String>) -> Self {
        Self {
            kv,
            prefix: prefix.into(),
            timeout: Duration::from_millis(250),
        }
    }

    /// Changes the per-command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pool underneath.
    pub fn pool(&self) -> &RedisPool {
        self.kv.pool()
    }

    /// The key-value store underneath (same pool, breaker and metrics).
    pub fn store(&self) -> &KeyValue {
        &self.kv
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `command` within the cache's timeout and the breaker. A
    /// command Redis refuses is reported as unavailable too: to the cache,
    /// any failure means "fall back". When the breaker asks for a probe,
    /// the probe (a `PING`) runs on another task and this command skips
    /// the cache: the cache is optional, so no request waits to find out
    /// whether Redis is back.
    fn bounded<'a, T: 'a>(
        &'a self,
        command: impl Future<Output = fred::prelude::FredResult<T>> + 'a,
    ) -> impl Future<Output = Result<T, CacheError>> + 'a {
        // Boxed before anything else: fred's command futures are about
        // 14 KB, and an `async fn` would hold the argument in its own
        // state, and so in every caller's (the request handlers'), even
        // when no cache is configured.
        let command = Box::pin(command);
        async move {
            let permit = self
                .kv
                .breaker
                .try_acquire()
                .map_err(|_| CacheError::CircuitOpen)?;
            if permit.is_probe() {
                self.kv.probe_in_background(permit, self.timeout);
                return Err(CacheError::CircuitOpen);
            }
            KeyValue::judged(permit, self.timeout, command)
                .await
                .map_err(|f| match f {
                    Failure::CircuitOpen => CacheError::CircuitOpen,
                    Failure::Unavailable(e) => CacheError::Unavailable(e),
                    Failure::Command(e) => CacheError::Unavailable(Some(e)),
                })
        }
    }

    /// The value under `key`, if present and of type `T`. A value that
    /// does not decode counts as a miss (it is overwritten on the next set).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let key = self.key(key);
        let raw: Option<String> = self
            .kv
            .metrics
            .timed(OpKind::Read, self.bounded(self.kv.pool.client().get(key)))
            .await?;
        let value = raw.and_then(|raw| serde_json::from_str(&raw).ok());
        match value {
            Some(_) => self.kv.metrics.record_hit(),
            None => self.kv.metrics.record_miss(),
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
        let json = serde_json::to_vec(value).map_err(CacheError::Encoding)?;
        self.set_json_text(key, bytes::Bytes::from(json), ttl).await
    }

    /// The JSON text under `key`, as stored, if present and valid JSON
    /// (anything else counts as a miss): for a caller that embeds it
    /// without building a tree.
    pub async fn get_json_text(&self, key: &str) -> Result<Option<bytes::Bytes>, CacheError> {
        self.get_text_checked(key, |raw| {
            serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok()
        })
        .await
    }

    /// The text under `key`, as stored, if present and `accept` takes it
    /// (anything else counts as a miss, as for [`get`](Self::get)): for a
    /// caller that answers with the stored text once it has checked it —
    /// say by decoding it into a borrowing type — instead of decoding the
    /// value and encoding it again.
    pub async fn get_text_checked(
        &self,
        key: &str,
        accept: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Option<bytes::Bytes>, CacheError> {
        let key = self.key(key);
        let raw: Option<bytes::Bytes> = self
            .kv
            .metrics
            .timed(OpKind::Read, self.bounded(self.kv.pool.client().get(key)))
            .await?;
        let value = raw.filter(|raw| accept(raw));
        match value {
            Some(_) => self.kv.metrics.record_hit(),
            None => self.kv.metrics.record_miss(),
        }
        Ok(value)
    }

    /// Stores JSON text (already valid JSON: the caller checked it) under
    /// `key` for `ttl` (at least one second), as it is.
    pub async fn set_json_text(
        &self,
        key: &str,
        json: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let key = self.key(key);
        self.kv
            .metrics
            .timed(
                OpKind::Write,
                self.bounded(self.kv.pool.client().set::<(), _, _>(
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
            .kv
            .metrics
            .timed(OpKind::Write, self.bounded(self.kv.pool.client().del(key)))
            .await?;
        Ok(removed > 0)
    }

    /// Values for several keys in one round trip (on a Redis Cluster, one
    /// per slot, sent together), in order (absent or undecodable values
    /// are `None`).
    pub async fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let raw: Vec<Option<String>> = if self.kv.clustered() {
            // A cluster refuses MGET across slots: one per slot, together.
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            let groups = crate::kv::by_slot(&refs);
            let replies = futures_util::future::try_join_all(groups.iter().map(|(group, _)| {
                let mget = self.kv.pool.client().mget(group.clone());
                self.kv.metrics.timed(OpKind::Read, self.bounded(mget))
            }))
            .await?;
            crate::kv::in_order(full.len(), &groups, replies)
        } else {
            self.kv
                .metrics
                .timed(OpKind::Read, self.bounded(self.kv.pool.client().mget(full)))
                .await?
        };
        Ok(raw
            .into_iter()
            .map(|raw| {
                let value = raw.and_then(|raw| serde_json::from_str(&raw).ok());
                match value {
                    Some(_) => self.kv.metrics.record_hit(),
                    None => self.kv.metrics.record_miss(),
                }
                value
            })
            .collect())
    }
}
