//! `GET /external-data/{data_id}` and `POST /batch-external-data`.

use std::collections::HashMap;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use sluice_api_client::{ApiClient, ApiError, ApiPath, ApiRequest, ApiResponse};

use crate::envelope::{Chunks, data_text};
use crate::error::{AppError, ErrorCode, FieldError};
use crate::extract::{self, Param};
use crate::state::AppState;

/// What is wrong with a data id, if anything: 1 to 256 characters, no
/// control characters (U+0000–U+001F, U+007F: they could break an
/// upstream's log), and not `.` or `..` (which URL parsers and proxies
/// resolve as dot segments, even percent-encoded).
fn invalid_id(id: &str) -> Option<&'static str> {
    if !(1..=256).contains(&id.chars().count()) {
        Some("must be 1 to 256 characters")
    } else if id == "." || id == ".." {
        Some("must not be . or ..")
    } else if id.chars().any(|c| c.is_ascii_control()) {
        Some("must not contain control characters")
    } else {
        None
    }
}

fn upstream(state: &AppState) -> Result<&ApiClient, AppError> {
    state.inner.api.as_ref().ok_or_else(|| {
        AppError::unavailable(ErrorCode::NotConfigured, "no upstream is configured", 60)
    })
}

fn data_request(id: &str) -> ApiRequest {
    ApiRequest::get(ApiPath::new().push("data").push(id))
}

fn cache_key(id: &str) -> String {
    format!("external:{id}")
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Param(id): Param,
) -> Result<Response, AppError> {
    if let Some(problem) = invalid_id(&id) {
        return Err(AppError::invalid_field("data_id", problem));
    }
    let api = upstream(&state)?;
    let ttl = state.inner.config.external_cache_ttl;
    let cache = state.inner.cache.as_ref().filter(|_| !ttl.is_zero());
    if let Some(cache) = cache
        && let Ok(Some(data)) = cache.get_json_text(&cache_key(&id)).await
    {
        return Ok(data_text(data));
    }
    let response = api.request(data_request(&id)).await?;
    let data = answer(response)?;
    if let Some(cache) = cache {
        // In the background, as for users: the answer never waits for it.
        let (cache, key, value) = (cache.clone(), cache_key(&id), data.clone());
        tokio::spawn(async move {
            if let Err(e) = cache.set_json_text(&key, value, ttl).await {
                tracing::debug!(error = %e, "external cache write failed");
            }
        });
    }
    Ok(data_text(data))
}

/// A 2xx answer's JSON body (checked, not parsed into a tree); 404 stays
/// 404; anything else is 502.
fn answer(response: ApiResponse) -> Result<Bytes, AppError> {
    match response.status {
        200..=299 => {
            response
                .json::<serde::de::IgnoredAny>()
                .map_err(AppError::from)?;
            Ok(response.body)
        }
        404 => Err(AppError::not_found("the upstream has no data for this id")),
        _ => Err(AppError::new(
            ErrorCode::UpstreamError,
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
        ApiError::Overloaded { .. } => (None, "no request slot was free in time; not called"),
        ApiError::BatchTooLarge { .. } => (
            None,
            "the batch's answers reached their size limit; not fetched",
        ),
        ApiError::Connect { .. } | ApiError::Transport { .. } => {
            (None, "the upstream could not be reached")
        }
        ApiError::BodyTooLarge { .. } | ApiError::NotJson { .. } | ApiError::InvalidJson { .. } => {
            (None, "the upstream's answer was not valid JSON")
        }
        _ => (None, "the request failed"),
    }
}

/// A unique id's answer, worked out once however often the batch repeats
/// the id: the upstream's body is checked as JSON and kept as raw text,
/// never built into a tree.
struct Answer {
    status_code: Option<u16>,
    data: Option<Bytes>,
    error: Option<&'static str>,
}

impl Answer {
    fn new(result: Result<ApiResponse, ApiError>) -> Self {
        match result {
            Ok(response) if (200..300).contains(&response.status) => {
                // Checks the content type and the syntax without a tree.
                match response.json::<serde::de::IgnoredAny>() {
                    Ok(_) => Self {
                        status_code: Some(response.status),
                        // Whitespace around it is valid inside the answer too.
                        data: Some(response.body),
                        error: None,
                    },
                    Err(_) => Self {
                        status_code: Some(response.status),
                        data: None,
                        error: Some("the upstream's answer was not valid JSON"),
                    },
                }
            }
            Ok(response) => Self {
                status_code: Some(response.status),
                data: None,
                error: Some("the upstream answered with an error status"),
            },
            Err(error) => {
                let (status_code, message) = item_error(&error);
                Self {
                    status_code,
                    data: None,
                    error: Some(message),
                }
            }
        }
    }
}

/// The batch answer `{"success":true,"data":[{"id", "status_code", "data",
/// "error"?}, …]}` as a list of chunks: each item's small frame is its
/// own, each upstream body is shared by every item that repeats its id, so
/// a thousand copies of one large answer cost one body in memory.
fn batch_answer(ids: &[String], answers: &HashMap<&str, Answer>) -> Chunks {
    let mut chunks = Chunks::default();
    chunks.push(Bytes::from_static(b"{\"success\":true,\"data\":["));
    let mut separator: &[u8] = b"";
    for id in ids {
        let Some(answer) = answers.get(id.as_str()) else {
            continue;
        };
        let mut head = Vec::with_capacity(id.len() + 48);
        head.extend_from_slice(separator);
        separator = b",";
        head.extend_from_slice(b"{\"id\":");
        // A string always serializes.
        let _ = serde_json::to_writer(&mut head, id);
        head.extend_from_slice(b",\"status_code\":");
        match answer.status_code {
            Some(code) => head.extend_from_slice(code.to_string().as_bytes()),
            None => head.extend_from_slice(b"null"),
        }
        head.extend_from_slice(b",\"data\":");
        match &answer.data {
            Some(raw) => {
                chunks.push(Bytes::from(head));
                chunks.push(raw.clone());
                head = Vec::new();
            }
            None => head.extend_from_slice(b"null"),
        }
        if let Some(error) = answer.error {
            head.extend_from_slice(b",\"error\":");
            let _ = serde_json::to_writer(&mut head, error);
        }
        head.push(b'}');
        chunks.push(Bytes::from(head));
    }
    chunks.push(Bytes::from_static(b"]}"));
    chunks
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let value = extract::json(&headers, body)?;
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
        match item.as_str().map(|id| (id, invalid_id(id))) {
            Some((id, None)) => ids.push(id.to_owned()),
            Some((_, Some(problem))) => errors.push(FieldError::new(format!("[{i}]"), problem)),
            None => errors.push(FieldError::new(format!("[{i}]"), "must be a string")),
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
    let mut answers: HashMap<&str, Answer> = HashMap::new();
    for (id, result) in ids.iter().zip(results) {
        answers
            .entry(id.as_str())
            .or_insert_with(|| Answer::new(result));
    }
    let body = batch_answer(&ids, &answers);
    Ok((
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        axum::body::Body::new(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_control_characters_are_refused() {
        for ok in ["a", "a.b", "...", "a/b", "%2F", "é", &"x".repeat(256)] {
            assert_eq!(invalid_id(ok), None, "{ok}");
        }
        let long = "x".repeat(257);
        for bad in ["", ".", "..", "a\nb", "\u{7f}", "tab\t", long.as_str()] {
            assert!(invalid_id(bad).is_some(), "{bad:?}");
        }
    }
}
