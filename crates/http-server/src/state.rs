//! [`AppState`]: everything the handlers use, given to the server whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_api_client::ApiClient;
use sluice_db::{Cache, Database};
use sluice_io::{IoError, IoManager, IoSettings};
use sluice_metrics::Registry;
use sluice_metrics::prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;

/// The name of the database the routes use.
pub const PRIMARY_DATABASE: &str = "primary";
/// The name of the Redis connection the routes cache in (optional).
pub const CACHE_REDIS: &str = "redis";
/// The name of the upstream `/external-data` proxies (optional).
pub const EXTERNAL_API: &str = "external";
/// The prefix of every key the server caches.
pub const CACHE_PREFIX: &str = "sluice:";

/// The server's dependencies: an [`IoManager`] plus the server's own
/// settings. Nothing below the binary reads the environment: the binary
/// builds this and hands it over. Clones share it.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    /// Every named connection: reported in `/io-metrics`, closed on exit.
    pub(crate) io: IoManager,
    /// The routes' own handles, looked up once by name.
    pub(crate) db: Database,
    pub(crate) cache: Option<Cache>,
    pub(crate) api: Option<ApiClient>,
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

    /// State with every optional part, each built by the caller. `registry`
    /// is where the layers below record (for `/io-metrics`); `prometheus`
    /// renders `/metrics`.
    pub fn build(
        config: ServerConfig,
        db: Database,
        cache: Option<Cache>,
        api: Option<ApiClient>,
        registry: Registry,
        prometheus: Option<PrometheusHandle>,
    ) -> Self {
        let io = IoManager::with_registry(IoSettings::default(), registry);
        // A fresh manager holds no names yet: these cannot collide.
        let _ = io.add_database(db.clone());
        if let Some(cache) = &cache {
            let _ = io.add_redis(cache.store().clone());
        }
        if let Some(api) = &api {
            let _ = io.add_api(api.clone());
        }
        Self::assemble(config, io, db, cache, api, prometheus)
    }

    /// State over an [`IoManager`]: the routes use its database named
    /// [`PRIMARY_DATABASE`] (required), its Redis named [`CACHE_REDIS`]
    /// as their cache and its upstream named [`EXTERNAL_API`] (both
    /// optional); `/io-metrics` reports every connection it holds.
    pub fn with_io(
        config: ServerConfig,
        io: IoManager,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Self, IoError> {
        let db = io.db(PRIMARY_DATABASE)?;
        let cache = io
            .redis(CACHE_REDIS)
            .ok()
            .map(|kv| Cache::over(kv, CACHE_PREFIX));
        let api = io.api(EXTERNAL_API).ok();
        Ok(Self::assemble(config, io, db, cache, api, prometheus))
    }

    fn assemble(
        config: ServerConfig,
        io: IoManager,
        db: Database,
        cache: Option<Cache>,
        api: Option<ApiClient>,
        prometheus: Option<PrometheusHandle>,
    ) -> Self {
        let concurrency = Arc::new(Semaphore::new(
            config.max_concurrency.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Self {
            inner: Arc::new(Inner {
                config,
                io,
                db,
                cache,
                api,
                prometheus,
                concurrency,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// The I/O manager holding every connection.
    pub fn io(&self) -> &IoManager {
        &self.inner.io
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

    /// Closes every pool once the server has stopped serving (see
    /// [`IoManager::close_all`]: upstreams, then Redis, then databases,
    /// each after its borrowed connections come back). Idempotent.
    pub async fn close_all(&self) {
        self.inner.io.close_all().await;
    }
}
