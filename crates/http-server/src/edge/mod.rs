//! The HTTP edge: the tower layers every request passes through, and the
//! connection-level limits of [`serve`](crate::serve).
//!
//! Every route, probes and fallbacks included, is wrapped once (one
//! `Router::layer`) in, outermost first:
//! 1. [`context::RequestContextLayer`]: request id, span, access log,
//!    server metric; a panicking handler answers 500 in the envelope and
//!    the process keeps serving; past `request_timeout`, 503 `timeout`;
//! 2. axum's `DefaultBodyLimit`: 413 for a body that turns out larger than
//!    the limit as it is read;
//! 3. [`admit::ApiGuardLayer`]: first, for every route, 413 for a body
//!    declared (`Content-Length`) over the limit ([`guard::DeclaredLength`]),
//!    before a byte of it is read; then, for the API routes only (every
//!    matched route but `/healthz`, `/readyz`, `/metrics`), the bearer
//!    token ([`guard::BearerAuth`]) when tokens are configured, then load
//!    shedding: past `max_concurrency` requests at once, 503 `overloaded`
//!    at once instead of a queue. The probes are never shed and never need
//!    a token; an unknown path is a 404 without one.
//!
//! Three layers, not seven: the panic guard, the timeout (with the error
//! handler it needed) and the declared-length check were tower's and
//! tower-http's layers, folded into these to spare a proxied request
//! 1,600 of its 60,000 instructions (callgrind, `GET /external-data/{id}`).
//!
//! One wrap, not two: these were a second `Router::route_layer` of tower's
//! and tower-http's layers, which cost 7% of a proxied request's
//! instructions (see `admit.rs`).
//!
//! Request bodies also have a deadline of their own (tower-http's
//! `DeadlineBody`, `body_read_timeout`), applied where `serve` hands the
//! request to the router; a body that misses it is 408.

pub(crate) mod admit;
pub(crate) mod connection;
pub(crate) mod context;
pub(crate) mod guard;
