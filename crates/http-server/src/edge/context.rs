//! [`RequestContextLayer`]: the outermost layer of every route. It gives
//! the request its id, opens its span, makes the id visible to the error
//! envelope (a task-local), answers 500 for a panicking handler and 503
//! `timeout` past `request_timeout`, and when the response is ready writes
//! the `X-Request-Id` header, one access-log line and one server metric.
//!
//! Request id and trace are one hand-written layer rather than tower-http's
//! `SetRequestId` + `PropagateRequestId` + `TraceLayer`: the envelope
//! needs the id inside the handler (a task-local scope around the inner
//! future), the metric needs the route template (known only inside the
//! router), and one future here replaces three nested ones on every
//! request.
//!
//! The panic guard and the request deadline are folded in for the same
//! reason: they were tower-http's `CatchPanicLayer` and tower's
//! `TimeoutLayer` under axum's `HandleErrorLayer`, three more futures
//! wrapped around every handler's (their construction and moves cost
//! about 2,000 instructions of a proxied request, callgrind), and the
//! timeout read the clock once more where this layer has already read it.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method};
use rand::RngExt;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Sleep;
use tower::{Layer, Service};
use tracing::instrument::{Instrument, Instrumented};

use sluice_metrics::server::{ServedRequest, ServerMetrics};

use crate::edge::guard;
use crate::error::{ErrorType, REQUEST_ID};

/// The request header that carries a client's id, echoed on the response.
/// A `HeaderName`, not a string: inserting a string name not among the
/// standard headers parses and copies it on every response.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

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
    match req.headers().get(&REQUEST_ID_HEADER) {
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
    timeout: Duration,
    metrics: Arc<ServerMetrics>,
}

impl RequestContextLayer {
    /// For a server served over TLS when `https`, answering 503 `timeout`
    /// for a request not answered within `timeout`. Registers its metric
    /// handles with the recorder installed now.
    pub(crate) fn new(https: bool, timeout: Duration) -> Self {
        Self {
            scheme: if https { "https" } else { "http" },
            timeout,
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
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`RequestContextLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestContext<S> {
    inner: S,
    scheme: &'static str,
    timeout: Duration,
    metrics: Arc<ServerMetrics>,
}

impl<S> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
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
        let started = Instant::now();
        // The inner layers' `call` may answer at once (401, 413, 503
        // `overloaded`): inside the span and the id's scope, as their
        // futures run. A layer or service that panics in `call` is
        // answered as one that panics in its future.
        let called = {
            let _in_span = span.enter();
            REQUEST_ID.sync_scope(id.clone(), || {
                match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                    Ok(future) => Called::Running { future },
                    Err(payload) => Called::Panicked {
                        payload: Some(payload),
                    },
                }
            })
        };
        let inner = REQUEST_ID.scope(id.clone(), called).instrument(span);
        ContextFuture {
            inner,
            // The deadline from the clock read already taken.
            deadline: tokio::time::sleep_until((started + self.timeout).into()),
            started,
            id,
            method,
            route,
            scheme: self.scheme,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, or the panic its `call` raised.
    #[project = CalledProjection]
    pub(crate) enum Called<F> {
        Running {
            #[pin]
            future: F,
        },
        Panicked {
            payload: Option<Box<dyn std::any::Any + Send + 'static>>,
        },
    }
}

impl<F> Future for Called<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    /// Polled inside the request's span and id scope, so a panic's answer
    /// and log line carry the request id.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CalledProjection::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(polled) => polled,
                    Err(payload) => Poll::Ready(Ok(guard::panicked(payload))),
                }
            }
            CalledProjection::Panicked { payload } => Poll::Ready(Ok(match payload.take() {
                Some(payload) => guard::panicked(payload),
                // Polled again after it answered: a bug in the caller.
                None => guard::internal_error(),
            })),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestContext`].
    pub(crate) struct ContextFuture<F> {
        #[pin]
        inner: Instrumented<TaskLocalFuture<Arc<str>, Called<F>>>,
        #[pin]
        deadline: Sleep,
        started: Instant,
        id: Arc<str>,
        method: Method,
        route: Option<MatchedPath>,
        scheme: &'static str,
        metrics: Arc<ServerMetrics>,
    }
}

impl<F> Future for ContextFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = match this.inner.as_mut().poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                // The handler's future is dropped with this one, as
                // tower's timeout drops it.
                let _in_span = this.inner.span().enter();
                REQUEST_ID.sync_scope(this.id.clone(), guard::timed_out)
            }
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
