//! [`ApiGuardLayer`]: the declared body size of every request, then the
//! bearer token and load shedding of the API routes, as one layer of the
//! edge's stack.
//!
//! These were tower-http's `ValidateRequestHeaderLayer` and tower's
//! `LoadShedLayer` over a `GlobalConcurrencyLimitLayer`, applied with
//! `Router::route_layer`. That wrapped every route a second time: axum
//! boxes and clones a route's service per layer call, and the four
//! futures nested inside it cost 3,600 instructions per request, 7% of a
//! `GET /external-data/{id}` (callgrind). Here the same checks run inside
//! the edge's one wrap: the route template (axum's `MatchedPath`, set by
//! the router before the edge runs) says whether a request is for an API
//! route. The body-size check was tower-http's `ValidateRequestHeaderLayer`
//! around this one; it runs here first, for every route, for the same
//! reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};
use tower_http::validate_request::ValidateRequest;

use crate::edge::guard::{BearerAuth, DeclaredLength};
use crate::error::{AppError, ErrorCode};

/// The routes that need no token and are never shed (the contract's
/// probes).
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Whether `request` is for an API route: one the router matched (an
/// unknown path is a 404 for anyone) that is not a probe. A known path
/// with a method it does not take is an API route too: like every API
/// route, it needs the token before it answers 405.
fn is_api_route(request: &Request) -> bool {
    request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|route| !PROBES.contains(&route.as_str()))
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct ApiGuardLayer {
    declared: DeclaredLength,
    auth: Option<BearerAuth>,
    capacity: Arc<Semaphore>,
}

impl ApiGuardLayer {
    /// Answers 413 for a body declared larger than `declared` allows on
    /// any route; on API routes, requires a token from `auth` when set,
    /// and answers 503 `overloaded` at once when every permit of
    /// `capacity` is taken.
    pub(crate) fn new(
        declared: DeclaredLength,
        auth: Option<BearerAuth>,
        capacity: Arc<Semaphore>,
    ) -> Self {
        Self {
            declared,
            auth,
            capacity,
        }
    }
}

impl<S> Layer<S> for ApiGuardLayer {
    type Service = ApiGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiGuard {
            inner,
            declared: self.declared,
            auth: self.auth.clone(),
            capacity: self.capacity.clone(),
        }
    }
}

/// The service of [`ApiGuardLayer`].
#[derive(Debug, Clone)]
pub(crate) struct ApiGuard<S> {
    inner: S,
    declared: DeclaredLength,
    auth: Option<BearerAuth>,
    capacity: Arc<Semaphore>,
}

impl<S> Service<Request> for ApiGuard<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Err(refused) = self.declared.validate(&mut request) {
            return Guarded::Refused {
                response: Some(refused),
            };
        }
        if !is_api_route(&request) {
            return Guarded::Admitted {
                inner: self.inner.call(request),
                permit: None,
            };
        }
        if let Some(auth) = self.auth.as_mut()
            && let Err(refused) = auth.validate(&mut request)
        {
            return Guarded::Refused {
                response: Some(refused),
            };
        }
        match self.capacity.clone().try_acquire_owned() {
            Ok(permit) => Guarded::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(_) => Guarded::Refused {
                response: Some(
                    AppError::unavailable(ErrorCode::Overloaded, "the server is at capacity", 1)
                        .into_response(),
                ),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ApiGuard`]: the route's, holding its
    /// capacity permit until the response is ready (as tower's concurrency
    /// limit does), or the refusal.
    #[project = GuardedProjection]
    pub(crate) enum Guarded<F> {
        Admitted {
            #[pin]
            inner: F,
            permit: Option<OwnedSemaphorePermit>,
        },
        Refused {
            response: Option<Response>,
        },
    }
}

impl<F, E> Future for Guarded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardedProjection::Admitted { inner, permit } => {
                let response = ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(response)
            }
            GuardedProjection::Refused { response } => Poll::Ready(Ok(response
                .take()
                // Polled again after it answered: a bug in the caller.
                .unwrap_or_else(|| {
                    AppError::new(ErrorCode::InternalError, "internal error").into_response()
                }))),
        }
    }
}
