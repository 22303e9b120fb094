//! The router: the contract's routes, fallbacks and the edge's layers
//! (see `edge/mod.rs` for the order and why).

mod external;
mod ops;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;

use crate::edge::admit::ApiGuardLayer;
use crate::edge::context::RequestContextLayer;
use crate::edge::guard::{BearerAuth, DeclaredLength};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

async fn not_found() -> Response {
    AppError::not_found("no such route").into_response()
}

async fn method_not_allowed() -> Response {
    AppError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
    .into_response()
}

/// Every route of the contract with the edge's layers, as an axum
/// [`Router`].
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra` routes of your own, which get everything the
/// contract's API routes get: request ids, the envelope on panics and
/// timeouts, authentication when configured, load shedding.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let config = state.config();
    let auth = (!config.auth_tokens.is_empty()).then(|| BearerAuth {
        tokens: Arc::from(config.auth_tokens.clone()),
    });
    let api = Router::new()
        .route("/users/{user_id}", get(users::get))
        .route("/users", post(users::create))
        .route("/external-data/{data_id}", get(external::get))
        .route("/batch-external-data", post(external::batch))
        .route("/io-metrics", get(ops::io_metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(extra);
    let probes = Router::new()
        .route("/metrics", get(ops::prometheus))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    let edge = ServiceBuilder::new()
        .layer(RequestContextLayer::new(
            config.https,
            config.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(ApiGuardLayer::new(
            DeclaredLength {
                max: config.max_body_bytes,
            },
            auth,
            state.inner.concurrency.clone(),
        ));
    api.merge(probes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(edge)
        .with_state(state)
}
