//! Plain-HTTP/1.1 connections kept by the pool itself.
//!
//! hyper-util's pooled client serves any host and scheme, and pays for it
//! on every request: it hashes the (scheme, host) key in three maps,
//! formats a `Host` header, and spawns a task per response that gives the
//! connection back once hyper says it is ready. A pool of one upstream
//! over plain HTTP (no TLS, so no ALPN and no HTTP/2) needs none of that:
//! [`H1Lane`] keeps hyper's own `SendRequest` handles in a stack, lends the
//! most recently used, and takes it back when the response body has been
//! read to its end ([`Lease`]). Everything else (TLS, HTTP/2, other hosts)
//! stays on hyper-util's client.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use super::counted::Counting;

type Sender = SendRequest<Full<Bytes>>;
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request on the lane failed.
pub(crate) enum LaneError {
    /// No connection could be opened; nothing was sent.
    Connect(BoxError),
    /// The connection failed after the request was handed to it.
    Transport(BoxError),
}

/// The plain-HTTP/1.1 connections to one host and port.
pub(crate) struct H1Lane {
    /// The `http://host:port` the connections go to.
    origin: Uri,
    authority: Authority,
    /// `Host` for requests that carry none: the host, and the port unless
    /// it is 80 (as hyper-util writes it).
    host: HeaderValue,
    connector: Counting<HttpConnector>,
    shared: Arc<Shared>,
}

/// What the lane and its leases share.
struct Shared {
    /// Idle connections, least recently used first.
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    /// Still open, and idle for less than `timeout` at `now`.
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < timeout
    }
}

/// A connection lent for one request, given back when dropped unless it
/// was [`discard`](Lease::discard)ed or closed meanwhile.
pub(crate) struct Lease {
    sender: Option<Sender>,
    shared: Weak<Shared>,
}

impl Lease {
    /// Closes the connection instead of giving it back.
    pub(crate) fn discard(&mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Some(sender), Some(shared)) = (self.sender.take(), self.shared.upgrade())
            && !sender.is_closed()
        {
            shared.lock().push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the connections idle longer than the idle timeout, and the
    /// ones the upstream closed.
    fn expire(&self, now: Instant) {
        self.lock().retain(|c| c.usable(now, self.idle_timeout));
    }
}

impl H1Lane {
    /// A lane to `origin` (`http://host[:port]`), or `None` when it is not
    /// plain HTTP with a host. Starts the lane's sweep, which closes
    /// connections idle past `idle_timeout` even when no request comes to
    /// find them, and ends with the lane: call it inside a runtime.
    pub(crate) fn new(
        origin: &Uri,
        connector: Counting<HttpConnector>,
        idle_timeout: Duration,
    ) -> Option<Self> {
        if origin.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let authority = origin.authority()?.clone();
        let host = match authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let shared = Arc::new(Shared {
            idle: Mutex::new(Vec::new()),
            idle_timeout,
        });
        let lane = Self {
            origin: Uri::builder()
                .scheme("http")
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .ok()?,
            host: HeaderValue::try_from(host).ok()?,
            authority,
            connector,
            shared,
        };
        let every = (idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        crate::sweep::every(every, Arc::downgrade(&lane.shared), |shared| {
            shared.expire(Instant::now());
        });
        Some(lane)
    }

    /// Whether `uri` goes to this lane's host and port over plain HTTP.
    pub(crate) fn serves(&self, uri: &Uri) -> bool {
        uri.scheme() == Some(&http::uri::Scheme::HTTP)
            && uri.authority().is_some_and(|authority| {
                // A client that builds each URI from one parsed base (as
                // `sluice-api-client` does) shares the lane's bytes: no
                // need for the case-insensitive comparison.
                std::ptr::eq(authority.as_str(), self.authority.as_str())
                    || *authority == self.authority
            })
    }

    /// Closes every idle connection.
    pub(crate) fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.shared.lock());
        drop(idle);
    }

    /// Sends `request` (to a URI this lane [`serves`](Self::serves)) on
    /// an idle connection, or a new one. A connection that turns out to be
    /// closed before the request went out is skipped, so a request is sent
    /// at most once. The lease gives the connection back when dropped:
    /// hold it until the body is read.
    pub(crate) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), LaneError> {
        // hyper writes the URI as given: origin form, as hyper-util would.
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        if !request.headers().contains_key(http::header::HOST) {
            request
                .headers_mut()
                .insert(http::header::HOST, self.host.clone());
        }
        loop {
            let (mut sender, fresh) = match self.checkout() {
                Some(sender) => (sender, false),
                None => (self.connect().await?, true),
            };
            // An idle connection is ready unless its last response is
            // still being wound up, or it closed; wait for the first, skip
            // the second. A new connection that closes at once is the
            // upstream's answer, not a stale connection: no second try.
            if let Err(e) = sender.ready().await {
                if fresh {
                    return Err(LaneError::Transport(Box::new(e)));
                }
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        sender: Some(sender),
                        shared: Arc::downgrade(&self.shared),
                    };
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Not sent: the connection closed first. Another one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(LaneError::Transport(Box::new(failed.into_error()))),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and has
    /// not been idle too long.
    fn checkout(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.shared.lock();
        while let Some(candidate) = idle.pop() {
            if candidate.usable(now, self.shared.idle_timeout) {
                return Some(candidate.sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, LaneError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(|e| LaneError::Connect(Box::new(e)))?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| LaneError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}
