//! Inbound HTTP request metrics, for servers.

use std::time::Duration;

use crate::names::HTTP_SERVER_DURATION;
use crate::operation::{method_label, status_class};

/// Records one served request in `http_server_request_duration_seconds`.
///
/// `route` must be the route template (`/users/{user_id}`), never the raw
/// path: a label per user id would grow without bound. Requests that
/// matched no route should pass a fixed word such as `"unmatched"`.
pub fn record_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    metrics::histogram!(
        HTTP_SERVER_DURATION,
        "route" => route.to_owned(),
        "method" => method_label(method),
        "status_class" => status_class(Some(status)),
    )
    .record(elapsed);
}
