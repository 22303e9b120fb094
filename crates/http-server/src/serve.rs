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
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::routes::router;
use crate::state::AppState;

/// How long an open connection may still bring a request once shutdown
/// has begun.
pub(crate) const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// Drives one connection until it ends; once `stopping` turns true, lets
/// it bring requests for `SHUTDOWN_LINGER`, then shuts it down
/// gracefully. `_alive` is dropped when the connection is gone.
async fn drive<C>(connection: C, mut stopping: watch::Receiver<bool>, _alive: mpsc::Sender<()>)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let log = |result: Result<(), C::Error>| {
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    };
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log(result),
        _ = stopping.wait_for(|stop| *stop) => {}
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
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let app = router(state.clone());
    // Set once shutdown begins: HTTP/1 responses then carry
    // `Connection: close` (HTTP/2 has GOAWAY for this).
    let draining = Arc::new(AtomicBool::new(false));
    let service = {
        let draining = draining.clone();
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let close = request.version() < http::Version::HTTP_2;
            let response = app.clone().oneshot(request.map(axum::body::Body::new));
            let draining = draining.clone();
            async move {
                let mut response = response.await?;
                if close && draining.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let (stop, stopping) = watch::channel(false);
    let (alive, mut all_gone) = mpsc::channel::<()>(1);
    let config = state.config().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
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
                let (service, stopping, alive) = (service.clone(), stopping.clone(), alive.clone());
                match &acceptor {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        tokio::spawn(drive(connection, stopping, alive));
                    }
                    Some(acceptor) => {
                        let (acceptor, builder) = (acceptor.clone(), builder.clone());
                        let handshake_timeout = config.header_read_timeout;
                        tokio::spawn(async move {
                            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => return tracing::debug!("TLS handshake timed out"),
                            };
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned();
                            drive(connection, stopping, alive).await;
                        });
                    }
                }
            }
        }
    }
    drop(listener);
    tracing::info!(grace = ?config.shutdown_grace, "shutting down: finishing in-flight requests");
    draining.store(true, Ordering::Relaxed);
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
