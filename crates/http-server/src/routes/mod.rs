//! The router: the contract's routes, fallbacks and layers.

mod external;
mod ops;
mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;

use crate::error::AppError;
use crate::middleware;
use crate::state::AppState;

async fn not_found() -> Response {
    AppError::not_found("no such route").into_response()
}

async fn method_not_allowed() -> Response {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
    .into_response()
}

/// Every route of the contract with its layers, as an axum [`Router`].
pub fn router(state: AppState) -> Router {
    let limit = state.inner.config.max_body_bytes;
    Router::new()
        .route("/users/{user_id}", get(users::get))
        .route("/users", post(users::create))
        .route("/external-data/{data_id}", get(external::get))
        .route("/batch-external-data", post(external::batch))
        .route("/io-metrics", get(ops::io_metrics))
        .route("/metrics", get(ops::prometheus))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::context,
        ))
        .with_state(state)
}
