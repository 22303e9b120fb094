//! [`ApiRequest`] and [`ApiResponse`].

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Result};
use crate::path::ApiPath;

/// One request to an upstream, relative to its base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub(crate) method: Method,
    pub(crate) path: ApiPath,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Bytes>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idempotent: bool,
}

impl ApiRequest {
    /// A request with `method` to `path`. GET, HEAD, PUT, DELETE, OPTIONS
    /// and TRACE are idempotent (retried on transient failures); POST and
    /// PATCH are not unless marked with [`idempotent`](Self::idempotent).
    pub fn new(method: Method, path: ApiPath) -> Self {
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        );
        Self {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            timeout: None,
            idempotent,
        }
    }

    /// A GET of `path`.
    pub fn get(path: ApiPath) -> Self {
        Self::new(Method::GET, path)
    }

    /// Adds a query parameter (form-encoded).
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Adds a header for this request only.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json<T: Serialize + ?Sized>(
        mut self,
        body: &T,
    ) -> std::result::Result<Self, serde_json::Error> {
        self.body = Some(Bytes::from(serde_json::to_vec(body)?));
        self.headers
            .push(("content-type".into(), "application/json".into()));
        Ok(self)
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A deadline for this call, retries included, instead of the
    /// upstream's default.
    pub fn timeout(mut self, deadline: Duration) -> Self {
        self.timeout = Some(deadline);
        self
    }

    /// Declares a non-idempotent method safe to retry (the upstream
    /// deduplicates it, say with an idempotency key).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The key under which identical concurrent requests share one call:
    /// only body-less GETs without per-request headers coalesce.
    pub(crate) fn coalescing_key(&self) -> Option<String> {
        if self.method != Method::GET || self.body.is_some() || !self.headers.is_empty() {
            return None;
        }
        Some(self.target())
    }

    /// Path and encoded query, as sent.
    pub(crate) fn target(&self) -> String {
        let mut target = String::with_capacity(self.path.as_str().len());
        self.write_target(&mut target);
        target
    }

    /// Appends the path and encoded query, as sent, to `out`: the URI is
    /// built in one string, without a copy of the target of its own.
    pub(crate) fn write_target(&self, out: &mut String) {
        out.push_str(self.path.as_str());
        if !self.query.is_empty() {
            out.push('?');
            let start = out.len();
            url::form_urlencoded::Serializer::for_suffix(out, start).extend_pairs(&self.query);
        }
    }
}

/// Whether a `Content-Type` value declares JSON: its media type, without
/// parameters and in any case, is `application/json` or ends in `+json`.
/// Compared without a lowercase copy.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .len()
            .checked_sub(5)
            .and_then(|at| essence.get(at..))
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// What the upstream answered.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub(crate) upstream: std::sync::Arc<str>,
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, read in full (within the size limit).
    pub body: Bytes,
}

impl ApiResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `Content-Type`, or `""`.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON of type `T`. A body that is not declared JSON
    /// (`application/json` or `+json`) is [`ApiError::NotJson`] naming its
    /// content type; JSON that does not parse is [`ApiError::InvalidJson`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let content_type = self.content_type();
        if !is_json_content_type(content_type) {
            return Err(ApiError::NotJson {
                upstream: self.upstream.clone(),
                content_type: content_type.to_owned(),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| ApiError::InvalidJson {
            upstream: self.upstream.clone(),
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content_type: &str, body: &'static str) -> ApiResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(content_type).expect("a valid header value"),
        );
        ApiResponse {
            upstream: "test".into(),
            status: 200,
            headers,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn the_target_encodes_the_query_after_the_path() {
        let path = ApiPath::new().push("data").push("a b");
        assert_eq!(ApiRequest::get(path.clone()).target(), "/data/a%20b");
        let request = ApiRequest::get(path)
            .query("q", "x&y=z")
            .query("page", "2 3");
        assert_eq!(request.target(), "/data/a%20b?q=x%26y%3Dz&page=2+3");
        let mut uri = String::from("http://up:8080/base");
        request.write_target(&mut uri);
        assert_eq!(uri, "http://up:8080/base/data/a%20b?q=x%26y%3Dz&page=2+3");
    }

    #[test]
    fn json_bodies_are_recognised_by_content_type_in_any_case() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/problem+json ",
            "application/VND.API+JSON",
        ] {
            let value: serde_json::Value = response(json, r#"{"a":1}"#)
                .json()
                .unwrap_or_else(|e| panic!("{json:?}: {e}"));
            assert_eq!(value["a"], 1, "{json:?}");
        }
        for other in [
            "text/plain",
            "application/jsonx",
            "json",
            "",
            "text/json+html",
        ] {
            let error = response(other, r#"{"a":1}"#)
                .json::<serde_json::Value>()
                .expect_err(other);
            assert!(
                matches!(&error, ApiError::NotJson { content_type, .. } if content_type == other),
                "{other:?}: {error:?}"
            );
        }
        assert!(matches!(
            response("application/json", "{").json::<serde_json::Value>(),
            Err(ApiError::InvalidJson { .. })
        ));
    }
}
