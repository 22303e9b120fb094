//! A closed-loop HTTP/1.1 load generator that keeps every request's
//! outcome and timing, for fault drills (`cargo xtask chaos`).
//!
//! wrk reports aggregates; a drill needs to know *when* each request
//! started, how long it took and how it ended, to tell the seconds before
//! an outage from those during and after it. Each worker owns one
//! keep-alive connection and sends its next request when the last one
//! has been answered. Only loopback addresses are accepted, and every run
//! stops by itself at its deadline.
//!
//! Like browsers and HTTP client libraries (RFC 9110 §9.2.2), a worker
//! resends an idempotent request once on a new connection when its
//! connection closed before any response arrived; a POST is never resent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest a single request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET` or `POST` (a JSON body).
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// JSON body for a POST; empty for a GET.
    pub body: Bytes,
    /// Something to remember the request by (the email a POST created).
    pub key: Option<String>,
}

impl Call {
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: Bytes::new(),
            key: None,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            body: body.into(),
            key: None,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// No connection could be made: nothing listens (a stopped server).
    Refused,
    /// Connected, but no complete response (reset, closed, timed out).
    Failed,
}

/// One request's record.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it started, from the start of the run.
    pub start: Duration,
    /// How long until the whole response had arrived (or it failed).
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// The call's key.
    pub key: Option<String>,
    /// It was sent once already on a connection that closed without
    /// answering, and sent again on a new one (idempotent calls only).
    pub resent: bool,
}

impl Sample {
    /// When it ended, from the start of the run.
    pub fn end(&self) -> Duration {
        self.start + self.latency
    }

    /// A 2xx response.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Status(s) if (200..300).contains(&s))
    }
}

/// A load run's settings.
#[derive(Debug, Clone)]
pub struct Load {
    /// Where to send: must be a loopback address.
    pub addr: SocketAddr,
    /// Concurrent connections (one worker each).
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Stop a worker at its first refused connection (a server that has
    /// shut down); otherwise it retries after 10 ms.
    pub stop_when_refused: bool,
}

/// Why a run could not start.
#[derive(Debug)]
pub struct NotLoopback(pub SocketAddr);

impl std::fmt::Display for NotLoopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "load runs only target loopback addresses, not {}",
            self.0
        )
    }
}

impl std::error::Error for NotLoopback {}

impl Load {
    /// Runs the load: `next(worker, n)` gives worker `worker`'s `n`th call.
    /// Returns every request's sample, in no particular order, timed from
    /// `epoch` (the caller's clock, so that its fault times line up).
    /// `stop` ends the run early when set.
    pub async fn run<F>(
        &self,
        epoch: Instant,
        next: F,
        stop: Arc<AtomicBool>,
    ) -> Result<Vec<Sample>, NotLoopback>
    where
        F: Fn(usize, u64) -> Call + Send + Sync + 'static,
    {
        if !self.addr.ip().is_loopback() {
            return Err(NotLoopback(self.addr));
        }
        let next = Arc::new(next);
        let deadline = Instant::now() + self.duration;
        let workers: Vec<_> = (0..self.connections)
            .map(|worker| {
                let (next, stop, load) = (next.clone(), stop.clone(), self.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut conn = None;
                    let mut n = 0;
                    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                        let call = next(worker, n);
                        n += 1;
                        let started = Instant::now();
                        let (outcome, resent) = send(&mut conn, load.addr, &call).await;
                        samples.push(Sample {
                            start: started - epoch,
                            latency: started.elapsed(),
                            outcome,
                            key: call.key,
                            resent,
                        });
                        if outcome == Outcome::Refused {
                            if load.stop_when_refused {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            // A worker cannot panic; a join error would be a bug here.
            if let Ok(samples) = worker.await {
                all.extend(samples);
            }
        }
        Ok(all)
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Outcome> {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Outcome::Refused);
        }
        Err(_) => return Err(Outcome::Failed),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Outcome::Failed)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The HTTP request for `call` (`None` if its path is not a valid URI).
fn build(call: &Call, addr: SocketAddr) -> Option<Request<Full<Bytes>>> {
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(call.path.as_str())
        .header(HOST, addr.to_string());
    if !call.body.is_empty() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    request.body(Full::new(call.body.clone())).ok()
}

/// Sends `call` on the worker's connection, opening one when needed.
/// Also tells whether it had to be resent.
async fn send(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    call: &Call,
) -> (Outcome, bool) {
    let idempotent = call.method == Method::GET;
    let mut resent = false;
    let outcome = 'attempts: {
        for attempt in 0..2 {
            let sender = match conn {
                Some(sender) => sender,
                None => match connect(addr).await {
                    Ok(sender) => conn.insert(sender),
                    Err(outcome) => break 'attempts outcome,
                },
            };
            if sender.ready().await.is_err() {
                // Closed while idle, before anything was sent: reconnect.
                *conn = None;
                continue;
            }
            let Some(request) = build(call, addr) else {
                break 'attempts Outcome::Failed;
            };
            let response =
                match tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(_)) => {
                        // No response head: the request was never processed
                        // as far as the client can tell.
                        *conn = None;
                        if idempotent && attempt == 0 {
                            resent = true;
                            continue;
                        }
                        break 'attempts Outcome::Failed;
                    }
                    Err(_) => {
                        *conn = None;
                        break 'attempts Outcome::Failed;
                    }
                };
            let status = response.status().as_u16();
            let closing = response
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect()).await;
            if closing || !matches!(body, Ok(Ok(_))) {
                *conn = None;
            }
            break 'attempts match body {
                Ok(Ok(_)) => Outcome::Status(status),
                _ => Outcome::Failed,
            };
        }
        Outcome::Failed
    };
    (outcome, resent)
}

/// One `GET path` on a new connection: the status and body, or `None`
/// when nothing answered. For readiness probes and metric scrapes.
pub async fn fetch(addr: SocketAddr, path: &str) -> Option<(u16, Bytes)> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let mut sender = connect(addr).await.ok()?;
    let request = build(&Call::get(path), addr)?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some((status, body))
}

/// The `p`th percentile (0–100) of `latencies`, nearest rank; zero when
/// empty.
pub fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}
