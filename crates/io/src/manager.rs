//! [`IoManager`]: one handle for a service's named databases, Redis
//! connections and upstream APIs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sluice_api_client::{
    ApiClient, ApiError, ApiPath, ApiRequest, ApiResponse, Method, UpstreamConfig,
};
use sluice_db::{Database, KeyValue, Params, Record, Sql, Transaction, TxFuture};
use sluice_metrics::{Backend, Registry};
use sluice_pool::{ConnectionConfig, Kind, RedisPool, SqlPool};
use tokio::sync::Semaphore;

use crate::config::{IoConfig, IoSettings};
use crate::error::IoError;
use crate::report::{
    ApiMetrics, Check, DatabaseMetrics, Health, IoMetrics, Operations, RedisMetrics,
};

/// The design's `AsyncIOManager`: named databases, Redis connections and
/// upstream APIs, called by name, reported together and closed together.
/// Clones share everything.
///
/// Every upstream API of one manager shares one in-flight limiter of
/// `IO_MAX_CONCURRENT_REQUESTS` permits, so that concurrent batches to
/// several upstreams cannot multiply the load.
#[derive(Debug, Clone)]
pub struct IoManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: IoSettings,
    registry: Registry,
    limiter: Arc<Semaphore>,
    databases: RwLock<BTreeMap<String, Database>>,
    redis: RwLock<BTreeMap<String, KeyValue>>,
    apis: RwLock<BTreeMap<String, ApiClient>>,
    closed: AtomicBool,
}

/// Reads a map under its lock; a poisoned lock (a panic while inserting)
/// still holds a consistent map, since inserts are single operations.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl IoManager {
    /// An empty manager recording into the global metrics registry.
    pub fn new(settings: IoSettings) -> Self {
        Self::with_registry(settings, Registry::global().clone())
    }

    /// An empty manager recording into `registry`.
    pub fn with_registry(settings: IoSettings, registry: Registry) -> Self {
        let permits = settings
            .max_concurrent_requests
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                limiter: Arc::new(Semaphore::new(permits)),
                settings,
                registry,
                databases: RwLock::default(),
                redis: RwLock::default(),
                apis: RwLock::default(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Opens everything `config` describes, recording into the global
    /// registry. If one connection cannot be opened, those already open
    /// are closed and the error names the one that failed.
    pub async fn open(config: &IoConfig) -> Result<Self, IoError> {
        Self::open_with_registry(config, Registry::global().clone()).await
    }

    /// As [`IoManager::open`], recording into `registry`.
    pub async fn open_with_registry(
        config: &IoConfig,
        registry: Registry,
    ) -> Result<Self, IoError> {
        let io = Self::with_registry(config.settings.clone(), registry);
        let opened = async {
            for db in &config.databases {
                io.initialize_database(db).await?;
            }
            for redis in &config.redis {
                io.initialize_redis(redis).await?;
            }
            for api in &config.apis {
                io.initialize_api(api.clone())?;
            }
            Ok::<_, IoError>(())
        }
        .await;
        match opened {
            Ok(()) => Ok(io),
            Err(e) => {
                io.close_all().await;
                Err(e)
            }
        }
    }

    /// The manager's settings.
    pub fn settings(&self) -> &IoSettings {
        &self.inner.settings
    }

    /// The registry every connection records into.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The in-flight limiter shared by every upstream API.
    pub fn limiter(&self) -> &Arc<Semaphore> {
        &self.inner.limiter
    }

    fn taken(kind: &'static str, name: &str) -> IoError {
        IoError::Duplicate {
            kind,
            name: name.to_owned(),
        }
    }

    /// Opens the SQL database `config` describes (the design's
    /// `initialize_database`) and registers it under `config.name`.
    pub async fn initialize_database(
        &self,
        config: &ConnectionConfig,
    ) -> Result<Database, IoError> {
        if read(&self.inner.databases).contains_key(&config.name) {
            return Err(Self::taken("database", &config.name));
        }
        let pool = SqlPool::open(config)
            .await
            .map_err(|source| IoError::Open {
                name: config.name.clone(),
                source,
            })?;
        let mut db = Database::with_registry(pool, &self.inner.registry);
        if let Some(url) = &config.read_replica_url {
            // The replica's pool: the same settings, its own name (in
            // metrics and errors). Not registered: its outage is not the
            // database's, reads then go to the primary.
            let mut replica = config.clone();
            replica.name = format!("{}_replica", config.name);
            replica.url = Some(url.clone());
            replica.read_replica_url = None;
            let pool = SqlPool::open(&replica)
                .await
                .map_err(|source| IoError::Open {
                    name: replica.name.clone(),
                    source,
                })?;
            db = db.with_replica(Database::with_registry(pool, &self.inner.registry));
        }
        self.add_database(db)
    }

    /// Registers a database that is already open, under its pool's name.
    pub fn add_database(&self, db: Database) -> Result<Database, IoError> {
        let mut map = write(&self.inner.databases);
        let name = db.pool().name().to_owned();
        if map.contains_key(&name) {
            return Err(Self::taken("database", &name));
        }
        map.insert(name, db.clone());
        Ok(db)
    }

    /// Opens the Redis connection `config` describes and registers it
    /// under `config.name`, as a [`KeyValue`] store.
    pub async fn initialize_redis(&self, config: &ConnectionConfig) -> Result<KeyValue, IoError> {
        if read(&self.inner.redis).contains_key(&config.name) {
            return Err(Self::taken("redis", &config.name));
        }
        let pool = RedisPool::open(config)
            .await
            .map_err(|source| IoError::Open {
                name: config.name.clone(),
                source,
            })?;
        self.add_redis(KeyValue::with_registry(pool, &self.inner.registry))
    }

    /// Registers a Redis store that is already open, under its name.
    pub fn add_redis(&self, kv: KeyValue) -> Result<KeyValue, IoError> {
        let mut map = write(&self.inner.redis);
        let name = kv.name().to_owned();
        if map.contains_key(&name) {
            return Err(Self::taken("redis", &name));
        }
        map.insert(name, kv.clone());
        Ok(kv)
    }

    /// Builds the client of an upstream API (the design's
    /// `initialize_api`), sharing the manager's in-flight limiter, and
    /// registers it under `config.name`. Connections open on first use.
    pub fn initialize_api(&self, config: UpstreamConfig) -> Result<ApiClient, IoError> {
        let mut map = write(&self.inner.apis);
        if map.contains_key(&config.name) {
            return Err(Self::taken("api", &config.name));
        }
        let name = config.name.clone();
        let client =
            ApiClient::with_limiter(config, self.inner.limiter.clone(), &self.inner.registry)
                .map_err(|e| crate::ConfigError::new(e.field, e.reason))?;
        map.insert(name, client.clone());
        Ok(client)
    }

    /// Registers a client built elsewhere. It keeps the in-flight limiter
    /// it was built with (use [`initialize_api`](IoManager::initialize_api)
    /// to share the manager's).
    pub fn add_api(&self, client: ApiClient) -> Result<ApiClient, IoError> {
        let mut map = write(&self.inner.apis);
        let name = client.name().to_owned();
        if map.contains_key(&name) {
            return Err(Self::taken("api", &name));
        }
        map.insert(name, client.clone());
        Ok(client)
    }

    /// The database named `name`.
    pub fn db(&self, name: &str) -> Result<Database, IoError> {
        read(&self.inner.databases)
            .get(name)
            .cloned()
            .ok_or_else(|| IoError::UnknownDatabase(name.to_owned()))
    }

    /// The Redis store named `name`.
    pub fn redis(&self, name: &str) -> Result<KeyValue, IoError> {
        read(&self.inner.redis)
            .get(name)
            .cloned()
            .ok_or_else(|| IoError::UnknownRedis(name.to_owned()))
    }

    /// The upstream API named `name`.
    pub fn api(&self, name: &str) -> Result<ApiClient, IoError> {
        read(&self.inner.apis)
            .get(name)
            .cloned()
            .ok_or_else(|| IoError::UnknownApi(name.to_owned()))
    }

    /// Every database, by name.
    pub fn databases(&self) -> Vec<Database> {
        read(&self.inner.databases).values().cloned().collect()
    }

    /// Every Redis store, by name.
    pub fn redis_stores(&self) -> Vec<KeyValue> {
        read(&self.inner.redis).values().cloned().collect()
    }

    /// Every upstream API, by name.
    pub fn apis(&self) -> Vec<ApiClient> {
        read(&self.inner.apis).values().cloned().collect()
    }

    /// Runs a query on database `db` (the design's `execute_query`); rows
    /// decode into `T` (a `FromRow` struct or a tuple).
    pub async fn execute_query<T: Record>(
        &self,
        db: &str,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Vec<T>, IoError> {
        Ok(self.db(db)?.query(sql, params).await?)
    }

    /// Runs `work` in a transaction on database `db` (the design's
    /// `execute_transaction`): committed when it returns `Ok`, rolled back
    /// when it fails — nothing partial is left.
    pub async fn execute_transaction<T, F>(&self, db: &str, work: F) -> Result<T, IoError>
    where
        T: Send,
        F: for<'t, 'c> FnMut(&'t mut Transaction<'c>) -> TxFuture<'t, T> + Send,
    {
        Ok(self.db(db)?.transaction(work).await?)
    }

    /// Sends one request to upstream `api` (the design's
    /// `make_api_request`), with its retries, breaker and deadline.
    pub async fn make_api_request(
        &self,
        api: &str,
        request: ApiRequest,
    ) -> Result<ApiResponse, IoError> {
        Ok(self.api(api)?.request(request).await?)
    }

    /// Sends many requests to upstream `api` (the design's
    /// `make_batch_api_requests`): concurrently within the shared
    /// in-flight limit, one deadline for all, one result per request in
    /// input order. Fails as a whole only when the name is unknown or the
    /// batch is larger than `IO_MAX_BATCH_SIZE`.
    pub async fn make_batch_api_requests(
        &self,
        api: &str,
        requests: Vec<ApiRequest>,
    ) -> Result<Vec<Result<ApiResponse, ApiError>>, IoError> {
        let client = self.api(api)?;
        let max = self.inner.settings.max_batch_size;
        if requests.len() > max {
            return Err(IoError::BatchTooLarge {
                len: requests.len(),
                max,
            });
        }
        Ok(client.batch(requests, None).await)
    }

    /// Figures of database `name` (the design's `get_database_metrics`).
    pub fn database_metrics(&self, name: &str) -> Result<DatabaseMetrics, IoError> {
        let db = self.db(name)?;
        Ok(self.database_entry(&db, &self.inner.registry.snapshot()))
    }

    /// Figures of upstream `name` (the design's `get_api_metrics`).
    pub fn api_metrics(&self, name: &str) -> Result<ApiMetrics, IoError> {
        let api = self.api(name)?;
        Ok(self.api_entry(&api, &self.inner.registry.snapshot()))
    }

    /// Figures of Redis connection `name`.
    pub fn redis_metrics(&self, name: &str) -> Result<RedisMetrics, IoError> {
        let kv = self.redis(name)?;
        Ok(self.redis_entry(&kv, &self.inner.registry.snapshot()))
    }

    fn operations(snapshot: &sluice_metrics::Snapshot, backend: Backend, name: &str) -> Operations {
        snapshot
            .connection(backend, name)
            .map(|c| c.operations.clone())
            .unwrap_or_default()
    }

    fn database_entry(
        &self,
        db: &Database,
        snapshot: &sluice_metrics::Snapshot,
    ) -> DatabaseMetrics {
        let pool = db.pool();
        let backend = pool.kind().metrics_backend();
        DatabaseMetrics {
            backend: backend.as_str(),
            pool: pool.stats(),
            operations: Self::operations(snapshot, backend, pool.name()),
        }
    }

    fn redis_entry(&self, kv: &KeyValue, snapshot: &sluice_metrics::Snapshot) -> RedisMetrics {
        let figures = snapshot.connection(Backend::Redis, kv.name());
        RedisMetrics {
            backend: Kind::Redis.as_str(),
            pool: kv.pool().stats(),
            operations: Self::operations(snapshot, Backend::Redis, kv.name()),
            hits: figures.map_or(0, |f| f.hits),
            misses: figures.map_or(0, |f| f.misses),
        }
    }

    fn api_entry(&self, api: &ApiClient, snapshot: &sluice_metrics::Snapshot) -> ApiMetrics {
        ApiMetrics {
            base_url: sluice_pool::redact_url(api.config().base_url.as_str()),
            circuit: api.circuit().as_str(),
            pool: api.pool_stats(),
            operations: Self::operations(snapshot, Backend::Http, api.name()),
            coalesced_in_flight: api.coalesced_in_flight(),
        }
    }

    /// Every named connection's pool and figures: the `/io-metrics`
    /// document.
    pub fn metrics(&self) -> IoMetrics {
        let snapshot = self.inner.registry.snapshot();
        IoMetrics {
            success: true,
            database: read(&self.inner.databases)
                .iter()
                .map(|(name, db)| (name.clone(), self.database_entry(db, &snapshot)))
                .collect(),
            cache: read(&self.inner.redis)
                .iter()
                .map(|(name, kv)| (name.clone(), self.redis_entry(kv, &snapshot)))
                .collect(),
            api: read(&self.inner.apis)
                .iter()
                .map(|(name, api)| (name.clone(), self.api_entry(api, &snapshot)))
                .collect(),
        }
    }

    /// Pings every dependency at once: databases (`SELECT 1`), Redis
    /// (`PING`) and upstream APIs (a `HEAD` of the base URL: any answer
    /// below 500 counts as reachable). Each check is bounded by `timeout`.
    pub async fn health(&self, timeout: Duration) -> Health {
        async fn timed(
            kind: &'static str,
            name: String,
            timeout: Duration,
            check: impl Future<Output = Result<(), String>>,
        ) -> Check {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, check).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            Check {
                kind,
                name,
                ok: result.is_ok(),
                latency: started.elapsed(),
                error: result.err(),
            }
        }
        let mut checks = Vec::new();
        let dbs = self.databases().into_iter().map(|db| {
            timed(
                "database",
                db.pool().name().to_owned(),
                timeout,
                async move { db.ping().await.map_err(|e| e.to_string()) },
            )
        });
        let redis = self.redis_stores().into_iter().map(|kv| {
            timed("redis", kv.name().to_owned(), timeout, async move {
                kv.pool().ping().await.map_err(|e| e.to_string())
            })
        });
        let apis = self.apis().into_iter().map(|api| {
            timed("api", api.name().to_owned(), timeout, async move {
                let head = ApiRequest::new(Method::HEAD, ApiPath::new()).timeout(timeout);
                match api.request(head).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.status().is_some_and(|s| s < 500) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
        });
        // Run every check at once: one slow dependency does not delay the
        // others' results.
        let (dbs, redis, apis) = tokio::join!(
            join_all(dbs.collect()),
            join_all(redis.collect()),
            join_all(apis.collect())
        );
        checks.extend(dbs);
        checks.extend(redis);
        checks.extend(apis);
        for check in &checks {
            publish(
                self.system_of(check.kind, &check.name),
                &check.name,
                check.ok,
            );
        }
        Health {
            healthy: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// Pings every database and Redis connection every `interval`, each
    /// within `timeout`, and publishes the results as
    /// `sluice_dependency_up` (1 answered, 0 not), so that an outage shows
    /// on `/metrics`, and can alert, without any traffic. Upstream APIs are
    /// not probed (a third party may not welcome the calls); their circuit
    /// state shows their outages. The task ends when the manager is closed.
    pub fn spawn_store_probes(
        &self,
        interval: Duration,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if manager.inner.closed.load(Ordering::Acquire) {
                    return;
                }
                let dbs = manager.databases().into_iter().map(|db| async move {
                    let ok = matches!(tokio::time::timeout(timeout, db.ping()).await, Ok(Ok(())));
                    publish(backend_of(db.kind()), db.pool().name(), ok);
                });
                let stores = manager.redis_stores().into_iter().map(|kv| async move {
                    let ok = matches!(
                        tokio::time::timeout(timeout, kv.pool().ping()).await,
                        Ok(Ok(()))
                    );
                    publish(Backend::Redis, kv.name(), ok);
                });
                tokio::join!(join_all(dbs.collect()), join_all(stores.collect()));
            }
        })
    }

    /// The metrics system of a health check's dependency.
    fn system_of(&self, kind: &str, name: &str) -> Backend {
        match kind {
            "database" => self
                .db(name)
                .map_or(Backend::Postgresql, |db| backend_of(db.kind())),
            "redis" => Backend::Redis,
            _ => Backend::Http,
        }
    }

    /// Closes every connection: the upstream APIs first (each waits for
    /// its requests in flight), then Redis, then the databases last (each
    /// waits for its borrowed connections, so work still finishing keeps
    /// its system of record). Idempotent: a second call returns at once.
    pub async fn close_all(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for api in self.apis() {
            api.close().await;
        }
        for kv in self.redis_stores() {
            kv.pool().close().await;
        }
        for db in self.databases() {
            db.close().await;
        }
        tracing::info!("io manager closed");
    }

    /// Whether [`close_all`](IoManager::close_all) has run.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

/// Runs futures concurrently on this task, results in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    use futures_util::StreamExt;
    futures_util::stream::iter(futures)
        .buffered(usize::MAX)
        .collect()
        .await
}

fn backend_of(kind: sluice_pool::Kind) -> Backend {
    match kind {
        sluice_pool::Kind::Sqlite => Backend::Sqlite,
        _ => Backend::Postgresql,
    }
}

fn publish(system: Backend, name: &str, up: bool) {
    sluice_metrics::dependency_up(system, name, up);
}
