//! `GET /external-data/{data_id}` and `POST /batch-external-data`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sluice_api_client::{ApiClient, ApiError, ApiPath, ApiRequest, ApiResponse};

use crate::body;
use crate::error::{AppError, FieldError};
use crate::state::AppState;

fn valid_id(id: &str) -> bool {
    (1..=256).contains(&id.chars().count())
}

fn upstream(state: &AppState) -> Result<&ApiClient, AppError> {
    state
        .inner
        .api
        .as_ref()
        .ok_or_else(|| AppError::unavailable("not_configured", "no upstream is configured", 60))
}

fn data_request(id: &str) -> ApiRequest {
    ApiRequest::get(ApiPath::new().push("data").push(id))
}

fn cache_key(id: &str) -> String {
    format!("external:{id}")
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    if !valid_id(&id) {
        return Err(AppError::invalid(vec![FieldError::new(
            "data_id",
            "must be 1 to 256 characters",
        )]));
    }
    let api = upstream(&state)?;
    let ttl = state.inner.config.external_cache_ttl;
    let cache = state.inner.cache.as_ref().filter(|_| !ttl.is_zero());
    if let Some(cache) = cache
        && let Ok(Some(data)) = cache.get::<serde_json::Value>(&cache_key(&id)).await
    {
        return Ok(Json(serde_json::json!({"success": true, "data": data})).into_response());
    }
    let response = api.request(data_request(&id)).await?;
    let data = answer(response)?;
    if let Some(cache) = cache
        && let Err(e) = cache.set(&cache_key(&id), &data, ttl).await
    {
        tracing::debug!(error = %e, "external cache write failed");
    }
    Ok(Json(serde_json::json!({"success": true, "data": data})).into_response())
}

/// A 2xx JSON answer's body; 404 stays 404; anything else is 502.
fn answer(response: ApiResponse) -> Result<serde_json::Value, AppError> {
    match response.status {
        200..=299 => response.json().map_err(AppError::from),
        404 => Err(AppError::not_found("the upstream has no data for this id")),
        _ => Err(AppError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the upstream answered badly",
        )),
    }
}

/// A short, fixed description of a failed item (no hostnames, no bodies).
fn item_error(error: &ApiError) -> (Option<u16>, &'static str) {
    match error {
        ApiError::Status { status, .. } => {
            (Some(*status), "the upstream answered with an error status")
        }
        ApiError::Timeout { .. } => (None, "the upstream did not answer in time"),
        ApiError::CircuitOpen { .. } => (None, "the upstream is failing; not called"),
        ApiError::Connect { .. } | ApiError::Transport { .. } => {
            (None, "the upstream could not be reached")
        }
        ApiError::BodyTooLarge { .. } | ApiError::NotJson { .. } | ApiError::InvalidJson { .. } => {
            (None, "the upstream's answer was not valid JSON")
        }
        _ => (None, "the request failed"),
    }
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let value = body::json(&headers, body)?;
    let max = state.inner.config.max_batch_size;
    let Some(items) = value.as_array() else {
        return Err(AppError::invalid(vec![FieldError::new(
            "body",
            "must be a JSON array of data ids",
        )]));
    };
    if items.is_empty() || items.len() > max {
        return Err(AppError::invalid(vec![FieldError::new(
            "body",
            format!("must hold 1 to {max} data ids"),
        )]));
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(id) if valid_id(id) => ids.push(id.to_owned()),
            _ => errors.push(FieldError::new(
                format!("[{i}]"),
                "must be a string of 1 to 256 characters",
            )),
        }
    }
    if !errors.is_empty() {
        return Err(AppError::invalid(errors));
    }
    let api = upstream(&state)?;
    // Leave a tenth of the request timeout to answer with what finished.
    let deadline = state.inner.config.request_timeout.mul_f64(0.9);
    let results = api
        .batch(
            ids.iter().map(|id| data_request(id)).collect(),
            Some(deadline),
        )
        .await;
    let data: Vec<serde_json::Value> = ids
        .iter()
        .zip(results)
        .map(|(id, result)| match result {
            Ok(response) if (200..300).contains(&response.status) => match response.json::<serde_json::Value>() {
                Ok(data) => serde_json::json!({"id": id, "status_code": response.status, "data": data}),
                Err(_) => serde_json::json!({"id": id, "status_code": response.status, "data": null,
                                              "error": "the upstream's answer was not valid JSON"}),
            },
            Ok(response) => serde_json::json!({"id": id, "status_code": response.status, "data": null,
                                               "error": "the upstream answered with an error status"}),
            Err(error) => {
                let (status, message) = item_error(&error);
                serde_json::json!({"id": id, "status_code": status, "data": null, "error": message})
            }
        })
        .collect();
    Ok(Json(serde_json::json!({"success": true, "data": data})).into_response())
}
