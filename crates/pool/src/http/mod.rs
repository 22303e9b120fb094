//! [`HttpPool`]: pooled outbound HTTP/1.1 and HTTP/2 connections to one
//! upstream: plain HTTP/1.1 on hyper's connections directly (`h1.rs`),
//! TLS and HTTP/2 on hyper-util's client with rustls.

mod body;
mod counted;
mod h1;
mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_metrics::HttpPoolMetrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::stats::{PoolStats, Waiting};
pub use body::HttpBody;
use counted::Counting;
use h1::{H1Lane, LaneError};

/// Settings of an [`HttpPool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPoolConfig {
    /// The upstream's name: labels metrics and errors.
    pub name: String,
    /// Most requests (and so connections) in flight to the upstream at
    /// once; further callers wait. Default 100.
    pub max_connections: u32,
    /// Idle connections are closed after this long. Keep it below the
    /// upstream's keep-alive timeout, or a reused connection may be closed
    /// under a request. Default 20 s.
    pub idle_timeout: Duration,
    /// Time allowed to open a TCP connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Verify the upstream's certificate. Default true; false is the
    /// design's `SSL_VERIFY=false`, for test rigs only.
    pub tls_verify: bool,
    /// A PEM file of CA certificates to trust instead of the bundled
    /// Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The upstream's host, for the `server_address` metric label.
    /// Default: the name.
    pub server_address: String,
    /// The upstream's port, for the `server_port` metric label. Default 0.
    pub server_port: u16,
}

impl HttpPoolConfig {
    /// Defaults for the upstream `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            server_address: name.clone(),
            server_port: 0,
            name,
            max_connections: 100,
            idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            tls_verify: true,
            ca_file: None,
        }
    }
}

type Connector = HttpsConnector<Counting<HttpConnector>>;

/// Pooled connections to one upstream, HTTP/1.1 with keep-alive and HTTP/2
/// where the upstream offers it (ALPN). Clones share the pool.
#[derive(Clone)]
pub struct HttpPool {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    client: Client<Connector, Full<Bytes>>,
    /// Plain-HTTP/1.1 connections to the host of the first plain-HTTP
    /// request; requests to any other origin go through `client`.
    lane: OnceLock<H1Lane>,
    plain: Counting<HttpConnector>,
    idle_timeout: Duration,
    permits: Arc<Semaphore>,
    max: u32,
    open: Arc<AtomicU32>,
    waiting: AtomicU32,
    metrics: HttpPoolMetrics,
}

impl std::fmt::Debug for HttpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPool")
            .field("name", &self.inner.name)
            .field("max", &self.inner.max)
            .finish_non_exhaustive()
    }
}

/// A request failed before any response arrived.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *connect { "cannot connect to the upstream" } else { "the upstream connection failed" })]
pub struct SendError {
    /// Whether it failed while connecting (nothing was sent).
    pub connect: bool,
    #[source]
    source: h1::BoxError,
}

/// One of the pool's request slots, reserved ahead of sending: a caller
/// that retries keeps one slot for all its attempts, so that queueing for
/// local capacity is never part of an attempt (nor of its timeout).
#[derive(Debug)]
pub struct HttpSlot {
    _permit: OwnedSemaphorePermit,
}

impl HttpPool {
    /// Builds the pool. Connections open on first use, so an upstream that
    /// is down at start-up does not stop the caller from starting.
    pub fn new(config: &HttpPoolConfig) -> Result<Self> {
        if config.max_connections == 0 {
            return Err(Error::config("max_connections", "must be at least 1"));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let open = Arc::new(AtomicU32::new(0));
        let tls = tls::client_config(config.tls_verify, config.ca_file.as_deref())?;
        let plain = Counting {
            inner: http,
            open: open.clone(),
        };
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(plain.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_connections as usize)
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                client,
                lane: OnceLock::new(),
                plain,
                idle_timeout: config.idle_timeout,
                permits: Arc::new(Semaphore::new(config.max_connections as usize)),
                max: config.max_connections,
                open,
                waiting: AtomicU32::new(0),
                metrics: HttpPoolMetrics::new(&config.server_address, config.server_port),
            }),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Waits for `first` (another local limit, such as a process-wide
    /// in-flight cap; `async {}` for none), then for one of the pool's
    /// slots. The whole wait is the pool's wait time and its callers count
    /// as waiting meanwhile, also when the wait is cancelled.
    pub async fn slot_behind<F: Future>(&self, first: F) -> Result<(F::Output, HttpSlot)> {
        let inner = &self.inner;
        let waiting = Waiting::new(&inner.waiting);
        let started = Instant::now();
        let first = first.await;
        let permit = inner.permits.clone().acquire_owned().await;
        drop(waiting);
        inner.metrics.waited(started.elapsed());
        // The semaphore is closed only by `close`.
        let permit = permit.map_err(|_| Error::Closed {
            name: inner.name.clone(),
        })?;
        Ok((first, HttpSlot { _permit: permit }))
    }

    /// Stops lending slots (callers get [`Error::Closed`]) and waits until
    /// every request in flight has returned its slot. Idle connections
    /// close when the last clone of the pool is dropped.
    pub async fn close(&self) {
        let inner = &self.inner;
        // Holding every slot means nothing is in flight; `forget` keeps
        // them taken, and closing wakes every caller still queued.
        if let Ok(all) = inner.permits.acquire_many(inner.max).await {
            all.forget();
        }
        inner.permits.close();
        if let Some(lane) = inner.lane.get() {
            lane.close_idle();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.permits.is_closed()
    }

    /// Sends a request once (no retries: those are the caller's policy) in
    /// a slot reserved with [`slot_behind`](Self::slot_behind); keep the
    /// slot until the body is read. Read the body to its end: that gives a
    /// plain-HTTP/1.1 connection back to the pool (dropping it earlier
    /// closes the connection).
    pub async fn send_in(
        &self,
        _slot: &HttpSlot,
        request: Request<Full<Bytes>>,
    ) -> std::result::Result<Response<HttpBody>, SendError> {
        let inner = &self.inner;
        let lane = match inner.lane.get() {
            Some(lane) => Some(lane),
            // Bound by the first plain-HTTP request (an HTTPS one binds
            // nothing).
            None => H1Lane::new(request.uri(), inner.plain.clone(), inner.idle_timeout)
                .map(|lane| inner.lane.get_or_init(|| lane)),
        }
        .filter(|lane| lane.serves(request.uri()));
        if let Some(lane) = lane {
            // Boxed: see SqlPool::acquire.
            return match Box::pin(lane.send(request)).await {
                Ok((response, lease)) => Ok(response.map(|body| HttpBody::leased(body, lease))),
                Err(LaneError::Connect(source)) => Err(SendError {
                    connect: true,
                    source,
                }),
                Err(LaneError::Transport(source)) => Err(SendError {
                    connect: false,
                    source,
                }),
            };
        }
        // Boxed: hyper-util's request future is large (see SqlPool::acquire).
        match Box::pin(inner.client.request(request)).await {
            Ok(response) => Ok(response.map(HttpBody::plain)),
            Err(source) => Err(SendError {
                connect: source.is_connect(),
                source: Box::new(source),
            }),
        }
    }

    /// Open connections (`size`), requests in flight (`in_use`), idle
    /// connections (`size - in_use`, floored at 0: an HTTP/2 connection
    /// carries several requests), the limit and the waiting callers.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let in_use = inner.max
            - u32::try_from(inner.permits.available_permits())
                .unwrap_or(inner.max)
                .min(inner.max);
        let size = inner.open.load(Ordering::Relaxed);
        let stats = PoolStats {
            size,
            idle: size.saturating_sub(in_use),
            in_use,
            max: inner.max,
            waiting: inner.waiting.load(Ordering::Relaxed),
        };
        inner
            .metrics
            .sizes(stats.in_use.min(size), stats.idle, stats.waiting);
        stats
    }
}
