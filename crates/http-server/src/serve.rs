//! [`serve`]: HTTP/1.1 and HTTP/2 (cleartext) on one listener, with
//! graceful shutdown.
//!
//! Shutdown without cutting requests off: the listener closes at once (new
//! connections are refused, so a balancer or client goes elsewhere), and
//! every open connection is given `SHUTDOWN_LINGER` (500 ms) in which a request
//! already on its way is still answered, with `Connection: close` so that
//! the client does not send another. Only then is an idle connection
//! closed. Closing idle keep-alive connections at once, the usual way,
//! drops the requests that were in the socket but not yet read: the
//! fault drill (`cargo xtask chaos`, sigterm) saw 15 such under W1.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::ServiceExt;
use tower_http::timeout::DeadlineBody;

use crate::edge::connection::{Activity, Watched};

use crate::routes::router;
use crate::state::AppState;

/// How long an open connection may still bring a request once shutdown
/// has begun.
pub(crate) const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// Drives one connection until it ends; closes it once it makes no
/// progress for too long (see `edge::connection`); once `stopping` turns
/// true, lets it bring requests for `SHUTDOWN_LINGER`, then shuts it down
/// gracefully. `_alive` and `_slot` are dropped when the connection is gone.
async fn drive<C>(
    connection: C,
    activity: Arc<Activity>,
    limits: (Duration, Duration),
    mut stopping: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
    _slot: OwnedSemaphorePermit,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let log = |result: Result<(), C::Error>| {
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    };
    tokio::pin!(connection);
    let (header_read, idle) = limits;
    // Checked at least this often while a request is in flight.
    let recheck = header_read.min(idle).max(Duration::from_millis(50));
    loop {
        let wait = match activity.time_left(header_read, idle) {
            Some(left) if left.is_zero() => {
                tracing::debug!("closing a connection that made no progress");
                connection.as_mut().graceful_shutdown();
                // A connection that will not even shut down is dropped.
                let _ = tokio::time::timeout(Duration::from_secs(1), connection.as_mut()).await;
                return;
            }
            Some(left) => left,
            None => recheck,
        };
        tokio::select! {
            result = connection.as_mut() => return log(result),
            _ = stopping.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    tokio::select! {
        result = connection.as_mut() => return log(result),
        () = tokio::time::sleep(SHUTDOWN_LINGER) => {}
    }
    connection.as_mut().graceful_shutdown();
    log(connection.await);
}

/// Serves the API on `listener` until `shutdown` completes; then stops
/// accepting, lets in-flight requests finish for up to the configured
/// grace period, and returns. The caller closes the pools afterwards.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, state, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (see [`tls_config`](crate::tls_config)).
/// A client that fails the handshake, or does not finish it within the
/// header-read timeout, is dropped without affecting others.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = router(state.clone());
    serve_router(listener, state, app, tls, shutdown).await
}

/// [`serve_with`] for a router of your own, usually
/// [`router_with`](crate::router_with) with extra routes.
///
/// Shutdown, in order: `shutdown` completes → `/readyz` answers 503 →
/// after `shutdown_linger` the backlog is accepted and the listener closes,
/// HTTP/1 responses carry `Connection: close` → open connections get
/// `SHUTDOWN_LINGER` for requests already on their way, then in-flight
/// requests get up to `shutdown_grace` → this returns, and the caller
/// closes the pools.
pub async fn serve_router(
    listener: TcpListener,
    state: AppState,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let config = state.config().clone();
    // Set once shutdown begins: HTTP/1 responses then carry
    // `Connection: close` (HTTP/2 has GOAWAY for this).
    let draining = Arc::new(AtomicBool::new(false));
    let body_deadline = config.body_read_timeout;
    let service_for = |activity: Arc<Activity>| {
        let (app, draining) = (app.clone(), draining.clone());
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = activity.begin();
            let close = request.version() < http::Version::HTTP_2;
            let request = request.map(|body| {
                if hyper::body::Body::is_end_stream(&body) {
                    axum::body::Body::new(body)
                } else {
                    axum::body::Body::new(DeadlineBody::new(body_deadline, body))
                }
            });
            let response = app.clone().oneshot(request);
            let draining = draining.clone();
            async move {
                let mut response = response.await?;
                drop(in_flight);
                if close && draining.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let slots = Arc::new(Semaphore::new(
        config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let limits = (config.header_read_timeout, config.idle_timeout);
    let (stop, stopping) = watch::channel(false);
    let (alive, mut all_gone) = mpsc::channel::<()>(1);
    let config = state.config().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's header timer also runs on idle keep-alive connections;
        // the connection watchdog (`drive`) bounds headers and idleness
        // apart, for every protocol.
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    // Readiness turns off at the signal; the listener stays open for the
    // linger so that balancers notice before connections are refused.
    let stop_accepting = {
        let (state, draining) = (state.clone(), draining.clone());
        async move {
            shutdown.await;
            state.begin_draining();
            tracing::info!(linger = ?config.shutdown_linger, "shutdown: readiness off");
            tokio::time::sleep(config.shutdown_linger).await;
            // Only now do answers carry `Connection: close`: during the
            // linger, keep-alive clients keep their connections instead of
            // reconnecting, so few connections are mid-handshake when the
            // listener closes (those are reset by the kernel).
            draining.store(true, Ordering::Relaxed);
        }
    };
    tokio::pin!(stop_accepting);
    let mut stopped = false;
    loop {
        // Back-pressure: past `max_connections`, stop accepting until one
        // closes (new connections wait in the kernel's backlog).
        let slot = if stopped {
            // Connections the kernel completed but nobody accepted yet are
            // reset when the listener closes, with their requests unread:
            // take them all (without waiting), so they are answered too.
            match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                () = &mut stop_accepting => {
                    stopped = true;
                    continue;
                }
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            }
        };
        let accepted = if stopped {
            match std::future::poll_fn(|cx| {
                std::task::Poll::Ready(match listener.poll_accept(cx) {
                    std::task::Poll::Ready(accepted) => Some(accepted),
                    std::task::Poll::Pending => None,
                })
            })
            .await
            {
                Some(accepted) => accepted,
                None => break,
            }
        } else {
            tokio::select! {
                () = &mut stop_accepting => {
                    stopped = true;
                    continue;
                }
                accepted = listener.accept() => accepted,
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = service_for(activity.clone());
        let stream = Watched::new(stream, activity.clone());
        let (stopping, alive) = (stopping.clone(), alive.clone());
        match &acceptor {
            None => {
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(drive(connection, activity, limits, stopping, alive, slot));
            }
            Some(acceptor) => {
                let (acceptor, builder) = (acceptor.clone(), builder.clone());
                let handshake_timeout = config.header_read_timeout;
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    drive(connection, activity, limits, stopping, alive, slot).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!(grace = ?config.shutdown_grace, "shutting down: finishing in-flight requests");
    let _ = stop.send(true);
    drop(alive);
    // `recv` returns `None` once every connection's sender is dropped.
    if tokio::time::timeout(config.shutdown_grace, all_gone.recv())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}
