//! [`Pools`]: every open pool by name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::http::HttpPool;
use crate::redis::RedisPool;
use crate::sql::SqlPool;
use crate::stats::PoolStats;

/// An open pool of any kind.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyPool {
    /// PostgreSQL or SQLite.
    Sql(SqlPool),
    /// Redis.
    Redis(RedisPool),
    /// An HTTP upstream.
    Http(HttpPool),
}

impl AnyPool {
    /// Current sizes.
    pub fn stats(&self) -> PoolStats {
        match self {
            AnyPool::Sql(p) => p.stats(),
            AnyPool::Redis(p) => p.stats(),
            AnyPool::Http(p) => p.stats(),
        }
    }

    /// A health check (HTTP pools have none of their own: always Ok).
    pub async fn ping(&self) -> crate::Result<()> {
        match self {
            AnyPool::Sql(p) => p.ping().await,
            AnyPool::Redis(p) => p.ping().await,
            AnyPool::Http(_) => Ok(()),
        }
    }

    /// Closes the pool, waiting for borrowed connections.
    pub async fn close(&self) {
        match self {
            AnyPool::Sql(p) => p.close().await,
            AnyPool::Redis(p) => p.close().await,
            AnyPool::Http(p) => p.close().await,
        }
    }
}

/// Pools by their configured name. Clones share the registry.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    pools: Arc<RwLock<BTreeMap<String, AnyPool>>>,
}

impl Pools {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a pool under `name`.
    pub fn insert(&self, name: impl Into<String>, pool: AnyPool) {
        let mut pools = self
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.insert(name.into(), pool);
    }

    /// The pool called `name`.
    pub fn get(&self, name: &str) -> Option<AnyPool> {
        self.pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every pool, by name.
    pub fn all(&self) -> Vec<(String, AnyPool)> {
        let pools = self
            .pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Closes every pool, each waiting for its borrowed connections.
    pub async fn close_all(&self) {
        for (_, pool) in self.all() {
            pool.close().await;
        }
    }
}
