//! [`HttpBody`]: a response body that gives its connection back to the
//! pool once read to its end.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::Lease;

/// The body of a response from [`HttpPool::send_in`](super::HttpPool::send_in):
/// hyper's body, holding its plain-HTTP/1.1 connection until the last
/// frame has been read. A body dropped before its end closes that
/// connection (hyper cannot reuse it) instead of giving it back.
pub struct HttpBody {
    incoming: Incoming,
    lease: Option<Lease>,
}

impl std::fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBody")
            .field("pooled", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpBody {
    pub(super) fn leased(incoming: Incoming, lease: Lease) -> Self {
        let mut body = Self {
            incoming,
            lease: Some(lease),
        };
        // An empty body (204, HEAD, Content-Length: 0) is over already.
        if body.incoming.is_end_stream() {
            body.finished();
        }
        body
    }

    pub(super) fn plain(incoming: Incoming) -> Self {
        Self {
            incoming,
            lease: None,
        }
    }

    /// Gives the connection back (the body is over).
    fn finished(&mut self) {
        drop(self.lease.take());
    }

    /// Closes the connection: a body not read to its end, or one that
    /// failed, leaves it unable to carry another request.
    fn abandon(&mut self) {
        if let Some(mut lease) = self.lease.take() {
            lease.discard();
        }
    }
}

impl Drop for HttpBody {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Body for HttpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.incoming).poll_frame(cx));
        match &frame {
            None => this.finished(),
            Some(Ok(_)) if this.incoming.is_end_stream() => this.finished(),
            Some(Err(_)) => this.abandon(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
