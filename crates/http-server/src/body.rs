//! Reading JSON bodies with the contract's status codes.

use axum::extract::rejection::BytesRejection;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};

use crate::error::AppError;

/// The body as JSON: 413 past the size limit, 400 for a missing or wrong
/// content type or for bytes that are not JSON.
pub(crate) fn json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, AppError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            )
        } else {
            AppError::bad_request("the request body could not be read")
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(AppError::bad_request(
            "expected Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| AppError::bad_request("the request body is not valid JSON"))
}
