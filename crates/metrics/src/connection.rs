//! [`ConnectionMetrics`]: the recording handle of one named connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Label};

use crate::histogram::{Sample, Summary, WindowedHistogram, slot_of};
use crate::names;
use crate::operation::{
    Backend, METHOD_LABELS, OTHER_METHOD, OpKind, Outcome, method_index, status_code_label,
};

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
    /// Bounded histograms per operation kind (since start and the last
    /// minute), allocated on first use.
    kinds: [OnceLock<WindowedHistogram>; OpKind::ALL.len()],
    /// For database backends: the success handle of each kind, registered
    /// on first use so that only series that happen are exported.
    db_histograms: [OnceLock<Histogram>; OpKind::ALL.len()],
    /// For HTTP backends: the handles of successes with status 200 to 204,
    /// by method and status, registered on first use: the common case
    /// costs no lock and no hashing.
    http_ok: [[OnceLock<Histogram>; HTTP_OK_STATUSES]; METHOD_LABELS.len()],
    /// For HTTP backends: the other handles by (method, status or 0, error
    /// type or ""), registered on first use. Every part comes from a fixed
    /// set, so this stays small.
    http_histograms: RwLock<HashMap<HttpKey, Histogram>>,
    /// For HTTP backends: the `server_address` and `server_port` labels.
    server: OnceLock<(String, String)>,
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
                http_ok: Default::default(),
                http_histograms: RwLock::new(HashMap::new()),
                server: OnceLock::new(),
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

    /// Sets the `server_address` and `server_port` labels of an HTTP
    /// connection's requests (the host and port of its base URL). The first
    /// call wins; before it, the connection's name stands for the address.
    pub fn set_server(&self, address: &str, port: u16) {
        let _ = self
            .inner
            .server
            .set((address.to_owned(), port.to_string()));
    }

    /// Records one finished operation.
    ///
    /// For database backends this feeds `db_client_operation_duration_seconds`
    /// (with `error_type` on failure); for HTTP it feeds
    /// `http_client_request_duration_seconds` with method `_OTHER` (prefer
    /// [`record_http`](Self::record_http), which knows the method and
    /// status).
    pub fn record(&self, kind: OpKind, outcome: Outcome, elapsed: Duration) {
        self.record_at(kind, outcome, elapsed, tokio::time::Instant::now());
    }

    /// Records one operation that started at `started` and ends now: one
    /// clock read both times it and places it in the last-minute window
    /// (what [`timed`](Self::timed) does).
    pub fn record_since(&self, kind: OpKind, outcome: Outcome, started: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        self.record_at(kind, outcome, now.saturating_duration_since(started), now);
    }

    fn record_at(
        &self,
        kind: OpKind,
        outcome: Outcome,
        elapsed: Duration,
        now: tokio::time::Instant,
    ) {
        self.record_snapshot(kind, outcome, elapsed, now);
        if !self.inner.backend.is_database() {
            let error = match outcome {
                Outcome::Ok => "",
                Outcome::Error(class) => class,
            };
            self.record_http_histogram(OTHER_METHOD, 0, error, elapsed);
            return;
        }
        match outcome {
            Outcome::Ok => self.inner.db_histograms[kind.index()]
                .get_or_init(|| {
                    metrics::histogram!(
                        names::DB_OPERATION_DURATION,
                        db_labels(self.inner.backend, &self.inner.name, kind, None)
                    )
                })
                .record(elapsed),
            // Failures are the slow path: looked up by labels each time,
            // which keeps the handle small and the class set open.
            Outcome::Error(class) => metrics::histogram!(
                names::DB_OPERATION_DURATION,
                db_labels(self.inner.backend, &self.inner.name, kind, Some(class))
            )
            .record(elapsed),
        }
    }

    /// Records one outbound HTTP request: `response` is the status, or the
    /// error class when no response arrived (connect error, timeout). A
    /// request counts as failed in the snapshot when it got no response or
    /// a 5xx; its `error_type` label is the class, or the status for 4xx
    /// and 5xx (as OpenTelemetry's client conventions have it).
    pub fn record_http(
        &self,
        kind: OpKind,
        method: &str,
        response: Result<u16, &'static str>,
        elapsed: Duration,
    ) {
        self.record_http_at(kind, method, response, elapsed, tokio::time::Instant::now());
    }

    /// [`record_http`](Self::record_http) for a request that started at
    /// `started` and ends now (one clock read for both).
    pub fn record_http_since(
        &self,
        kind: OpKind,
        method: &str,
        response: Result<u16, &'static str>,
        started: tokio::time::Instant,
    ) {
        let now = tokio::time::Instant::now();
        let elapsed = now.saturating_duration_since(started);
        self.record_http_at(kind, method, response, elapsed, now);
    }

    fn record_http_at(
        &self,
        kind: OpKind,
        method: &str,
        response: Result<u16, &'static str>,
        elapsed: Duration,
        now: tokio::time::Instant,
    ) {
        let (status, error) = match response {
            Ok(status) if status >= 400 => (status, status_code_label(status)),
            Ok(status) => (status, ""),
            Err(class) => (0, class),
        };
        let failed = !matches!(response, Ok(s) if s < 500);
        let outcome = if failed {
            Outcome::Error(if error.is_empty() { "error" } else { error })
        } else {
            Outcome::Ok
        };
        self.record_snapshot(kind, outcome, elapsed, now);
        self.record_http_histogram(method_index(method), status, error, elapsed);
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
            "db_system_name" => self.inner.backend.as_str(),
            "db_client_connection_pool_name" => self.inner.name.to_string(),
        )
    }

    fn record_snapshot(
        &self,
        kind: OpKind,
        outcome: Outcome,
        elapsed: Duration,
        now: tokio::time::Instant,
    ) {
        let figures = self.inner.kinds[kind.index()].get_or_init(WindowedHistogram::new);
        figures.record_sample(slot_of(now), Sample::of(elapsed), !outcome.is_ok());
    }

    /// Records in `http_client_request_duration_seconds`: through the
    /// fixed handle of a 200–204 success, else through the map (inside its
    /// read lock, so no handle is cloned on the way).
    fn record_http_histogram(
        &self,
        method: usize,
        status: u16,
        error: &'static str,
        elapsed: Duration,
    ) {
        if error.is_empty()
            && let Some(ok) = status
                .checked_sub(200)
                .and_then(|i| self.inner.http_ok[method].get(usize::from(i)))
        {
            ok.get_or_init(|| self.register_http((METHOD_LABELS[method], status, error)))
                .record(elapsed);
            return;
        }
        let key = (METHOD_LABELS[method], status, error);
        if let Some(handle) = read_map(&self.inner.http_histograms).get(&key) {
            handle.record(elapsed);
            return;
        }
        let mut map = match self.inner.http_histograms.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| self.register_http(key))
            .record(elapsed);
    }

    fn register_http(&self, (method, status, error): HttpKey) -> Histogram {
        let (address, port) = match self.inner.server.get() {
            Some((address, port)) => (address.clone(), port.clone()),
            None => (self.inner.name.to_string(), String::new()),
        };
        let mut labels = vec![
            Label::new("http_request_method", method),
            Label::new("server_address", address),
            Label::new("server_port", port),
        ];
        if status != 0 {
            labels.push(Label::new(
                "http_response_status_code",
                status_code_label(status),
            ));
        }
        if !error.is_empty() {
            labels.push(Label::new("error_type", error));
        }
        metrics::histogram!(names::HTTP_CLIENT_DURATION, labels)
    }

    pub(crate) fn snapshot_parts(&self) -> SnapshotParts<'_> {
        SnapshotParts {
            kinds: {
                let now = slot_of(tokio::time::Instant::now());
                OpKind::ALL
                    .iter()
                    .filter_map(|kind| {
                        self.inner.kinds[kind.index()]
                            .get()
                            .map(|f| (*kind, f.since_start(), f.recent(now)))
                    })
                    .collect()
            },
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            name: &self.inner.name,
        }
    }
}

/// What the snapshot module reads from one connection.
pub(crate) struct SnapshotParts<'a> {
    pub(crate) name: &'a str,
    /// Per kind: since start, and the last minute.
    pub(crate) kinds: Vec<(OpKind, Summary, Summary)>,
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

/// Statuses 200 to 204 have fixed handles.
const HTTP_OK_STATUSES: usize = 5;

/// (method, status or 0, error type or "").
type HttpKey = (&'static str, u16, &'static str);

fn db_labels(
    backend: Backend,
    name: &str,
    kind: OpKind,
    error: Option<&'static str>,
) -> Vec<Label> {
    let mut labels = vec![
        Label::new("db_system_name", backend.as_str()),
        Label::new("db_client_connection_pool_name", name.to_string()),
        Label::new("db_operation_name", kind.as_str()),
    ];
    if let Some(error) = error {
        labels.push(Label::new("error_type", error));
    }
    labels
}
