//! [`PrometheusRecorder`]: the exporter's recorder, with Sluice's own
//! histograms counted into fixed buckets.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus as exporter;

use super::buckets::{BucketHistogram, render_family};
use crate::names::{self, DB_BUCKETS, HTTP_BUCKETS, MetricType};

/// A `metrics` recorder that exports in the Prometheus text format.
///
/// Counters, gauges and any histogram that is not one of Sluice's go to
/// `metrics-exporter-prometheus`. The histograms of [`names::METRICS`] are
/// counted straight into OpenTelemetry's recommended buckets (5 ms to 10 s
/// for `http_*`, 1 ms to 10 s for the rest): recording one is a bucket
/// search and two relaxed atomic adds, where the exporter timestamps and
/// queues every sample until its upkeep drains them.
#[derive(Debug)]
pub struct PrometheusRecorder {
    exporter: exporter::PrometheusRecorder,
    own: Arc<OwnHistograms>,
}

/// Renders what a [`PrometheusRecorder`] holds; cheap to clone.
#[derive(Debug, Clone)]
pub struct PrometheusHandle {
    exporter: exporter::PrometheusHandle,
    own: Arc<OwnHistograms>,
}

/// Sluice's histogram series, by key, created on first registration.
#[derive(Debug, Default)]
struct OwnHistograms {
    series: RwLock<HashMap<Key, Arc<BucketHistogram>>>,
}

impl PrometheusRecorder {
    pub(crate) fn new(exporter: exporter::PrometheusRecorder) -> Self {
        Self {
            exporter,
            own: Arc::default(),
        }
    }

    /// The handle that renders this recorder's metrics.
    pub fn handle(&self) -> PrometheusHandle {
        PrometheusHandle {
            exporter: self.exporter.handle(),
            own: Arc::clone(&self.own),
        }
    }
}

impl PrometheusHandle {
    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = self.exporter.render();
        self.own.render_into(&mut text);
        text
    }

    /// Drains the exporter's queued histogram samples (of histograms that
    /// are not Sluice's) into buckets and publishes new descriptions.
    /// [`install`](super::install) runs it every
    /// [`UPKEEP_INTERVAL`](super::UPKEEP_INTERVAL).
    pub fn run_upkeep(&self) {
        self.exporter.run_upkeep();
    }
}

/// The bucket bounds of a Sluice histogram, or `None` for another name.
fn own_buckets(name: &str) -> Option<&'static [f64]> {
    let spec = names::spec(name).filter(|m| m.kind == MetricType::Histogram)?;
    Some(if spec.name.starts_with("http_") {
        HTTP_BUCKETS
    } else {
        DB_BUCKETS
    })
}

impl OwnHistograms {
    fn get_or_create(&self, key: &Key, bounds: &'static [f64]) -> Arc<BucketHistogram> {
        let read = self.series.read().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = read.get(key) {
            return Arc::clone(h);
        }
        drop(read);
        let mut write = self.series.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            write
                .entry(key.clone())
                .or_insert_with(|| Arc::new(BucketHistogram::new(bounds))),
        )
    }

    /// Appends every family, by name, its series ordered by labels, so
    /// that two scrapes list them alike.
    fn render_into(&self, out: &mut String) {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<(&Key, &BucketHistogram)> =
            series.iter().map(|(k, h)| (k, h.as_ref())).collect();
        sorted.sort_by(|(a, _), (b, _)| {
            a.name()
                .cmp(b.name())
                .then_with(|| a.labels().cmp(b.labels()))
        });
        for family in sorted.chunk_by(|(a, _), (b, _)| a.name() == b.name()) {
            let name = family[0].0.name();
            let help = names::spec(name).map_or("", |m| m.help);
            render_family(out, name, help, family);
        }
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.exporter.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.exporter.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        // Sluice's own histograms take their help text from the table.
        if own_buckets(key.as_str()).is_none() {
            self.exporter.describe_histogram(key, unit, description);
        }
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.exporter.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.exporter.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match own_buckets(key.name()) {
            Some(bounds) => Histogram::from_arc(self.own.get_or_create(key, bounds)),
            None => self.exporter.register_histogram(key, metadata),
        }
    }
}
