//! [`AppState`]: everything the handlers use, given to the server whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_api_client::ApiClient;
use sluice_db::{Cache, Database};
use sluice_metrics::Registry;
use sluice_metrics::prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;

/// The server's dependencies. Nothing below the binary reads the
/// environment: the binary builds this and hands it over. Clones share it.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    pub(crate) db: Database,
    pub(crate) cache: Option<Cache>,
    pub(crate) api: Option<ApiClient>,
    /// Further named upstreams (`API_<NAME>_*`), reported in `/io-metrics`.
    pub(crate) other_apis: Vec<ApiClient>,
    pub(crate) registry: Registry,
    pub(crate) prometheus: Option<PrometheusHandle>,
    pub(crate) concurrency: Arc<Semaphore>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub(crate) draining: AtomicBool,
}

impl AppState {
    /// State over a database, with no cache, no upstream and no Prometheus.
    pub fn new(config: ServerConfig, db: Database) -> Self {
        Self::build(config, db, None, None, Registry::global().clone(), None)
    }

    /// State with every optional part. `registry` is where the layers below
    /// record (for `/io-metrics`); `prometheus` renders `/metrics`.
    pub fn build(
        config: ServerConfig,
        db: Database,
        cache: Option<Cache>,
        api: Option<ApiClient>,
        registry: Registry,
        prometheus: Option<PrometheusHandle>,
    ) -> Self {
        let concurrency = Arc::new(Semaphore::new(
            config.max_concurrency.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Self {
            inner: Arc::new(Inner {
                config,
                db,
                cache,
                api,
                other_apis: Vec::new(),
                registry,
                prometheus,
                concurrency,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Adds further named upstreams, reported in `/io-metrics` beside the
    /// `external` one (no route proxies them).
    pub fn with_other_upstreams(self, others: Vec<ApiClient>) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                config: inner.config.clone(),
                db: inner.db.clone(),
                cache: inner.cache.clone(),
                api: inner.api.clone(),
                other_apis: others,
                registry: inner.registry.clone(),
                prometheus: inner.prometheus.clone(),
                concurrency: inner.concurrency.clone(),
                draining: AtomicBool::new(inner.draining.load(Ordering::Relaxed)),
            }),
        }
    }

    /// Marks the server as draining: `/readyz` answers 503 from now on.
    /// [`serve`](crate::serve) calls this when its shutdown future completes.
    pub fn begin_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Closes every pool once the server has stopped serving, in this
    /// order: the upstream clients (each waits for its requests in
    /// flight), then the Redis clients, then the database last (it waits
    /// for borrowed connections, so work that is still finishing keeps
    /// its system of record). Idempotent.
    pub async fn close_all(&self) {
        let inner = &self.inner;
        for api in inner.api.iter().chain(&inner.other_apis) {
            api.close().await;
        }
        if let Some(cache) = &inner.cache {
            cache.pool().close().await;
        }
        inner.db.close().await;
    }
}
