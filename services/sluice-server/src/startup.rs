//! Opening what the settings describe: the I/O manager (every database,
//! Redis and upstream), the primary database migrated.

use anyhow::Result;
use sluice_http_server::{AppState, PRIMARY_DATABASE};
use sluice_io::{IoError, IoManager};
use sluice_metrics::Registry;
use sluice_metrics::prometheus::PrometheusHandle;

use crate::env::Settings;

/// Opens every dependency and builds the server's state. A dependency
/// that cannot be reached after its connect retries stops start-up with
/// one line naming the variable that configured it (never a password).
pub(crate) async fn state(
    settings: &Settings,
    prometheus: Option<PrometheusHandle>,
) -> Result<AppState> {
    let io = IoManager::open_with_registry(&settings.io, Registry::global().clone())
        .await
        .map_err(|e| match e {
            IoError::Open { name, source } => {
                let (variable, what) = settings.variable_of(&name);
                anyhow::Error::new(source).context(format!("{variable}: cannot open {what}"))
            }
            other => anyhow::Error::new(other).context("cannot configure the I/O manager"),
        })?;
    let migrated = async {
        io.db(PRIMARY_DATABASE)?.migrate().await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = migrated {
        io.close_all().await;
        return Err(e.context("running database migrations"));
    }
    // `sluice_dependency_up` for every database and Redis connection,
    // what the shipped alerts watch (deploy/prometheus/rules.yml); the
    // task ends with `close_all`.
    io.spawn_store_probes(PROBE_INTERVAL, PROBE_TIMEOUT);
    Ok(AppState::with_io(settings.server.clone(), io, prometheus)?)
}

/// How often the databases and Redis are pinged in the background.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long each ping may take before the dependency counts as down.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
