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

/// `{"success":true,"data":<json>}` around JSON text that was already
/// checked (an upstream's answer, a cached value), embedded as it is:
/// the same bytes `Data::new` of the decoded value would give, without
/// decoding it into a value and encoding it again.
pub(crate) fn data_text(json: bytes::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    const HEAD: &[u8] = b"{\"success\":true,\"data\":";
    const TAIL: &[u8] = b"}";
    // A small text is copied into one buffer (one frame for hyper to
    // write); a large one is sent from where it is, in three chunks.
    let body = if json.len() <= COPY_BELOW {
        let mut one = Vec::with_capacity(HEAD.len() + json.len() + TAIL.len());
        one.extend_from_slice(HEAD);
        one.extend_from_slice(&json);
        one.extend_from_slice(TAIL);
        axum::body::Body::from(one)
    } else {
        let mut chunks = Chunks::default();
        chunks.push(bytes::Bytes::from_static(HEAD));
        chunks.push(json);
        chunks.push(bytes::Bytes::from_static(TAIL));
        axum::body::Body::new(chunks)
    };
    (
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Texts up to this size are copied into one buffer by [`data_text`].
const COPY_BELOW: usize = 16 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_text_wraps_small_and_large_texts_alike() {
        for size in [2, COPY_BELOW, COPY_BELOW + 1, 100_000] {
            let json = format!("\"{}\"", "x".repeat(size - 2));
            let response = data_text(bytes::Bytes::from(json.clone()));
            assert_eq!(response.headers()["content-type"], "application/json");
            let expected = format!("{{\"success\":true,\"data\":{json}}}");
            let length = hyper::body::Body::size_hint(response.body()).exact();
            assert_eq!(length, Some(expected.len() as u64), "size {size}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("an in-memory body");
            assert_eq!(body, expected.as_bytes(), "size {size}");
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(value["data"].as_str().map(str::len), Some(size - 2));
        }
    }
}
