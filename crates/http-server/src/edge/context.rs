//! [`RequestContextLayer`]: the outermost layer of every route. It gives
//! the request its id, opens its span, makes the id visible to the error
//! envelope (a task-local), and when the response is ready writes the
//! `X-Request-Id` header, one access-log line and one server metric.
//!
//! Request id and trace are one hand-written layer rather than tower-http's
//! `SetRequestId` + `PropagateRequestId` + `TraceLayer`: the envelope
//! needs the id inside the handler (a task-local scope around the inner
//! future), the metric needs the route template (known only inside the
//! router), and one future here replaces three nested ones on every
//! request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use http::{HeaderValue, Method, Response};
use rand::RngExt;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::instrument::{Instrument, Instrumented};

use sluice_metrics::server::{ServedRequest, ServerMetrics};

use crate::error::{ErrorType, REQUEST_ID};

/// The request header that carries a client's id, echoed on the response.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Whether a client's request id may be echoed: 1 to 128 characters of
/// `[A-Za-z0-9._:-]`, so that it cannot forge fields in a text log line
/// or smuggle anything into a header.
pub(crate) fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The client's id if it is safe, else a new random one (32 hex digits).
fn request_id(req: &Request) -> Arc<str> {
    match req.headers().get(REQUEST_ID_HEADER) {
        Some(given) if is_safe_request_id(given.as_bytes()) => {
            // Safe bytes are ASCII, so this never fails.
            Arc::from(given.to_str().unwrap_or_default())
        }
        _ => new_request_id(),
    }
}

/// 32 random hex digits, written straight into one buffer: `format!` with
/// `{:032x}` cost about 600 instructions per request (profile of
/// `GET /external-data/{id}`), this a tenth of that.
fn new_request_id() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::rng().random::<u128>();
    let mut digits = [0u8; 32];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are ASCII.
    Arc::from(std::str::from_utf8(&digits).unwrap_or_default())
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct RequestContextLayer {
    scheme: &'static str,
    metrics: Arc<ServerMetrics>,
}

impl RequestContextLayer {
    /// For a server served over TLS when `https`. Registers its metric
    /// handles with the recorder installed now.
    pub(crate) fn new(https: bool) -> Self {
        Self {
            scheme: if https { "https" } else { "http" },
            metrics: Arc::new(ServerMetrics::new()),
        }
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            scheme: self.scheme,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`RequestContextLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestContext<S> {
    inner: S,
    scheme: &'static str,
    metrics: Arc<ServerMetrics>,
}

impl<S, B> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = ContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let id = request_id(&req);
        let method = req.method().clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let route_name = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let span = if sluice_metrics::trace_context::enabled() {
            // OpenTelemetry's server-span attributes, only when traces are
            // exported: every field here is also formatted by the log layer.
            let span = tracing::info_span!(
                "request",
                otel.name = %format_args!("{method} {route_name}"),
                otel.kind = "server",
                request_id = %id,
                method = %method,
                route = route_name,
                url.scheme = self.scheme,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            continue_trace(&span, req.headers());
            span
        } else {
            tracing::info_span!(
                "request",
                request_id = %id,
                method = %method,
                route = route_name,
            )
        };
        let inner = REQUEST_ID
            .scope(id.clone(), self.inner.call(req))
            .instrument(span);
        ContextFuture {
            inner,
            started: Instant::now(),
            id,
            method,
            route,
            scheme: self.scheme,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestContext`].
    pub(crate) struct ContextFuture<F> {
        #[pin]
        inner: Instrumented<TaskLocalFuture<Arc<str>, F>>,
        started: Instant,
        id: Arc<str>,
        method: Method,
        route: Option<MatchedPath>,
        scheme: &'static str,
        metrics: Arc<ServerMetrics>,
    }
}

impl<F, B, E> Future for ContextFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = match ready!(this.inner.as_mut().poll(cx)) {
            Ok(response) => response,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Ok(value) = HeaderValue::from_str(this.id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let elapsed = this.started.elapsed();
        let status = response.status().as_u16();
        let matched = this.route.as_ref().map(MatchedPath::as_str);
        this.metrics.record(
            ServedRequest {
                route: matched,
                method: this.method.as_str(),
                scheme: this.scheme,
                status,
                error_type: response.extensions().get::<ErrorType>().map(|e| e.0),
            },
            elapsed,
        );
        let route = matched.unwrap_or("unmatched");
        if sluice_metrics::trace_context::enabled() {
            let span = this.inner.span();
            span.record("http.response.status_code", status);
            if let Some(ErrorType(error_type)) = response.extensions().get::<ErrorType>() {
                span.record("error.type", *error_type);
            }
            let trace_id = trace_id(span);
            tracing::info!(
                request_id = %this.id,
                trace_id = %trace_id,
                method = %this.method,
                route,
                status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
            return Poll::Ready(Ok(response));
        }
        tracing::info!(
            request_id = %this.id,
            method = %this.method,
            route,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        Poll::Ready(Ok(response))
    }
}

/// Makes `span` continue the W3C trace context of `headers`
/// (`traceparent`, `tracestate`); without one, it starts a new trace.
fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// The trace id of `span` (32 hex digits), for the access log.
fn trace_id(span: &tracing::Span) -> opentelemetry::trace::TraceId {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().span_context().trace_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_safe_charset_is_echoed() {
        for ok in ["a", "client-id-1", "A.b_c:d-9", &"x".repeat(128)] {
            assert!(is_safe_request_id(ok.as_bytes()), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            "has space",
            "tab\there",
            "a=b",
            "é",
            "a\"b",
            long.as_str(),
        ] {
            assert!(!is_safe_request_id(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn new_ids_are_32_lowercase_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            assert!(is_safe_request_id(id.as_bytes()));
        }
        assert_ne!(a, b);
        // Every digit position is used: over many ids, each shows more
        // than one value (a shift error would pin some to 0).
        let ids: Vec<Arc<str>> = (0..64).map(|_| new_request_id()).collect();
        for i in 0..32 {
            let first = ids[0].as_bytes()[i];
            assert!(ids.iter().any(|id| id.as_bytes()[i] != first), "digit {i}");
        }
    }
}
