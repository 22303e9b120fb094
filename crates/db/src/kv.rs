//! [`KeyValue`]: Redis as a key-value store — strings and bytes, TTLs,
//! counters and pipelines — with the cache's metrics, breaker and timeout.

use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::{Expiration, Value};
use sluice_metrics::{ConnectionMetrics, ErrorClass, OpKind, Registry};
use sluice_pool::{RedisPool, redis_class};
use sluice_retry::Class;
use sluice_retry::{BreakerConfig, CircuitBreaker, Permit, Window};

/// A key-value operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// Redis did not answer within the timeout, or is down.
    #[error("redis {name} unavailable")]
    Unavailable {
        /// The connection's name.
        name: String,
        /// fred's error; `None` for a timeout.
        #[source]
        source: Option<fred::error::Error>,
    },
    /// Not tried: recent commands failed, so the breaker is open until
    /// its next probe.
    #[error("redis {name} skipped: it failed recently (circuit open)")]
    CircuitOpen {
        /// The connection's name.
        name: String,
    },
    /// Redis answered with an error (a command on a key of the wrong
    /// type, a value that is not an integer for `INCR`, …). Not a sign
    /// that Redis is down: it does not count against the breaker.
    #[error("redis {name} refused the command")]
    Command {
        /// The connection's name.
        name: String,
        /// fred's error, with Redis's message.
        #[source]
        source: fred::error::Error,
    },
    /// A value asked for as a string is not UTF-8.
    #[error("redis value is not UTF-8 text")]
    NotText,
}

impl ErrorClass for KvError {
    fn error_class(&self) -> &'static str {
        match self {
            KvError::Unavailable { .. } => "unavailable",
            KvError::CircuitOpen { .. } => "circuit_open",
            KvError::Command { .. } => "command",
            KvError::NotText => "encoding",
        }
    }
}

/// One reply of a [`Pipeline`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// No value (a missing key).
    Nil,
    /// `OK` and other status replies.
    Status(String),
    /// An integer (`INCR`, `DEL`, `EXPIRE`).
    Int(i64),
    /// A string or bytes.
    Bytes(Bytes),
    /// Several replies (`MGET`).
    Array(Vec<Reply>),
}

impl Reply {
    fn from_value(value: Value) -> Self {
        match value {
            Value::Null => Reply::Nil,
            Value::Integer(i) => Reply::Int(i),
            Value::Boolean(b) => Reply::Int(i64::from(b)),
            Value::Double(d) => Reply::Bytes(Bytes::from(d.to_string())),
            Value::String(s) if &*s == "OK" || &*s == "QUEUED" => Reply::Status(s.to_string()),
            Value::String(s) => Reply::Bytes(s.into_inner()),
            Value::Bytes(b) => Reply::Bytes(b),
            Value::Array(items) => Reply::Array(items.into_iter().map(Reply::from_value).collect()),
            other => Reply::Bytes(Bytes::from(format!("{other:?}"))),
        }
    }

    /// The bytes of a string reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bytes(b) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The integer of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// The breaker of a Redis connection, shared by its [`KeyValue`] store
/// and [`Cache`](crate::Cache): quick to open and probing every second,
/// since a probe is one cheap command (the cache probes on a background
/// task, so no request waits for it). Three failures in a row open it at
/// any traffic, so a hung Redis is paid three timeouts, not one per
/// request.
pub(crate) const BREAKER: BreakerConfig = BreakerConfig {
    window: Window::Time(Duration::from_secs(2)),
    min_calls: 10,
    failure_rate: 0.5,
    open_interval: Duration::from_secs(1),
    max_open_interval: Duration::from_secs(1),
    half_open_probes: 1,
    slow_call: None,
    consecutive_failures: 3,
};

/// Why a bounded command failed, before it is named for its caller.
pub(crate) enum Failure {
    CircuitOpen,
    Unavailable(Option<fred::error::Error>),
    Command(fred::error::Error),
}

/// Redis as a key-value store. Clones share the pool, the breaker and the
/// metrics (recorded under the pool's name: reads and writes).
///
/// Every command is bounded by a timeout (default: the pool's command
/// timeout, `REDIS_TIMEOUT`) and goes through the connection's breaker:
/// after three failures in a row, or half of the last 2 s's commands,
/// commands fail at once with [`KvError::CircuitOpen`] until a probe a
/// second later finds Redis again. Keys are used as given (no prefix).
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub(crate) pool: RedisPool,
    pub(crate) timeout: Duration,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) metrics: ConnectionMetrics,
}

impl KeyValue {
    /// A store on `pool`, recording into the global registry.
    pub fn new(pool: RedisPool) -> Self {
        Self::with_registry(pool, Registry::global())
    }

    /// A store on `pool`, recording into `registry`.
    pub fn with_registry(pool: RedisPool, registry: &Registry) -> Self {
        let metrics = registry.connection(sluice_metrics::Backend::Redis, pool.name());
        let resilience =
            sluice_metrics::ResilienceMetrics::new(sluice_metrics::Backend::Redis, pool.name());
        // A constant, checked by a unit test: this cannot fail.
        let breaker = CircuitBreaker::with_metrics(BREAKER, resilience)
            .expect("the Redis breaker settings are valid");
        Self {
            timeout: pool.command_timeout(),
            pool,
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

    /// The connection's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// Runs `command` within `timeout` and the breaker. fred's command
    /// futures are large (about 14 KB): boxed here, they stay out of every
    /// caller's state machine.
    pub(crate) fn bounded<'a, T: 'a>(
        &'a self,
        timeout: Duration,
        command: impl Future<Output = fred::prelude::FredResult<T>> + 'a,
    ) -> impl Future<Output = Result<T, Failure>> + 'a {
        let command = Box::pin(command);
        async move {
            let permit = self
                .breaker
                .try_acquire()
                .map_err(|_| Failure::CircuitOpen)?;
            Self::judged(permit, timeout, command).await
        }
    }

    /// Runs `command` within `timeout`, reporting to the breaker through
    /// `permit`: a command Redis refuses means Redis is up.
    pub(crate) async fn judged<T>(
        permit: Permit<'_>,
        timeout: Duration,
        command: impl Future<Output = fred::prelude::FredResult<T>>,
    ) -> Result<T, Failure> {
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, command).await {
            Ok(Ok(value)) => {
                permit.success(started.elapsed());
                Ok(value)
            }
            Ok(Err(e)) if redis_class(&e) == Class::Permanent => {
                permit.success(started.elapsed());
                Err(Failure::Command(e))
            }
            Ok(Err(e)) => {
                permit.failure();
                Err(Failure::Unavailable(Some(e)))
            }
            Err(_) => {
                permit.failure();
                Err(Failure::Unavailable(None))
            }
        }
    }

    /// Probes Redis on another task (`PING` within `timeout`), reporting
    /// to the breaker through `permit`: for callers that would rather skip
    /// Redis than wait to find out whether it is back.
    pub(crate) fn probe_in_background(&self, permit: Permit<'_>, timeout: Duration) {
        let permit = permit.into_owned();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match tokio::time::timeout(timeout, pool.client().ping::<()>(None)).await {
                Ok(Ok(())) => permit.success(started.elapsed()),
                _ => permit.failure(),
            }
        });
    }

    fn named(&self, failure: Failure) -> KvError {
        let name = self.name().to_owned();
        match failure {
            Failure::CircuitOpen => KvError::CircuitOpen { name },
            Failure::Unavailable(source) => KvError::Unavailable { name, source },
            Failure::Command(source) => KvError::Command { name, source },
        }
    }

    /// A command within the store's timeout and breaker, timed. Not an
    /// `async fn`: the (large) command future is boxed before it is held.
    fn run<'a, T: 'a>(
        &'a self,
        kind: OpKind,
        command: impl Future<Output = fred::prelude::FredResult<T>> + 'a,
    ) -> impl Future<Output = Result<T, KvError>> + 'a {
        let bounded = self.bounded(self.timeout, command);
        async move {
            self.metrics
                .timed(kind, async { bounded.await.map_err(|f| self.named(f)) })
                .await
        }
    }

    /// The bytes under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let value: Option<Bytes> = self.run(OpKind::Read, self.pool.client().get(key)).await?;
        match value {
            Some(_) => self.metrics.record_hit(),
            None => self.metrics.record_miss(),
        }
        Ok(value)
    }

    /// The text under `key`, if any; [`KvError::NotText`] if it is not UTF-8.
    pub async fn get_string(&self, key: &str) -> Result<Option<String>, KvError> {
        match self.get(key).await? {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| KvError::NotText),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, for `ttl` (rounded up to a whole
    /// millisecond) or, with `None`, until deleted.
    pub async fn set(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let expiration = ttl.map(expiration);
        self.run(
            OpKind::Write,
            self.pool
                .client()
                .set::<(), _, _>(key, value.into(), expiration, None, false),
        )
        .await
    }

    /// The values of `keys` in order: one round trip, or on a Redis
    /// Cluster one per slot the keys hash to, sent together (a cluster
    /// refuses a multi-key command across slots with `CROSSSLOT`).
    pub async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = if self.clustered() {
            let groups = by_slot(keys);
            let replies = futures_util::future::try_join_all(groups.iter().map(|(group, _)| {
                self.run(
                    OpKind::Read,
                    self.pool
                        .client()
                        .mget::<Vec<Option<Bytes>>, _>(group.clone()),
                )
            }))
            .await?;
            in_order(keys.len(), &groups, replies)
        } else {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            self.run(OpKind::Read, self.pool.client().mget(keys))
                .await?
        };
        for v in &values {
            match v {
                Some(_) => self.metrics.record_hit(),
                None => self.metrics.record_miss(),
            }
        }
        Ok(values)
    }

    /// Removes `keys`; returns how many existed. On a Redis Cluster, one
    /// command per slot, sent together.
    pub async fn del(&self, keys: &[&str]) -> Result<u64, KvError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let removed: i64 =
            if self.clustered() {
                let groups = by_slot(keys);
                futures_util::future::try_join_all(groups.into_iter().map(|(group, _)| {
                    self.run(OpKind::Write, self.pool.client().del::<i64, _>(group))
                }))
                .await?
                .into_iter()
                .sum()
            } else {
                let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
                self.run(OpKind::Write, self.pool.client().del(keys))
                    .await?
            };
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// Whether the store is a Redis Cluster.
    pub(crate) fn clustered(&self) -> bool {
        self.pool.client().next().is_clustered()
    }

    /// Sets `key` to expire after `ttl`; returns whether the key exists.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        let millis = i64::try_from(ttl.as_millis().max(1)).unwrap_or(i64::MAX);
        let set: i64 = self
            .run(OpKind::Write, self.pool.client().pexpire(key, millis, None))
            .await?;
        Ok(set == 1)
    }

    /// Adds `by` to the integer under `key` (0 when absent); returns the
    /// new value.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError> {
        self.run(OpKind::Write, self.pool.client().incr_by(key, by))
            .await
    }

    /// A pipeline: commands queued here go to Redis in one round trip
    /// when it [`run`](Pipeline::run)s.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            kv: self,
            commands: Vec::new(),
        }
    }
}

fn expiration(ttl: Duration) -> Expiration {
    Expiration::PX(i64::try_from(ttl.as_millis().max(1)).unwrap_or(i64::MAX))
}

#[derive(Debug)]
enum Command {
    Get(String),
    Set(String, Bytes, Option<Duration>),
    Del(Vec<String>),
    Expire(String, Duration),
    Incr(String, i64),
}

/// Commands sent to Redis together, answered in order. Built by
/// [`KeyValue::pipeline`]. Not a transaction: each command succeeds or
/// fails on its own.
#[derive(Debug)]
#[must_use = "a pipeline does nothing until it runs"]
pub struct Pipeline<'a> {
    kv: &'a KeyValue,
    commands: Vec<Command>,
}

impl Pipeline<'_> {
    /// Queues `GET key`.
    pub fn get(mut self, key: &str) -> Self {
        self.commands.push(Command::Get(key.to_owned()));
        self
    }

    /// Queues `SET key value` with an optional TTL.
    pub fn set(mut self, key: &str, value: impl Into<Bytes>, ttl: Option<Duration>) -> Self {
        self.commands
            .push(Command::Set(key.to_owned(), value.into(), ttl));
        self
    }

    /// Queues `DEL keys…`.
    pub fn del(mut self, keys: &[&str]) -> Self {
        self.commands
            .push(Command::Del(keys.iter().map(|k| (*k).to_owned()).collect()));
        self
    }

    /// Queues `PEXPIRE key ttl`.
    pub fn expire(mut self, key: &str, ttl: Duration) -> Self {
        self.commands.push(Command::Expire(key.to_owned(), ttl));
        self
    }

    /// Queues `INCRBY key by`.
    pub fn incr(mut self, key: &str, by: i64) -> Self {
        self.commands.push(Command::Incr(key.to_owned(), by));
        self
    }

    /// Sends every queued command in one round trip; one reply per
    /// command, in order. A command Redis refuses is an `Err` item; the
    /// others still apply. Recorded as one write when any command writes.
    pub async fn run(self) -> Result<Vec<Result<Reply, KvError>>, KvError> {
        if self.commands.is_empty() {
            return Ok(Vec::new());
        }
        let kv = self.kv;
        let writes = self.commands.iter().any(|c| !matches!(c, Command::Get(_)));
        let kind = if writes { OpKind::Write } else { OpKind::Read };
        let pipeline = kv.pool.client().next().pipeline();
        for command in self.commands {
            // Queuing only buffers the command; errors come with the replies.
            let queued: fred::prelude::FredResult<()> = match command {
                Command::Get(key) => pipeline.get(key).await,
                Command::Set(key, value, ttl) => {
                    pipeline
                        .set(key, value, ttl.map(expiration), None, false)
                        .await
                }
                Command::Del(keys) => pipeline.del(keys).await,
                Command::Expire(key, ttl) => {
                    let millis = i64::try_from(ttl.as_millis().max(1)).unwrap_or(i64::MAX);
                    pipeline.pexpire(key, millis, None).await
                }
                Command::Incr(key, by) => pipeline.incr_by(key, by).await,
            };
            if let Err(e) = queued {
                return Err(kv.named(Failure::Command(e)));
            }
        }
        let replies: Vec<fred::prelude::FredResult<Value>> = kv
            .run(kind, async {
                let replies = pipeline.try_all::<Value>().await;
                // A lost connection fails every reply the same way: that
                // is Redis being unavailable, not a refused command.
                match replies.first() {
                    Some(Err(e))
                        if redis_class(e) == Class::Transient
                            && replies.iter().all(|r| r.is_err()) =>
                    {
                        Err(e.clone())
                    }
                    _ => Ok(replies),
                }
            })
            .await?;
        Ok(replies
            .into_iter()
            .map(|r| match r {
                Ok(value) => Ok(Reply::from_value(value)),
                Err(e) => Err(kv.named(Failure::Command(e))),
            })
            .collect())
    }
}

/// The values of `replies` (one per group of [`by_slot`]) back in the
/// order of the `n` keys.
pub(crate) fn in_order<T>(
    n: usize,
    groups: &[(Vec<String>, Vec<usize>)],
    replies: Vec<Vec<Option<T>>>,
) -> Vec<Option<T>> {
    let mut values: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    for ((_, positions), reply) in groups.iter().zip(replies) {
        for (position, value) in positions.iter().zip(reply) {
            values[*position] = value;
        }
    }
    values
}

/// `keys` grouped by the cluster slot they hash to, each group with the
/// keys' positions in `keys`, in order of first appearance.
pub(crate) fn by_slot(keys: &[&str]) -> Vec<(Vec<String>, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<String>, Vec<usize>)> = Vec::new();
    for (position, key) in keys.iter().enumerate() {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        match groups.iter_mut().find(|(s, _, _)| *s == slot) {
            Some((_, group, positions)) => {
                group.push((*key).to_owned());
                positions.push(position);
            }
            None => groups.push((slot, vec![(*key).to_owned()], vec![position])),
        }
    }
    groups
        .into_iter()
        .map(|(_, group, positions)| (group, positions))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_grouped_by_slot_keeping_their_positions() {
        // `{user}` hash tags share a slot; `a` and `b` do not (15495, 3300).
        let groups = by_slot(&["{user}1", "a", "{user}2", "b"]);
        assert_eq!(
            groups,
            vec![
                (vec!["{user}1".to_owned(), "{user}2".to_owned()], vec![0, 2]),
                (vec!["a".to_owned()], vec![1]),
                (vec!["b".to_owned()], vec![3]),
            ]
        );
    }

    #[test]
    fn the_breaker_settings_are_valid() {
        assert!(CircuitBreaker::try_new(BREAKER).is_ok());
    }

    #[test]
    fn replies_keep_their_kind() {
        assert_eq!(Reply::from_value(Value::Null), Reply::Nil);
        assert_eq!(Reply::from_value(Value::Integer(3)).as_int(), Some(3));
        assert_eq!(
            Reply::from_value(Value::Bytes(Bytes::from_static(b"v"))).as_bytes(),
            Some(&b"v"[..])
        );
    }
}
