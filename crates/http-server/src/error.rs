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

/// The stable, machine-readable `code` of an error envelope. Each code
/// has one HTTP status ([`ErrorCode::status`]); the contract's clients
/// switch on the word, humans read the `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the body is not JSON, or not the JSON the route takes.
    BadRequest,
    /// 401: a bearer token is required and was missing or wrong.
    Unauthorized,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route exists but not for this method.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 409: conflicts with an existing resource (a taken email).
    Conflict,
    /// 413: the request body is larger than the limit.
    PayloadTooLarge,
    /// 422: well-formed but invalid input; the envelope lists the fields.
    ValidationError,
    /// 500: a bug; the cause is logged, never shown.
    InternalError,
    /// 502: the upstream answered badly.
    UpstreamError,
    /// 503: a dependency (the database) is unavailable.
    Unavailable,
    /// 503: the upstream's circuit breaker is open.
    CircuitOpen,
    /// 503: no upstream is configured.
    NotConfigured,
    /// 503: the server is at capacity and sheds load.
    Overloaded,
    /// 503: the request took longer than the request timeout.
    Timeout,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
}

impl ErrorCode {
    /// The word sent as `code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValidationError => "validation_error",
            Self::InternalError => "internal_error",
            Self::UpstreamError => "upstream_error",
            Self::Unavailable => "unavailable",
            Self::CircuitOpen => "circuit_open",
            Self::NotConfigured => "not_configured",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamError => StatusCode::BAD_GATEWAY,
            Self::Unavailable
            | Self::CircuitOpen
            | Self::NotConfigured
            | Self::Overloaded
            | Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A failed request: a stable code (which fixes the status) and a detail
/// for humans.
#[derive(Debug, Clone)]
pub struct AppError {
    code: ErrorCode,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<u64>,
}

impl AppError {
    /// An error with this code and detail; 503s get `Retry-After: 1`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let retry_after = (code.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }

    /// 422 `validation_error` with the invalid fields.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let mut e = Self::new(ErrorCode::ValidationError, "the request has invalid fields");
        e.errors = errors;
        e
    }

    /// 422 `validation_error` naming one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    /// A 503 code with `Retry-After` (seconds, at least 1).
    pub fn unavailable(code: ErrorCode, detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(code, detail);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 500 `internal_error`; the cause is logged, never shown.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::new(ErrorCode::InternalError, "internal error")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
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
    code: ErrorCode,
    detail: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

/// A 5xx response's reason, a fixed word (the envelope's `code`), which
/// the request metric reads as its `error_type` label.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorType(pub(crate) &'static str);

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
        let mut response = (self.code.status(), Json(body)).into_response();
        if self.code.status().is_server_error() {
            // The request metric's `error_type` (see edge::context).
            response
                .extensions_mut()
                .insert(ErrorType(self.code.as_str()));
        }
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
            DbError::Conflict { .. } => {
                AppError::new(ErrorCode::Conflict, "conflicts with an existing resource")
            }
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
                    ErrorCode::Unavailable,
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
                ErrorCode::UpstreamTimeout,
                "the upstream did not answer in time",
            ),
            ApiError::CircuitOpen { retry_after, .. } => AppError::unavailable(
                ErrorCode::CircuitOpen,
                "the upstream is failing; not calling it for now",
                retry_secs(Some(*retry_after)),
            ),
            ApiError::NotConfigured { .. } => {
                AppError::unavailable(ErrorCode::NotConfigured, "no upstream is configured", 60)
            }
            ApiError::Closed { .. } => {
                AppError::unavailable(ErrorCode::Unavailable, "the server is shutting down", 1)
            }
            ApiError::Overloaded { .. } => AppError::unavailable(
                ErrorCode::Overloaded,
                "too many upstream requests in flight; try again",
                1,
            ),
            ApiError::InvalidRequest { .. } => AppError::internal(&error),
            _ => {
                tracing::warn!(error = %error_chain(&error), "upstream error");
                AppError::new(ErrorCode::UpstreamError, "the upstream answered badly")
            }
        }
    }
}
