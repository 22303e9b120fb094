//! Bounded connection life: [`Watched`] notes when a connection's bytes
//! arrive and [`Activity`] how many requests it has in flight, so that
//! `serve` can close a connection that makes no progress, whatever stage
//! it is stuck in (TLS, protocol detection, an HTTP/2 preface without a
//! stream, HTTP/1 headers, idle keep-alive). hyper's own header timeout
//! starts only once the protocol is known; this covers the time before.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection is doing, shared by its I/O, its service and its
/// watchdog. Times are milliseconds since `born`, plus one (0 = never).
#[derive(Debug)]
pub(crate) struct Activity {
    born: Instant,
    in_flight: AtomicU32,
    served: AtomicBool,
    /// When the connection last had no request in flight.
    idle_since: AtomicU64,
    /// The first byte read since then (a request arriving).
    partial_since: AtomicU64,
}

/// A request in flight on a connection; dropping it (the response is
/// ready, or the request was cancelled) makes the connection idle again.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.partial_since.store(0, Ordering::Relaxed);
            a.idle_since.store(a.now(), Ordering::Relaxed);
        }
    }
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(1),
            partial_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A request has begun.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        self.partial_since.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn bytes_arrived(&self) {
        if self.partial_since.load(Ordering::Relaxed) == 0 {
            self.partial_since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// How long until the connection has made no progress for too long
    /// (`None`: a request is in flight, its own timeouts bound it; zero:
    /// close it now). Rules: bytes of a request arriving, or a new
    /// connection that has not brought its first request, get
    /// `header_read`; an idle keep-alive connection gets `idle`.
    pub(crate) fn time_left(&self, header_read: Duration, idle: Duration) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let partial = self.partial_since.load(Ordering::Relaxed);
        let (since, limit) = if partial != 0 {
            (partial, header_read)
        } else if !self.served.load(Ordering::Relaxed) {
            (1, header_read)
        } else {
            (self.idle_since.load(Ordering::Relaxed), idle)
        };
        let deadline = since.saturating_add(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        Some(Duration::from_millis(deadline.saturating_sub(self.now())))
    }
}

pin_project_lite::pin_project! {
    /// A connection's socket that reports arriving bytes to its [`Activity`].
    pub(crate) struct Watched<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_brings_nothing_runs_out_of_time() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let a = Activity::new();
        assert!(a.time_left(header, idle).unwrap() <= header);
        let request = a.begin();
        assert_eq!(
            a.time_left(header, idle),
            None,
            "in flight: not ours to bound"
        );
        drop(request);
        let left = a.time_left(header, idle).unwrap();
        assert!(left > header && left <= idle, "idle keep-alive: {left:?}");
        a.bytes_arrived();
        assert!(
            a.time_left(header, idle).unwrap() <= header,
            "a request arriving"
        );
    }
}
