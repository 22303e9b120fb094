//! [`serve`]: HTTP/1.1 and HTTP/2 (cleartext) on one listener, with
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::routes::router;
use crate::state::AppState;

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
    let graceful = GracefulShutdown::new();
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
                let service = TowerToHyperService::new(app.clone());
                match &acceptor {
                    None => {
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let connection = graceful.watch(connection.into_owned());
                        tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                    Some(acceptor) => {
                        let (acceptor, builder) = (acceptor.clone(), builder.clone());
                        let handshake_timeout = config.header_read_timeout;
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => return tracing::debug!("TLS handshake timed out"),
                            };
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(connection.into_owned()).await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                    }
                }
            }
        }
    }
    drop(listener);
    tracing::info!(grace = ?config.shutdown_grace, "shutting down: finishing in-flight requests");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}
