//! [`ConnectionMetrics`]: the recording handle of one named connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Label};

use crate::histogram::LatencyHistogram;
use crate::names;
use crate::operation::{Backend, OpKind, Outcome, method_label, status_class};

/// Records the operations of one named connection (a pool, a cache, an
/// upstream).
///
/// Obtain one from [`Registry::connection`](crate::Registry::connection);
/// clones share the same figures. Recording updates the `metrics` facade
/// (and so Prometheus, when the binary installed it) and the bounded
/// in-process histogram that [`Registry::snapshot`](crate::Registry::snapshot)
/// reads: one call, no per-event storage.
///
/// The Prometheus handles are registered with the recorder installed when the
/// handle is created, so install the recorder before opening connections.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    name: Arc<str>,
    /// One bounded histogram per operation kind, allocated on first use.
    kinds: [OnceLock<LatencyHistogram>; OpKind::ALL.len()],
    /// For database backends: `[kind][ok, error]` handles, registered on
    /// first use so that only series that happen are exported.
    db_histograms: [[OnceLock<Histogram>; 2]; OpKind::ALL.len()],
    /// For HTTP backends: handles by (method, status class), registered on
    /// first use. Both parts come from fixed sets, so this stays small.
    http_histograms: RwLock<HashMap<(&'static str, &'static str), Histogram>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Registered on first use, so connections that are not caches do not
    /// export hit/miss series.
    hit_counter: OnceLock<Counter>,
    miss_counter: OnceLock<Counter>,
}

impl ConnectionMetrics {
    pub(crate) fn new(backend: Backend, name: &str) -> Self {
        let name: Arc<str> = Arc::from(name);
        Self {
            inner: Arc::new(Inner {
                backend,
                kinds: Default::default(),
                db_histograms: Default::default(),
                http_histograms: RwLock::new(HashMap::new()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                hit_counter: OnceLock::new(),
                miss_counter: OnceLock::new(),
                name,
            }),
        }
    }

    /// The backend this connection talks to.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The connection's configured name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Records one finished operation.
    ///
    /// For database backends this feeds `db_client_operation_duration_seconds`;
    /// for HTTP it feeds `http_client_request_duration_seconds` with method
    /// `_OTHER` (prefer [`record_http`](Self::record_http), which knows the
    /// method and status).
    pub fn record(&self, kind: OpKind, outcome: Outcome, elapsed: Duration) {
        self.record_snapshot(kind, outcome, elapsed);
        if self.inner.backend.is_database() {
            let failed = !outcome.is_ok();
            self.inner.db_histograms[kind.index()][usize::from(failed)]
                .get_or_init(|| {
                    metrics::histogram!(
                        names::DB_OPERATION_DURATION,
                        db_labels(self.inner.backend, &self.inner.name, kind, outcome.as_str())
                    )
                })
                .record(elapsed);
        } else {
            let class = if outcome.is_ok() { "2xx" } else { "none" };
            self.http_histogram("_OTHER", class).record(elapsed);
        }
        if let Outcome::Error(class) = outcome {
            self.count_error(kind, class);
        }
    }

    /// Records one outbound HTTP request: `status` is `None` when no
    /// response arrived (connect error, timeout). A request counts as failed
    /// in the snapshot when it got no response or a 5xx.
    pub fn record_http(&self, kind: OpKind, method: &str, status: Option<u16>, elapsed: Duration) {
        let failed = !matches!(status, Some(s) if s < 500);
        let outcome = if failed {
            Outcome::Error(status_class(status))
        } else {
            Outcome::Ok
        };
        self.record_snapshot(kind, outcome, elapsed);
        self.http_histogram(method_label(method), status_class(status))
            .record(elapsed);
        if let Outcome::Error(class) = outcome {
            self.count_error(kind, class);
        }
    }

    /// Counts a cache hit.
    pub fn record_hit(&self) {
        self.inner.hits.fetch_add(1, Ordering::Relaxed);
        self.inner
            .hit_counter
            .get_or_init(|| self.cache_counter(names::CACHE_HITS))
            .increment(1);
    }

    /// Counts a cache miss.
    pub fn record_miss(&self) {
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        self.inner
            .miss_counter
            .get_or_init(|| self.cache_counter(names::CACHE_MISSES))
            .increment(1);
    }

    fn cache_counter(&self, name: &'static str) -> Counter {
        metrics::counter!(
            name,
            "db_system" => self.inner.backend.as_str(),
            "connection" => self.inner.name.to_string(),
        )
    }

    fn record_snapshot(&self, kind: OpKind, outcome: Outcome, elapsed: Duration) {
        self.inner.kinds[kind.index()]
            .get_or_init(LatencyHistogram::new)
            .record(elapsed, !outcome.is_ok());
    }

    /// Errors are the slow path: the counter is looked up by labels each
    /// time, which keeps the handle small and the class set open.
    fn count_error(&self, kind: OpKind, class: &'static str) {
        let inner = &self.inner;
        if inner.backend.is_database() {
            metrics::counter!(
                names::DB_OPERATION_ERRORS,
                "db_system" => inner.backend.as_str(),
                "connection" => inner.name.to_string(),
                "operation" => kind.as_str(),
                "error_class" => class,
            )
            .increment(1);
        } else {
            metrics::counter!(
                names::HTTP_CLIENT_ERRORS,
                "server" => inner.name.to_string(),
                "operation" => kind.as_str(),
                "error_class" => class,
            )
            .increment(1);
        }
    }

    fn http_histogram(&self, method: &'static str, class: &'static str) -> Histogram {
        let key = (method, class);
        if let Some(handle) = read_map(&self.inner.http_histograms).get(&key) {
            return handle.clone();
        }
        let mut map = match self.inner.http_histograms.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| {
                metrics::histogram!(
                    names::HTTP_CLIENT_DURATION,
                    "server" => self.inner.name.to_string(),
                    "method" => method,
                    "status_class" => class,
                )
            })
            .clone()
    }

    pub(crate) fn snapshot_parts(&self) -> SnapshotParts<'_> {
        SnapshotParts {
            kinds: OpKind::ALL
                .iter()
                .filter_map(|kind| {
                    self.inner.kinds[kind.index()]
                        .get()
                        .map(|h| (*kind, h.summary()))
                })
                .collect(),
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            name: &self.inner.name,
        }
    }
}

/// What the snapshot module reads from one connection.
pub(crate) struct SnapshotParts<'a> {
    pub(crate) name: &'a str,
    pub(crate) kinds: Vec<(OpKind, crate::histogram::Summary)>,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

fn read_map<K, V>(lock: &RwLock<HashMap<K, V>>) -> std::sync::RwLockReadGuard<'_, HashMap<K, V>> {
    // A panic while holding the lock cannot leave the map half-written
    // (insertion is one call), so a poisoned lock is still safe to read.
    match lock.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn db_labels(backend: Backend, name: &str, kind: OpKind, outcome: &'static str) -> Vec<Label> {
    vec![
        Label::new("db_system", backend.as_str()),
        Label::new("connection", name.to_string()),
        Label::new("operation", kind.as_str()),
        Label::new("outcome", outcome),
    ]
}
