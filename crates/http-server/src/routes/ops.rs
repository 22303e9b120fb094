//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::envelope::Probe;
use crate::error::AppError;
use crate::state::AppState;

pub(crate) async fn healthz() -> Response {
    Json(Probe {
        status: "ok",
        failing: Vec::new(),
    })
    .into_response()
}

fn unready(failing: String) -> Response {
    let body = Probe {
        status: "unavailable",
        failing: vec![failing],
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// 503 as soon as the server drains (so a balancer stops sending), or
/// while the primary database does not answer a ping; else 200.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return unready("server:draining".to_owned());
    }
    let db = &state.inner.db;
    match db.ping().await {
        Ok(()) => Json(Probe {
            status: "ready",
            failing: Vec::new(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %crate::error::error_chain(&e), "readiness check failed");
            unready(format!("database:{}", db.pool().name()))
        }
    }
}

/// `/io-metrics`: every named connection of the I/O manager.
pub(crate) async fn io_metrics(State(state): State<AppState>) -> Response {
    Json(state.inner.io.metrics()).into_response()
}

pub(crate) async fn prometheus(State(state): State<AppState>) -> Response {
    // Refresh the pool gauges before rendering.
    let inner = &state.inner;
    for db in inner.io.databases() {
        db.pool().stats();
    }
    for kv in inner.io.redis_stores() {
        kv.pool().stats();
    }
    for api in inner.io.apis() {
        api.pool_stats();
    }
    match &inner.prometheus {
        Some(handle) => {
            // Upkeep publishes new HELP lines and drains histogram samples.
            handle.run_upkeep();
            let mut response = handle.render().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => AppError::not_found("metrics exposition is not enabled").into_response(),
    }
}

pub(crate) async fn openapi() -> Response {
    let mut response = include_str!("../openapi.json").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
