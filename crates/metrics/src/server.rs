//! Inbound HTTP request metrics, for servers.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::RwLock;

use metrics::{Histogram, Label};

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

/// The handles of `http_server_request_duration_seconds`, registered on
/// first use of each label set and kept, so that recording a request is a
/// lookup by route and a scan of that route's few label sets, not a new
/// key built, sorted and hashed by the recorder every time.
///
/// Create one per server after installing the recorder (handles belong to
/// the recorder installed when they are registered). Every part of the
/// label set comes from a fixed set or a route template, so the map stays
/// small.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    handles: RwLock<Routes>,
}

/// The handles of each route (`""` for no route), by label set.
/// Keyed by route template: foldhash, not SipHash, as this map is read on
/// every request and its keys are the router's own templates.
type Routes = HashMap<Box<str>, Vec<(LabelSet, Histogram)>, foldhash::fast::RandomState>;

/// (method, scheme, status, error type) of one series of a route.
type LabelSet = (&'static str, &'static str, u16, Option<&'static str>);

impl ServerMetrics {
    /// An empty set of handles.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one served request in `http_server_request_duration_seconds`.
    pub fn record(&self, request: ServedRequest<'_>, elapsed: Duration) {
        let method = method_label(request.method);
        let error_type = (request.status >= 500).then(|| {
            request
                .error_type
                .unwrap_or(status_code_label(request.status))
        });
        let set: LabelSet = (method, request.scheme, request.status, error_type);
        let route = request.route.unwrap_or("");
        {
            let handles = match self.handles.read() {
                Ok(handles) => handles,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some((_, handle)) = handles
                .get(route)
                .and_then(|sets| sets.iter().find(|(s, _)| *s == set))
            {
                handle.record(elapsed);
                return;
            }
        }
        let handle = register(request.route, set);
        handle.record(elapsed);
        let mut handles = match self.handles.write() {
            Ok(handles) => handles,
            Err(poisoned) => poisoned.into_inner(),
        };
        let sets = handles.entry(Box::from(route)).or_default();
        if !sets.iter().any(|(s, _)| *s == set) {
            sets.push((set, handle));
        }
    }
}

fn register(route: Option<&str>, (method, scheme, status, error_type): LabelSet) -> Histogram {
    let mut labels = Vec::with_capacity(5);
    labels.push(Label::new("http_request_method", method));
    labels.push(Label::new("url_scheme", scheme));
    if let Some(route) = route {
        labels.push(Label::new("http_route", route.to_owned()));
    }
    labels.push(Label::new(
        "http_response_status_code",
        status_code_label(status),
    ));
    if let Some(error_type) = error_type {
        labels.push(Label::new("error_type", error_type));
    }
    metrics::histogram!(HTTP_SERVER_DURATION, labels)
}
