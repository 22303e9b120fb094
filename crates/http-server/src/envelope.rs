//! Typed success envelopes: every success body carries `"success": true`.

use serde::Serialize;

/// `{"success": true, "data": …}`.
#[derive(Debug, Serialize)]
pub(crate) struct Data<T> {
    success: bool,
    data: T,
}

impl<T> Data<T> {
    /// Wraps `data`.
    pub(crate) fn new(data: T) -> Self {
        Self {
            success: true,
            data,
        }
    }
}

/// `{"success": true, "user_id": 7}`: the answer to `POST /users`.
#[derive(Debug, Serialize)]
pub(crate) struct Created {
    success: bool,
    user_id: i64,
}

impl Created {
    /// The new user's id.
    pub(crate) fn new(user_id: i64) -> Self {
        Self {
            success: true,
            user_id,
        }
    }
}

/// `/healthz` and `/readyz`: `{"status": "…"}`, and what is failing.
#[derive(Debug, Serialize)]
pub(crate) struct Probe {
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) failing: Vec<String>,
}

/// A response body made of ready chunks, sent in order, with its exact
/// length (so it goes out with `Content-Length`). Chunks may be shared
/// (`Bytes`), which is what keeps a batch that repeats one large upstream
/// answer from copying it.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: std::collections::VecDeque<bytes::Bytes>,
    len: u64,
}

impl Chunks {
    pub(crate) fn push(&mut self, chunk: bytes::Bytes) {
        self.len += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }
}

impl hyper::body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let next = this.chunks.pop_front();
        if let Some(chunk) = &next {
            this.len -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}
