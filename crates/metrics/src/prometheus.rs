//! Prometheus exposition: installing the exporter, for binaries only.
//!
//! Libraries never call this; they only emit through the `metrics` facade.
//! The binary installs the recorder once, before opening connections, and
//! serves [`PrometheusHandle::render`] on `/metrics`.

use std::time::Duration;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::names::{DB_BUCKETS, HTTP_BUCKETS, METRICS, MetricType};

/// How often the exporter's upkeep runs. The upkeep drains histogram
/// samples into buckets; without it the exporter's memory grows with
/// traffic until the next scrape.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A global `metrics` recorder was already installed in this process.
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
    /// The exporter rejected the bucket configuration.
    #[error("invalid histogram buckets")]
    Buckets(#[source] metrics_exporter_prometheus::BuildError),
}

/// Builds a Prometheus recorder with Sluice's histogram buckets, without
/// installing it (for tests: `metrics::with_local_recorder`).
pub fn build_recorder() -> Result<PrometheusRecorder, InstallError> {
    Ok(builder()?.build_recorder())
}

/// Installs the Prometheus recorder as the process's global `metrics`
/// recorder and starts its upkeep task on the current tokio runtime.
///
/// Call once, from the binary, before any connection is opened.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    let recorder = builder()?.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
    crate::names::describe();
    // The exporter publishes descriptions (HELP lines) at upkeep only: do
    // one now so that the first scrape already has them.
    handle.run_upkeep();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Every histogram gets the buckets OpenTelemetry recommends for it: the
/// HTTP ones for `http_*`, the database ones for the rest.
fn builder() -> Result<PrometheusBuilder, InstallError> {
    let mut builder = PrometheusBuilder::new();
    for m in METRICS.iter().filter(|m| m.kind == MetricType::Histogram) {
        let buckets = if m.name.starts_with("http_") {
            HTTP_BUCKETS
        } else {
            DB_BUCKETS
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), buckets)
            .map_err(InstallError::Buckets)?;
    }
    Ok(builder)
}
