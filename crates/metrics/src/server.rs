//! Inbound HTTP request metrics, for servers.

use std::time::Duration;

use metrics::Label;

use crate::names::HTTP_SERVER_DURATION;
use crate::operation::{method_label, status_code_label};

/// One served request, as `http_server_request_duration_seconds` labels it.
#[derive(Debug, Clone, Copy)]
pub struct ServedRequest<'a> {
    /// The route template (`/users/{user_id}`), never the raw path: a label
    /// per user id would grow without bound. `None` when no route matched
    /// (the series then has no `http_route`, as the conventions say).
    pub route: Option<&'a str>,
    /// The request method (normalised to a fixed set).
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The response status.
    pub status: u16,
    /// For a 5xx, a short fixed word saying why (`overloaded`, `timeout`,
    /// `unavailable`, …); `None` uses the status code, as the conventions
    /// do. Ignored below 500: a client error is not the server's.
    pub error_type: Option<&'static str>,
}

/// Records one served request in `http_server_request_duration_seconds`.
pub fn record_request(request: ServedRequest<'_>, elapsed: Duration) {
    let mut labels = Vec::with_capacity(5);
    labels.push(Label::new(
        "http_request_method",
        method_label(request.method),
    ));
    labels.push(Label::new("url_scheme", request.scheme));
    if let Some(route) = request.route {
        labels.push(Label::new("http_route", route.to_owned()));
    }
    let status = status_code_label(request.status);
    labels.push(Label::new("http_response_status_code", status));
    if request.status >= 500 {
        labels.push(Label::new(
            "error_type",
            request.error_type.unwrap_or(status),
        ));
    }
    metrics::histogram!(HTTP_SERVER_DURATION, labels).record(elapsed);
}
