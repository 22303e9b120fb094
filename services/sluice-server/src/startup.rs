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
/// one line naming it (never a password).
pub(crate) async fn state(
    settings: &Settings,
    prometheus: Option<PrometheusHandle>,
) -> Result<AppState> {
    let registry = Registry::global().clone();
    let db = Database::open(&settings.database)
        .await
        .context("opening the database")?;
    db.migrate().await.context("running database migrations")?;
    let cache = match &settings.redis {
        Some(config) => Some(Cache::new(
            RedisPool::open(config).await.context("opening Redis")?,
            "sluice:",
        )),
        None => None,
    };
    let api = match &settings.upstream {
        Some(config) => {
            let limiter = Arc::new(Semaphore::new(settings.max_in_flight));
            Some(
                ApiClient::with_limiter(config.clone(), limiter, &registry)
                    .context("configuring the upstream")?,
            )
        }
        None => None,
    };
    Ok(AppState::build(
        settings.server.clone(),
        db,
        cache,
        api,
        registry,
        prometheus,
    ))
}
