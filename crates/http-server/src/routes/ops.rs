//! Health, readiness, metrics and the OpenAPI document.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use sluice_metrics::{Backend, ConnectionSnapshot, OperationStats};
use sluice_pool::PoolStats;

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

/// Figures per operation kind; empty when nothing was recorded.
type Operations<'a> = Option<&'a BTreeMap<&'static str, OperationStats>>;

fn operations(connection: Option<&ConnectionSnapshot>) -> Operations<'_> {
    connection.map(|c| &c.operations)
}

/// `/io-metrics`: every named connection, its pool and its figures.
#[derive(Serialize)]
struct IoMetrics<'a> {
    success: bool,
    database: BTreeMap<&'a str, DatabaseEntry<'a>>,
    cache: BTreeMap<&'a str, CacheEntry<'a>>,
    api: BTreeMap<&'a str, ApiEntry<'a>>,
}

#[derive(Serialize)]
struct DatabaseEntry<'a> {
    backend: &'static str,
    pool: PoolStats,
    #[serde(serialize_with = "empty_when_none")]
    operations: Operations<'a>,
}

#[derive(Serialize)]
struct CacheEntry<'a> {
    backend: &'static str,
    pool: PoolStats,
    #[serde(serialize_with = "empty_when_none")]
    operations: Operations<'a>,
    hits: u64,
    misses: u64,
}

#[derive(Serialize)]
struct ApiEntry<'a> {
    base_url: String,
    circuit: &'static str,
    pool: PoolStats,
    #[serde(serialize_with = "empty_when_none")]
    operations: Operations<'a>,
}

/// `{}` rather than `null` for a connection with nothing recorded yet.
fn empty_when_none<S: serde::Serializer>(
    operations: &Operations<'_>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match operations {
        Some(map) => map.serialize(serializer),
        None => serializer.collect_map(std::iter::empty::<(&str, &str)>()),
    }
}

pub(crate) async fn io_metrics(State(state): State<AppState>) -> Response {
    let inner = &state.inner;
    let snapshot = inner.registry.snapshot();
    let pool = inner.db.pool();
    let backend = pool.kind().metrics_backend();
    let mut body = IoMetrics {
        success: true,
        database: BTreeMap::new(),
        cache: BTreeMap::new(),
        api: BTreeMap::new(),
    };
    body.database.insert(
        pool.name(),
        DatabaseEntry {
            backend: backend.as_str(),
            pool: pool.stats(),
            operations: operations(snapshot.connection(backend, pool.name())),
        },
    );
    if let Some(c) = &inner.cache {
        let redis = c.pool();
        let figures = snapshot.connection(Backend::Redis, redis.name());
        body.cache.insert(
            redis.name(),
            CacheEntry {
                backend: "redis",
                pool: redis.stats(),
                operations: operations(figures),
                hits: figures.map_or(0, |f| f.hits),
                misses: figures.map_or(0, |f| f.misses),
            },
        );
    }
    for client in inner.api.iter().chain(&inner.other_apis) {
        body.api.insert(
            client.name(),
            ApiEntry {
                base_url: sluice_pool::redact_url(client.config().base_url.as_str()),
                circuit: client.circuit().as_str(),
                pool: client.pool_stats(),
                operations: operations(snapshot.connection(Backend::Http, client.name())),
            },
        );
    }
    Json(body).into_response()
}

pub(crate) async fn prometheus(State(state): State<AppState>) -> Response {
    // Refresh the pool gauges before rendering.
    let inner = &state.inner;
    inner.db.pool().stats();
    if let Some(c) = &inner.cache {
        c.pool().stats();
    }
    if let Some(a) = &inner.api {
        a.pool_stats();
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
