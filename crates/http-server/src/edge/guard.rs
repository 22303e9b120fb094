//! Request validators (tower-http's `ValidateRequest` trait, run by
//! [`ApiGuard`](crate::edge::admit::ApiGuard)) and the answers the edge
//! gives on its own: a declared body over the limit (413), a missing or
//! wrong bearer token (401), a shed or timed-out request (503), a
//! panicking handler (500). Every one is the contract's envelope.

use std::any::Any;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use sluice_pool::Secret;
use subtle::ConstantTimeEq;
use tower_http::validate_request::ValidateRequest;

use crate::error::{AppError, ErrorCode};

/// Refuses with 413, before reading a byte of it, a body whose declared
/// `Content-Length` is over the limit. Chunked bodies are counted as they
/// are read (axum's `DefaultBodyLimit`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeclaredLength {
    pub(crate) max: usize,
}

impl<B> ValidateRequest<B> for DeclaredLength {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > self.max as u64 => Err(too_large().into_response()),
            _ => Ok(()),
        }
    }
}

/// 413 `payload_too_large`.
pub(crate) fn too_large() -> AppError {
    AppError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
}

/// `Authorization: Bearer <token>` naming one of the configured tokens.
/// The scheme is case-insensitive (RFC 9110 §11.1); tokens are compared
/// in constant time, and every token is compared so that the time does
/// not tell which one matched. Applied only to the API routes
/// ([`ApiGuardLayer`](crate::edge::admit::ApiGuardLayer)).
#[derive(Clone)]
pub(crate) struct BearerAuth {
    pub(crate) tokens: Arc<[Secret<String>]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The credentials of an `Authorization: Bearer …` header value.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

impl BearerAuth {
    fn allows(&self, given: &[u8]) -> bool {
        self.tokens.iter().fold(false, |found, token| {
            found | bool::from(token.expose().as_bytes().ct_eq(given))
        })
    }
}

impl<B> ValidateRequest<B> for BearerAuth {
    type ResponseBody = Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response> {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_credentials(v.as_bytes()));
        if given.is_some_and(|token| self.allows(token)) {
            return Ok(());
        }
        let mut response =
            AppError::new(ErrorCode::Unauthorized, "a valid bearer token is required")
                .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(response)
    }
}

/// 503 `timeout`: the request was not answered within `request_timeout`.
pub(crate) fn timed_out() -> Response {
    AppError::unavailable(ErrorCode::Timeout, "the request took too long", 1).into_response()
}

/// 500 `internal_error`, saying nothing more.
pub(crate) fn internal_error() -> Response {
    AppError::new(ErrorCode::InternalError, "internal error").into_response()
}

/// A handler panicked: 500 in the envelope, the panic message logged with
/// the request id (the request span is still open), and the process keeps
/// serving.
pub(crate) fn panicked(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    tracing::error!(
        request_id = %crate::error::current_request_id(),
        panic = %message,
        "a handler panicked"
    );
    internal_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"BEARER  abc "), Some(&b"abc"[..]));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerabc",
            b"",
            b"Bear",
        ] {
            assert_eq!(bearer_credentials(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_token_is_compared() {
        let auth = BearerAuth {
            tokens: Arc::from(vec![
                Secret::new("one".to_owned()),
                Secret::new("two".to_owned()),
            ]),
        };
        assert!(auth.allows(b"one") && auth.allows(b"two"));
        assert!(!auth.allows(b"three") && !auth.allows(b"on") && !auth.allows(b""));
        assert!(!format!("{auth:?}").contains("one"));
    }
}
