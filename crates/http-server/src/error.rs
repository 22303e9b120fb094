//! [`AppError`]: every failure as the contract's JSON envelope.
//!
//! `{"success": false, "code": "…", "detail": "…", "request_id": "…"}`,
//! plus `errors` for validation failures and `Retry-After` on 503s. The
//! detail is written here, never copied from a driver or an upstream.

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use sluice_api_client::ApiError;
use sluice_db::DbError;

tokio::task_local! {
    /// The current request's id, set by the request-id middleware.
    pub(crate) static REQUEST_ID: Arc<str>;
}

/// The current request's id, or `"-"` outside a request.
pub fn current_request_id() -> Arc<str> {
    REQUEST_ID
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::from("-"))
}

/// One invalid field.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A failed request: status, stable code and a detail for humans.
#[derive(Debug, Clone)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<u64>,
}

impl AppError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 422 `validation_error` with the invalid fields.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "the request has invalid fields",
        );
        e.errors = errors;
        e
    }

    /// 503 with `Retry-After` (seconds, at least 1).
    pub fn unavailable(
        code: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 500 `internal_error`; the cause is logged, never shown.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// `error: cause: cause…`, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[derive(Serialize)]
struct Envelope<'a> {
    success: bool,
    code: &'a str,
    detail: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let body = Envelope {
            success: false,
            code: self.code,
            detail: &self.detail,
            request_id: &request_id,
            errors: &self.errors,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

fn retry_secs(after: Option<std::time::Duration>) -> u64 {
    after.map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

impl From<DbError> for AppError {
    fn from(error: DbError) -> Self {
        match &error {
            DbError::NotFound => AppError::not_found("not found"),
            DbError::Conflict { .. } => AppError::new(
                StatusCode::CONFLICT,
                "conflict",
                "conflicts with an existing resource",
            ),
            DbError::InvalidInput { reason, .. } => {
                AppError::invalid(vec![FieldError::new("body", reason.clone())])
            }
            e if e.is_unavailable() => {
                if error.retry_after().is_some() {
                    // Rejected by the pool's breaker without trying: the
                    // breaker logged once when it opened. One line per
                    // request here would flood the log during an outage.
                    tracing::debug!(error = %error_chain(&error), "database unavailable");
                } else {
                    tracing::warn!(error = %error_chain(&error), "database unavailable");
                }
                AppError::unavailable(
                    "unavailable",
                    "the database is unavailable",
                    retry_secs(error.retry_after()),
                )
            }
            _ => AppError::internal(&error),
        }
    }
}

impl From<ApiError> for AppError {
    fn from(error: ApiError) -> Self {
        match &error {
            ApiError::Timeout { .. } => AppError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            ApiError::CircuitOpen { retry_after, .. } => AppError::unavailable(
                "circuit_open",
                "the upstream is failing; not calling it for now",
                retry_secs(Some(*retry_after)),
            ),
            ApiError::NotConfigured { .. } => {
                AppError::unavailable("not_configured", "no upstream is configured", 60)
            }
            ApiError::InvalidRequest { .. } => AppError::internal(&error),
            _ => {
                tracing::warn!(error = %error_chain(&error), "upstream error");
                AppError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "the upstream answered badly",
                )
            }
        }
    }
}
