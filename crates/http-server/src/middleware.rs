//! Cross-cutting layers: request ids, access log and metrics, body size,
//! load shedding, request timeout, authentication.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use rand::RngExt;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::error::{AppError, REQUEST_ID};
use crate::state::AppState;

/// The client's `X-Request-Id` if it is printable ASCII (space to `~`) of
/// at most 128 characters, else a new random one.
fn request_id(req: &Request) -> Arc<str> {
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        });
    match given {
        Some(id) => Arc::from(id),
        None => Arc::from(format!("{:032x}", rand::rng().random::<u128>()).as_str()),
    }
}

/// The one middleware layer (one layer: each axum layer boxes and moves
/// the request's future again): gives the request its id and span, checks
/// the declared body size and the bearer token, sheds load, applies the
/// request timeout, and writes one access-log line and one metric.
pub(crate) async fn context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let started = Instant::now();
    let config = &state.inner.config;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut response = REQUEST_ID
        .scope(id.clone(), async {
            if declared.is_some_and(|n| n > config.max_body_bytes) {
                return AppError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is too large",
                )
                .into_response();
            }
            if !authorized(&state, &req) {
                return unauthorized();
            }
            // Shed load rather than queue without bound.
            let Ok(_permit) = state.inner.concurrency.clone().try_acquire_owned() else {
                return AppError::unavailable("overloaded", "the server is at capacity", 1)
                    .into_response();
            };
            match tokio::time::timeout(config.request_timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => {
                    AppError::unavailable("timeout", "the request took too long", 1).into_response()
                }
            }
        })
        .instrument(span.clone())
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    sluice_metrics::server::record_request(&route, method.as_str(), status, elapsed);
    tracing::info!(parent: &span, status, duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
    response
}

/// Whether the request may pass: always when no tokens are configured and
/// on the health and metrics routes, else with `Authorization: Bearer
/// <token>` naming a configured token (compared in constant time, every
/// token checked so the time does not say which one matched).
fn authorized(state: &AppState, req: &Request) -> bool {
    let tokens = &state.inner.config.auth_tokens;
    if tokens.is_empty() || matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return true;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    presented.is_some_and(|given| {
        tokens.iter().fold(false, |found, token| {
            found | bool::from(token.expose().as_bytes().ct_eq(given))
        })
    })
}

fn unauthorized() -> Response {
    let mut response = AppError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
