//! Prometheus exposition: installing the recorder, for binaries only.
//!
//! Libraries never call this; they only emit through the `metrics` facade.
//! The binary installs the recorder once, before opening connections, and
//! serves [`PrometheusHandle::render`] on `/metrics`.

mod buckets;
mod recorder;

use std::time::Duration;

pub use recorder::{PrometheusHandle, PrometheusRecorder};

/// How often the exporter's upkeep runs. The upkeep drains the samples of
/// histograms that are not Sluice's into buckets (Sluice's own count into
/// theirs as they are recorded); without it the exporter's memory would
/// grow with such traffic until the next scrape.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A global `metrics` recorder was already installed in this process.
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
}

/// Builds the Prometheus recorder without installing it (for tests:
/// `metrics::with_local_recorder`).
pub fn build_recorder() -> PrometheusRecorder {
    PrometheusRecorder::new(metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder())
}

/// Installs the Prometheus recorder as the process's global `metrics`
/// recorder and starts its upkeep task on the current tokio runtime.
///
/// Call once, from the binary, before any connection is opened.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    let recorder = build_recorder();
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
