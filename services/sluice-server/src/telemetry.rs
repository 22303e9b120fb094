//! Logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, traces.
//!
//! Logs: one `fmt` layer (text or JSON) filtered by `RUST_LOG`. Traces: a
//! `tracing-opentelemetry` layer beside it, under the same filter plus the
//! debug-level client spans of Sluice (a span per database, cache and
//! upstream operation), batched and exported over OTLP/HTTP (protobuf)
//! through hyper and the process's rustls. With traces on, the server continues a
//! W3C `traceparent` it receives and the API client sends one on every
//! outbound request; with them off, no span goes anywhere and the only
//! cost is one relaxed load per request (`sluice_metrics::trace_context`).
//!
//! Log lines are formatted where they happen but written to stderr by a
//! thread of their own (`tracing-appender`'s non-blocking writer), in
//! batches: a line queued while the thread writes goes out with the next
//! write. A request never waits on stderr, even when whatever reads it
//! stalls. Past 128,000 queued lines (`tracing-appender`'s default), new
//! lines are dropped rather than holding requests up (their count is
//! logged at exit, which shows only if stderr takes lines again by then).
//! Neither the requests nor the exit wait on a stderr that stopped taking
//! lines.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::LogFormat;
use crate::env::Traces;

/// The modules whose client spans are at debug level.
const TRACED_AT_DEBUG: &str = "sluice_metrics::timed=debug,sluice_api_client::client=debug";

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What must be flushed at exit.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
    logs: LogWriter,
}

/// The log thread's guard (dropping it writes what is queued) and its
/// count of dropped lines.
#[derive(Debug)]
struct LogWriter {
    guard: WorkerGuard,
    dropped: ErrorCounter,
}

/// A writer for the log layers, and what to keep for the exit.
fn log_writer() -> (NonBlocking, LogWriter) {
    let (writer, guard) = NonBlockingBuilder::default()
        .thread_name("sluice-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let dropped = writer.error_counter();
    (writer, LogWriter { guard, dropped })
}

impl Telemetry {
    /// Exports the spans still queued (at shutdown).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
        // Through the same writer, never straight to stderr: a stderr
        // that stopped taking lines would block the exit. Dropping the
        // guard waits at most about a second for the queue to be written.
        let dropped = self.logs.dropped.dropped_lines();
        if dropped > 0 {
            tracing::warn!(dropped, "log lines dropped: stderr did not keep up");
        }
        drop(self.logs.guard);
    }
}

/// Installs the global subscriber: logs, and traces when configured.
/// Must run inside the tokio runtime (the span exporter runs on it).
pub(crate) fn init(format: LogFormat, traces: Option<&Traces>) -> Result<Telemetry> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, log_thread) = log_writer();
    let Some(traces) = traces else {
        // Logs only: `RUST_LOG` filters globally, so disabled spans and
        // events cost nothing at all.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
            )
            .with_ansi(ansi)
            .with_writer(writer);
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
        return Ok(Telemetry {
            provider: None,
            logs: log_thread,
        });
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = opentelemetry_http::hyper::HyperClient::new(connector, EXPORT_TIMEOUT, None);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the span exporter")?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(traces.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("sluice-server");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // One global filter for both layers: `RUST_LOG`, plus the two
    // modules whose client spans are at debug (per-layer filters lost
    // some log events in tracing-subscriber 0.3.23). With traces on, the
    // debug events of those two modules (a failed I/O operation's class)
    // are logged too.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(format!("{directives},{TRACED_AT_DEBUG}"))
        .context("RUST_LOG: not a valid filter")?;
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .with(filter)
        .init();
    sluice_metrics::trace_context::set_enabled(true);
    Ok(Telemetry {
        provider: Some(provider),
        logs: log_thread,
    })
}
