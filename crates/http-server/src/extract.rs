//! Request extraction with the contract's statuses: a path parameter that
//! cannot be read (not UTF-8, missing) is 422 in the envelope, never
//! axum's own text answer; JSON bodies are 413 past the size limit, 408
//! past the body deadline, 400 when they are not JSON.

use std::error::Error as _;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};

use crate::error::{AppError, ErrorCode};

/// The single path parameter of a route, read as a UTF-8 string.
#[derive(Debug)]
pub(crate) struct Param(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(_) => {
                // The route template names the parameter: `/users/{user_id}`.
                let field = parts
                    .extensions
                    .get::<axum::extract::MatchedPath>()
                    .and_then(|p| p.as_str().rsplit_once('{'))
                    .and_then(|(_, rest)| rest.strip_suffix('}'))
                    .unwrap_or("path")
                    .to_owned();
                Err(AppError::invalid_field(field, "must be valid UTF-8 text"))
            }
        }
    }
}

/// Whether `error` or one of its causes is tower-http's body timeout.
fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The body as JSON: 413 past the size limit, 408 past the body deadline,
/// 400 for a missing or wrong content type or for bytes that are not JSON.
pub(crate) fn json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, AppError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::edge::guard::too_large()
        } else if rejection.source().is_some_and(is_body_timeout) {
            AppError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            )
        } else {
            AppError::bad_request("the request body could not be read")
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !sluice_api_client::is_json_content_type(content_type) {
        return Err(AppError::bad_request(
            "expected Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| AppError::bad_request("the request body is not valid JSON"))
}
