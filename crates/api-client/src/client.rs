//! [`ApiClient`]: requests to one upstream under its resilience policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use sluice_metrics::{Backend, ConnectionMetrics, ErrorClass, OpKind, Registry, ResilienceMetrics};
use sluice_pool::{HttpPool, HttpPoolConfig, HttpSlot};
use sluice_retry::{
    BudgetConfig, CircuitBreaker, CircuitState, Failure, GiveUp, Policy, RetryBudget, RetryError,
};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::{ConfigError, UpstreamConfig};
use crate::error::{ApiError, Result};
use crate::path::ApiPath;
use crate::request::{ApiRequest, ApiResponse};

/// The default process-wide cap on upstream requests in flight (the
/// design's `IO_MAX_CONCURRENT_REQUESTS`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;

/// A process-wide in-flight slot, held until the call ends (dropping it
/// returns the slot).
enum InFlightSlot<'a> {
    Taken { _permit: SemaphorePermit<'a> },
    Admitted { _permit: OwnedSemaphorePermit },
}

/// A client of one named upstream. Clones share everything: connections,
/// breaker, budget, in-flight limit and coalescing.
#[derive(Clone)]
pub struct ApiClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The upstream's host: the client span's `server.address`.
    server_address: Arc<str>,
    pub(crate) name: Arc<str>,
    /// The base URL, split once: each request's URI is built from its
    /// parts and the request's target, without parsing the origin again.
    base: BaseUri,
    headers: Vec<(HeaderName, HeaderValue)>,
    pool: HttpPool,
    pub(crate) limiter: Arc<Semaphore>,
    retrying: Policy,
    once: Policy,
    breaker: CircuitBreaker,
    pub(crate) config: UpstreamConfig,
    pub(crate) metrics: ConnectionMetrics,
    in_flight: InFlight,
    /// Batches take turns here to ask `limiter` for a slot, one slot per
    /// turn (tokio's mutex is first come, first served): see `batch.rs`.
    pub(crate) batch_turns: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers are left out: their values are secrets.
        f.debug_struct("ApiClient")
            .field("name", &self.inner.name)
            .field("base_url", &self.inner.config.base_url.as_str())
            .finish_non_exhaustive()
    }
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.to_string(),
    }
}

impl ApiClient {
    /// A client with its own in-flight limit of [`DEFAULT_MAX_IN_FLIGHT`].
    pub fn new(config: UpstreamConfig) -> std::result::Result<Self, ConfigError> {
        Self::with_limiter(
            config,
            Arc::new(Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
            Registry::global(),
        )
    }

    /// A client whose requests share `limiter` with every other client
    /// given it: pass one semaphore of `IO_MAX_CONCURRENT_REQUESTS` permits
    /// to all clients of a process, and ten concurrent batches cannot
    /// multiply the load. Records into `registry`.
    pub fn with_limiter(
        config: UpstreamConfig,
        limiter: Arc<Semaphore>,
        registry: &Registry,
    ) -> std::result::Result<Self, ConfigError> {
        config.validate()?;
        let mut headers = Vec::with_capacity(config.headers.len());
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| invalid("headers", e))?;
            let mut value = HeaderValue::try_from(value.expose().as_str())
                .map_err(|e| invalid("headers", e))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        // `validate` checked that the URL has a host.
        let server_address = config.base_url.host_str().unwrap_or_default().to_owned();
        let server_port = config.base_url.port_or_known_default().unwrap_or(0);
        let pool = HttpPool::new(&HttpPoolConfig {
            name: config.name.clone(),
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            connect_timeout: config.timeout,
            tls_verify: config.ssl_verify,
            ca_file: config.ca_file.clone(),
            server_address: server_address.clone(),
            server_port,
        })
        .map_err(|e| invalid("pool", e))?;
        let resilience = ResilienceMetrics::new(Backend::Http, &config.name);
        let breaker = CircuitBreaker::with_metrics(config.breaker, resilience.clone())
            .map_err(|e| invalid("breaker", e))?;
        let budget =
            RetryBudget::try_new(BudgetConfig::default()).map_err(|e| invalid("budget", e))?;
        let policy = |attempts: u32, deadline: Duration| {
            Policy::builder()
                .attempts(attempts)
                .base_delay(config.retry_delay)
                .attempt_timeout(config.timeout)
                .deadline(deadline)
                .shared_breaker(breaker.clone())
                .shared_budget(budget.clone())
                .metrics(resilience.clone())
                .build()
                .map_err(|e| invalid("retry", e))
        };
        let retrying = policy(config.retry_attempts.max(1), config.deadline)?;
        let once = policy(1, config.deadline)?;
        let base = BaseUri::parse(config.base_url.as_str()).map_err(|e| invalid("base_url", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                server_address: Arc::from(server_address.as_str()),
                name: Arc::from(config.name.as_str()),
                base,
                headers,
                pool,
                limiter,
                retrying,
                once,
                breaker,
                metrics: {
                    let metrics = registry.connection(Backend::Http, &config.name);
                    metrics.set_server(&server_address, server_port);
                    metrics
                },
                config,
                in_flight: InFlight::default(),
                batch_turns: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    /// The breaker's state: `closed`, `open` or `half_open`.
    pub fn circuit(&self) -> CircuitState {
        self.inner.breaker.state()
    }

    /// The connection pool's stats.
    pub fn pool_stats(&self) -> sluice_pool::PoolStats {
        self.inner.pool.stats()
    }

    /// Stops sending (new requests fail with [`ApiError::Closed`]) and
    /// waits until every request in flight has finished. Idempotent.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Identical GETs being answered right now (entries of the coalescing
    /// map): zero once every caller has its answer or is gone.
    pub fn coalesced_in_flight(&self) -> usize {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Sends `request` under the upstream's policy. Idempotent requests are
    /// retried on transient failures (connect errors, timeouts, 429, 502,
    /// 503, 504), honouring `Retry-After`, within the call's deadline.
    /// Identical concurrent GETs share one upstream call.
    ///
    /// Returns the upstream's answer for any status except a transient one
    /// that outlasted the retries, which is [`ApiError::Status`].
    pub async fn request(&self, request: ApiRequest) -> Result<ApiResponse> {
        self.send(request, None).await
    }

    /// [`request`](Self::request), with its process-wide in-flight slot
    /// already taken when `admitted` is set (by [`batch`](Self::batch),
    /// which admits its requests one at a time).
    pub(crate) async fn send(
        &self,
        request: ApiRequest,
        admitted: Option<OwnedSemaphorePermit>,
    ) -> Result<ApiResponse> {
        match request.coalescing_key() {
            Some(key) => self.coalesced(key, request, admitted).await,
            None => self.call(request, admitted).await,
        }
    }

    /// GETs `path` and decodes a 2xx JSON body as `T`; any other status is
    /// [`ApiError::Status`].
    pub async fn get_json<T: DeserializeOwned>(&self, path: ApiPath) -> Result<T> {
        let response = self.request(ApiRequest::get(path)).await?;
        if !response.is_success() {
            return Err(ApiError::Status {
                upstream: self.inner.name.clone(),
                status: response.status,
                retry_after: None,
            });
        }
        response.json()
    }

    async fn coalesced(
        &self,
        key: String,
        request: ApiRequest,
        admitted: Option<OwnedSemaphorePermit>,
    ) -> Result<ApiResponse> {
        let joined = Joined::join(&self.inner.in_flight, key);
        // If the caller running the call is cancelled, the next waiter runs
        // it. (A batch's slot is held while it waits for another caller's
        // identical call: briefly one slot more than needed, never more
        // than the limit.)
        joined
            .cell()
            .get_or_init(|| self.call(request, admitted))
            .await;
        joined.into_answer()
    }

    async fn call(
        &self,
        request: ApiRequest,
        admitted: Option<OwnedSemaphorePermit>,
    ) -> Result<ApiResponse> {
        let policy = if request.idempotent {
            &self.inner.retrying
        } else {
            &self.inner.once
        };
        let deadline = request.timeout.unwrap_or(self.inner.config.deadline);
        // Queueing for local capacity is not an upstream failure: the
        // process-wide in-flight slot and one of the upstream's connection
        // slots are taken before the first attempt, bounded by the deadline
        // only, and kept for every attempt. So a wait never uses up an
        // attempt's timeout, never counts against the breaker and is never
        // retried.
        let queued = Instant::now();
        let limiter = &self.inner.limiter;
        // The semaphore is never closed; acquiring only waits.
        let wait = self.inner.pool.slot_behind(async {
            match admitted {
                Some(_permit) => Some(InFlightSlot::Admitted { _permit }),
                None => limiter
                    .acquire()
                    .await
                    .ok()
                    .map(|_permit| InFlightSlot::Taken { _permit }),
            }
        });
        let (_in_flight, slot) = match tokio::time::timeout(deadline, wait).await {
            Ok(Ok(slots)) => slots,
            Ok(Err(_closed)) => {
                return Err(ApiError::Closed {
                    upstream: self.inner.name.clone(),
                });
            }
            Err(_) => {
                return Err(ApiError::Overloaded {
                    upstream: self.inner.name.clone(),
                    waited: queued.elapsed(),
                });
            }
        };
        let remaining = deadline.saturating_sub(queued.elapsed());
        policy
            .run_within(remaining, |_| self.attempt(&request, &slot))
            .await
            .map_err(|e| self.give_up(e))
    }

    fn give_up(&self, error: RetryError<ApiError>) -> ApiError {
        let upstream = self.inner.name.clone();
        if error.reason() == GiveUp::CircuitOpen && error.attempts() == 0 {
            return ApiError::CircuitOpen {
                upstream,
                retry_after: error.retry_after().unwrap_or_default(),
            };
        }
        match error.last() {
            Some(Failure::Timeout(after)) => ApiError::Timeout {
                upstream,
                after: *after,
            },
            Some(Failure::Error(e)) => e.clone(),
            None => ApiError::CircuitOpen {
                upstream,
                retry_after: error.retry_after().unwrap_or_default(),
            },
        }
    }

    fn build(&self, request: &ApiRequest) -> Result<Request<Full<Bytes>>> {
        let invalid = |reason: String| ApiError::InvalidRequest {
            upstream: self.inner.name.clone(),
            reason,
        };
        let base = &self.inner.base;
        // Sized for a query-less target, the common case.
        let mut target = String::with_capacity(base.path.len() + request.path.as_str().len());
        target.push_str(&base.path);
        request.write_target(&mut target);
        // An empty path (the health check's `ApiPath::new()` on a base
        // without one) is the root, as in `http://host/`.
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        let target = PathAndQuery::try_from(target).map_err(|e| invalid(e.to_string()))?;
        let mut uri = uri::Parts::default();
        uri.scheme = Some(base.scheme.clone());
        uri.authority = Some(base.authority.clone());
        uri.path_and_query = Some(target);
        let uri = Uri::from_parts(uri).map_err(|e| invalid(e.to_string()))?;
        // Built in place rather than through `Request::builder()`, which
        // moves its whole `Parts` through every call (about 1,000
        // instructions of a proxied request, callgrind).
        let mut http_request = Request::new(Full::new(request.body.clone().unwrap_or_default()));
        *http_request.method_mut() = request.method.clone();
        *http_request.uri_mut() = uri;
        let headers = http_request.headers_mut();
        for (name, value) in &self.inner.headers {
            headers.append(name.clone(), value.clone());
        }
        for (name, value) in &request.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| invalid(format!("invalid value for header {name}")))?;
            headers.append(name, value);
        }
        Ok(http_request)
    }

    async fn attempt(&self, request: &ApiRequest, slot: &HttpSlot) -> Result<ApiResponse> {
        let mut http_request = self.build(request)?;
        let started = Instant::now();
        let kind = if matches!(request.method, Method::GET | Method::HEAD) {
            OpKind::Read
        } else {
            OpKind::Write
        };
        // One client span per attempt, with OpenTelemetry's attributes;
        // its context goes out as `traceparent` when tracing is on.
        let span = tracing::debug_span!(
            "http_client",
            otel.name = request.method.as_str(),
            otel.kind = "client",
            http.request.method = request.method.as_str(),
            server.address = &*self.inner.server_address,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if sluice_metrics::trace_context::enabled() {
            inject_trace_context(&span, http_request.headers_mut());
        }
        let outcome =
            tracing::Instrument::instrument(self.exchange(slot, http_request), span.clone()).await;
        match &outcome {
            Ok(response) => {
                span.record("http.response.status_code", response.status);
            }
            Err(e) => {
                span.record("error.type", e.error_class());
            }
        }
        let response = outcome
            .as_ref()
            .map(|r| r.status)
            .map_err(ErrorClass::error_class);
        self.inner
            .metrics
            .record_http_since(kind, request.method.as_str(), response, started);
        let response = outcome?;
        if matches!(response.status, 429 | 502 | 503 | 504) {
            let retry_after = response
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(sluice_retry::parse_retry_after);
            return Err(ApiError::Status {
                upstream: self.inner.name.clone(),
                status: response.status,
                retry_after,
            });
        }
        Ok(response)
    }

    async fn exchange(
        &self,
        slot: &HttpSlot,
        request: Request<Full<Bytes>>,
    ) -> Result<ApiResponse> {
        let upstream = &self.inner.name;
        let limit = self.inner.config.max_body_bytes;
        let response = self.inner.pool.send_in(slot, request).await.map_err(|e| {
            if e.connect {
                ApiError::Connect {
                    upstream: upstream.clone(),
                    source: Arc::new(e),
                }
            } else {
                ApiError::Transport {
                    upstream: upstream.clone(),
                    source: Arc::new(e),
                }
            }
        })?;
        let (parts, body) = response.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::BodyTooLarge {
                upstream: upstream.clone(),
                limit,
            });
        }
        let body = Limited::new(body, limit).collect().await.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::BodyTooLarge {
                    upstream: upstream.clone(),
                    limit,
                }
            } else {
                ApiError::Transport {
                    upstream: upstream.clone(),
                    source: Arc::from(e),
                }
            }
        })?;
        Ok(ApiResponse {
            upstream: upstream.clone(),
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_bytes(),
        })
    }
}

/// The base URL's scheme, authority and path (with no trailing `/`).
#[derive(Debug)]
struct BaseUri {
    scheme: Scheme,
    authority: Authority,
    path: String,
}

impl BaseUri {
    fn parse(base_url: &str) -> std::result::Result<Self, String> {
        let uri = Uri::try_from(base_url).map_err(|e| e.to_string())?;
        let parts = uri.into_parts();
        // `ApiClientConfig::new` accepts only http(s) URLs with a host.
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err("expected an http:// or https:// URL with a host".to_owned());
        };
        let path = parts
            .path_and_query
            .as_ref()
            .map_or("", PathAndQuery::as_str)
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            scheme,
            authority,
            path,
        })
    }
}

/// A coalesced call's answer, shared by its callers.
type Cell = Arc<OnceCell<Result<ApiResponse>>>;
/// Coalesced calls by target. foldhash is keyed per map as SipHash is, and
/// halves the cost of `leave` (callgrind); the map holds at most the calls
/// in flight, which the client bounds.
type Entries = HashMap<String, Cell, foldhash::fast::RandomState>;
type InFlight = Mutex<Entries>;

/// One caller's share of a coalesced call. Dropped — the call answered,
/// or the caller gone — it removes the map's entry once the call has an
/// answer or no caller waits for it any more, so that cancelled callers
/// leave nothing behind. Every clone and drop of an entry's `Arc` happens
/// under the map's lock, so the count it reads is exact.
struct Joined<'a> {
    map: &'a InFlight,
    key: String,
    cell: Option<Cell>,
}

impl<'a> Joined<'a> {
    fn join(map: &'a InFlight, key: String) -> Self {
        let mut entries = map.lock().unwrap_or_else(PoisonError::into_inner);
        let cell = entries.entry(key.clone()).or_default().clone();
        drop(entries);
        Self {
            map,
            key,
            cell: Some(cell),
        }
    }

    fn cell(&self) -> &OnceCell<Result<ApiResponse>> {
        match &self.cell {
            Some(cell) => cell,
            None => unreachable!("the cell is taken only when the share ends"),
        }
    }

    /// The answer, once the call has one: moved out of its cell when no
    /// other caller holds the cell (the usual case: nobody joined), so a
    /// lone caller's response is not copied; cloned otherwise. Leaves the
    /// map as dropping the share would.
    fn into_answer(mut self) -> Result<ApiResponse> {
        let mut entries = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(cell) = self.cell.take() else {
            unreachable!("the cell is taken only here and on drop")
        };
        leave(&mut entries, &self.key, &cell);
        // Under the lock, as every clone and drop of the entry's `Arc`.
        let answer = match Arc::try_unwrap(cell) {
            Ok(cell) => cell.into_inner(),
            Err(shared) => shared.get().cloned(),
        };
        drop(entries);
        match answer {
            Some(answer) => answer,
            None => unreachable!("called once the cell is initialised"),
        }
    }
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        let mut entries = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = self.cell.take() {
            leave(&mut entries, &self.key, &cell);
            drop(cell);
        }
    }
}

/// A caller leaves `key`'s entry: it is removed once the call has an
/// answer or nobody else waits for it (the map's reference and `cell` are
/// the last two), if it is still `cell`'s.
fn leave(entries: &mut Entries, key: &str, cell: &Cell) {
    let ours = entries
        .get(key)
        .is_some_and(|current| Arc::ptr_eq(current, cell));
    let last = Arc::strong_count(cell) <= 2;
    if ours && (last || cell.initialized()) {
        entries.remove(key);
    }
}

/// Writes `span`'s trace context into `headers` (W3C `traceparent` and
/// `tracestate`, through the global propagator the binary installed).
fn inject_trace_context(span: &tracing::Span, headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    });
}
