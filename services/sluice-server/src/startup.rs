//! Opening what the settings describe: database (migrated), cache, upstream.

use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_api_client::ApiClient;
use sluice_db::{Cache, Database};
use sluice_http_server::AppState;
use sluice_metrics::Registry;
use sluice_metrics::prometheus::PrometheusHandle;
use sluice_pool::RedisPool;
use tokio::sync::Semaphore;

use crate::env::Settings;

/// Opens every dependency and builds the server's state. A dependency
/// that cannot be reached after its connect retries stops start-up with
/// one line naming the variable that configured it (never a password).
pub(crate) async fn state(
    settings: &Settings,
    prometheus: Option<PrometheusHandle>,
) -> Result<AppState> {
    let registry = Registry::global().clone();
    let db = Database::open(&settings.database)
        .await
        .with_context(|| format!("{}: cannot open the database", settings.database_variable))?;
    db.migrate().await.context("running database migrations")?;
    let cache = match &settings.redis {
        Some(config) => {
            let pool = RedisPool::open(config)
                .await
                .with_context(|| format!("{}: cannot open Redis", settings.redis_variable))?;
            Some(Cache::new(pool, "sluice:"))
        }
        None => None,
    };
    let api = match &settings.upstream {
        Some(config) => {
            // The upstream's deadline ends before the request's, so a slow
            // upstream is answered 504 rather than cut off by the server.
            let mut config = config.clone();
            config.deadline = config
                .deadline
                .min(settings.server.request_timeout.mul_f64(0.9));
            config.timeout = config.timeout.min(config.deadline);
            let limiter = Arc::new(Semaphore::new(settings.max_in_flight));
            let client = ApiClient::with_limiter(config, limiter, &registry)
                .context("API_EXTERNAL_BASE_URL: cannot configure the upstream")?;
            Some(client)
        }
        None => None,
    };
    let limiter = Arc::new(Semaphore::new(settings.max_in_flight));
    let mut others = Vec::new();
    for config in &settings.other_upstreams {
        let client = ApiClient::with_limiter(config.clone(), limiter.clone(), &registry)
            .with_context(|| {
                format!(
                    "API_{}_BASE_URL: cannot configure the upstream",
                    config.name.to_ascii_uppercase()
                )
            })?;
        others.push(client);
    }
    let state = AppState::build(
        settings.server.clone(),
        db,
        cache,
        api,
        registry,
        prometheus,
    );
    Ok(state.with_other_upstreams(others))
}
