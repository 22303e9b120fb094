//! Timing an async operation and recording it: the design's
//! `async_io_timed` decorator as a method.

use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::ConnectionMetrics;
use crate::operation::{ErrorClass, OpKind, Outcome};

impl ConnectionMetrics {
    /// Runs `operation`, records its duration and outcome, and returns its
    /// result unchanged.
    ///
    /// The operation runs inside a `tracing` span `io` (a client span with
    /// OpenTelemetry's `db.system.name`, `db.operation.name`, the pool name
    /// and, on failure, `error.type`); failures are logged at
    /// `debug` with their error class (never the message, which may hold
    /// driver text). Time is read from `tokio::time::Instant`, so tests on a
    /// paused clock see exact durations. If the returned future is dropped before it finishes,
    /// the operation is recorded as failed with class `cancelled`.
    ///
    /// ```
    /// # async fn demo() {
    /// use sluice_metrics::{Backend, OpKind, Registry};
    ///
    /// let metrics = Registry::new().connection(Backend::Sqlite, "primary");
    /// let rows: Result<u64, std::io::Error> = metrics
    ///     .timed(OpKind::Execute, async { Ok(3) })
    ///     .await;
    /// assert_eq!(rows.unwrap(), 3);
    /// # }
    /// ```
    pub async fn timed<F, T, E>(&self, kind: OpKind, operation: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: ErrorClass,
    {
        // OpenTelemetry's client-span attributes (`tracing-opentelemetry`
        // maps `otel.*` to the span's name and kind).
        let span = tracing::debug_span!(
            "io",
            otel.name = %format_args!("{} {}", kind.as_str(), self.name()),
            otel.kind = "client",
            db.system.name = self.backend().as_str(),
            db.operation.name = kind.as_str(),
            db.client.connection.pool.name = self.name(),
            error.type = tracing::field::Empty,
        );
        let mut guard = CancelGuard {
            metrics: self,
            kind,
            started: Instant::now(),
            done: false,
        };
        let result = operation.instrument(span.clone()).await;
        guard.done = true;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) => {
                let class = e.error_class();
                span.record("error.type", class);
                span.in_scope(|| tracing::debug!(error_class = class, "io operation failed"));
                Outcome::Error(class)
            }
        };
        self.record_since(kind, outcome, guard.started);
        result
    }
}

/// Records a cancelled operation when the timed future is dropped early.
struct CancelGuard<'a> {
    metrics: &'a ConnectionMetrics,
    kind: OpKind,
    started: Instant,
    done: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics
                .record_since(self.kind, Outcome::Error("cancelled"), self.started);
        }
    }
}
