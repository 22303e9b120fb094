//! A local HTTP upstream on 127.0.0.1 with fault injection, for tests and
//! benchmarks of outbound HTTP. It counts what it receives, so tests can
//! assert on what reached it.
//!
//! Routes:
//! - `/data/{id}`: `{"id": id}` after the configured latency; fails with
//!   503 (with `Retry-After` when set) at the configured rate or while down.
//!   Ids starting `missing` get 404; ids starting `badjson` get a body
//!   that does not parse; `big-<n>` gets `{"id": id, "pad": "…"}` padded
//!   to about `n` bytes (at most 64 MiB).
//! - `/status/{code}[?retry_after=S]`: that status, JSON body.
//! - `/echo/…`: `{"path", "query", "authorization", "host"}` as received.
//! - `/reset`: closes the connection without answering.
//! - `/invalid-json`: `200 application/json` that does not parse.
//! - `/text`: `200 text/plain`.
//! - `/big/{n}`: an `n`-byte JSON string with `Content-Length`;
//!   `/big-chunked/{n}`: the same without it.
//! - `/slow-body/{ms}`: headers at once, the body `ms` later.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What the upstream does and what it saw; shared with the test.
#[derive(Debug)]
pub struct State {
    /// Latency of `/data`, ms.
    pub latency_ms: AtomicU64,
    /// Extra random latency of `/data`, up to this many ms.
    pub jitter_ms: AtomicU64,
    /// Percentage of `/data` calls answered 503.
    pub fail_percent: AtomicU64,
    /// While true, every `/data` call is answered 503.
    pub down: AtomicBool,
    /// `Retry-After` seconds on 503s from `/data` (0: none).
    pub retry_after: AtomicU64,
    /// Requests received, all routes.
    pub requests: AtomicU64,
    /// Requests being handled now, and the most at once.
    pub in_flight: AtomicU64,
    /// The most requests handled at once.
    pub max_in_flight: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    hits: Mutex<HashMap<String, u64>>,
    rng: Mutex<SmallRng>,
}

impl State {
    /// Requests received for `path` exactly (e.g. `/data/a`).
    pub fn hits(&self, path: &str) -> u64 {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every path received, with its count.
    pub fn all_hits(&self) -> HashMap<String, u64> {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets counts.
    pub fn reset_counts(&self) {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.requests.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// Restarts the failure and jitter rolls from `seed`. The default seed
    /// (7) makes tests repeatable; its first 20 rolls at 30% happen to
    /// hold 10 failures, so a drill that measures a failure rate should
    /// pick its own seed and print it.
    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(PoisonError::into_inner) = SmallRng::seed_from_u64(seed);
    }
}

/// A running upstream; stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    /// Its behaviour and counters.
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type ResponseBody = BoxBody<Bytes, Infallible>;

impl Upstream {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts on `addr` (a loopback address: this is a test server).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            latency_ms: AtomicU64::new(0),
            jitter_ms: AtomicU64::new(0),
            fail_percent: AtomicU64::new(0),
            down: AtomicBool::new(false),
            retry_after: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            hits: Mutex::new(HashMap::new()),
            rng: Mutex::new(SmallRng::seed_from_u64(7)),
        });
        let (stop, mut stopped) = oneshot::channel();
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        serving.connections.fetch_add(1, Ordering::SeqCst);
                        let state = serving.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                }
            }
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn json(status: u16, value: serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state
        .hits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(path.clone())
        .or_default() += 1;
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&state);
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let response = match segments.as_slice() {
        ["data", id] => {
            let jitter = state.jitter_ms.load(Ordering::Relaxed);
            let (extra, roll) = {
                let mut rng = state.rng.lock().unwrap_or_else(PoisonError::into_inner);
                (
                    if jitter > 0 {
                        rng.random_range(0..=jitter)
                    } else {
                        0
                    },
                    rng.random_range(0..100u64),
                )
            };
            // No timer at all for no latency: tokio rounds a sleep up to
            // its next millisecond tick, so `sleep(0)` would add 0–1 ms
            // (and a timer) to every answer of the "0 ms" upstream.
            let latency = state.latency_ms.load(Ordering::Relaxed) + extra;
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            if state.down.load(Ordering::Relaxed)
                || roll < state.fail_percent.load(Ordering::Relaxed)
            {
                let mut r = json(503, serde_json::json!({"error": "unavailable"}));
                let after = state.retry_after.load(Ordering::Relaxed);
                if after > 0 {
                    r.headers_mut()
                        .insert("retry-after", hyper::header::HeaderValue::from(after));
                }
                r
            } else if id.starts_with("missing") {
                json(404, serde_json::json!({"error": "no such data"}))
            } else if id.starts_with("badjson") {
                let mut r = Response::new(Full::new(Bytes::from_static(b"{\"id\":")).boxed());
                r.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                r
            } else if let Some(n) = id
                .strip_prefix("big-")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let pad = "x".repeat(n.min(64 << 20));
                json(200, serde_json::json!({"id": id, "pad": pad}))
            } else {
                json(200, serde_json::json!({"id": id}))
            }
        }
        ["status", code] => {
            let code: u16 = code.parse().unwrap_or(500);
            let mut r = json(code, serde_json::json!({"status": code}));
            if let Some(after) = query.strip_prefix("retry_after=")
                && let Ok(value) = hyper::header::HeaderValue::from_str(after)
            {
                r.headers_mut().insert("retry-after", value);
            }
            r
        }
        ["echo", ..] => {
            let authorization = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let host = req
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            json(
                200,
                serde_json::json!({"path": path, "query": query, "authorization": authorization, "host": host}),
            )
        }
        ["reset"] => return Err(std::io::Error::other("reset by the test upstream")),
        ["invalid-json"] => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"{\"oops\":")).boxed());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        ["text"] => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"hello")).boxed());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/plain"),
            );
            r
        }
        ["big", n] => json(
            200,
            serde_json::Value::String("x".repeat(n.parse().unwrap_or(0))),
        ),
        ["big-chunked", n] => {
            let body = Bytes::from(format!("\"{}\"", "x".repeat(n.parse().unwrap_or(0))));
            let mut r = Response::new(Delayed::new(Duration::ZERO, body).boxed());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        ["slow-body", ms] => {
            let delay = Duration::from_millis(ms.parse().unwrap_or(0));
            let mut r =
                Response::new(Delayed::new(delay, Bytes::from_static(b"{\"slow\":true}")).boxed());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => json(404, serde_json::json!({"error": "no such route"})),
    };
    Ok(response)
}

/// A body of unknown length whose one chunk arrives after a delay.
struct Delayed {
    sleep: Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
}

impl Delayed {
    fn new(delay: Duration, data: Bytes) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(delay)),
            data: Some(data),
        }
    }
}

impl Body for Delayed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }
}
