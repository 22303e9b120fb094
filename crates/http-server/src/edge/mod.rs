//! The HTTP edge: the tower layers every request passes through, and the
//! connection-level limits of [`serve`](crate::serve).
//!
//! Every route, probes and fallbacks included, is wrapped once (one
//! `Router::layer`) in, outermost first:
//! 1. [`context::RequestContextLayer`]: request id, span, access log,
//!    server metric;
//! 2. tower-http `CatchPanicLayer`: a panicking handler answers 500 in the
//!    envelope and the process keeps serving;
//! 3. tower `TimeoutLayer` (with axum's `HandleErrorLayer`): 503 `timeout`
//!    past `request_timeout`;
//! 4. tower-http `ValidateRequestHeaderLayer` ([`guard::DeclaredLength`]):
//!    413 for a declared body over the limit, and axum's `DefaultBodyLimit`
//!    for bodies that turn out larger as they are read.
//!
//! The API routes (everything but `/healthz`, `/readyz`, `/metrics`) are
//! wrapped once more, as a `route_layer`, in:
//! 5. [`guard::BearerAuth`] as a `ValidateRequestHeaderLayer`, only when
//!    tokens are configured;
//! 6. tower `LoadShedLayer` over a `GlobalConcurrencyLimitLayer`: past
//!    `max_concurrency` requests at once, 503 `overloaded` at once instead
//!    of a queue. The probes are never shed and never need a token.
//!
//! Request bodies also have a deadline of their own (tower-http's
//! `DeadlineBody`, `body_read_timeout`), applied where `serve` hands the
//! request to the router; a body that misses it is 408.

pub(crate) mod connection;
pub(crate) mod context;
pub(crate) mod guard;
