//! [`within`]: `tokio::time::timeout_at` that builds its timer only when
//! the call does not finish on its first poll.
//!
//! Building a tokio `Sleep` looks up the runtime's handle and clones it,
//! which is most of what a deadline costs a call that is ready at once
//! (a cached answer, an already-finished future). A call that has to wait
//! gets the same timer `timeout_at` would give it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The deadline passed before the call finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

pin_project_lite::pin_project! {
    /// The future of [`within`]. A struct, not an `async fn`: an async
    /// function keeps its argument and the pinned local it moves into in
    /// two places, which doubled the size of every attempt future (and of
    /// every future around it, copied on each move).
    pub(crate) struct Within<F> {
        #[pin]
        call: F,
        #[pin]
        timer: Option<Sleep>,
        start: Instant,
        limit: Duration,
    }
}

/// Runs `call` until it finishes or `limit` from `start` passes. Like
/// `tokio::time::timeout_at`, the call is polled before the deadline is
/// checked, so a call that finishes at once is never timed out (and never
/// pays for computing the deadline either).
pub(crate) fn within<F: Future>(start: Instant, limit: Duration, call: F) -> Within<F> {
    Within {
        call,
        timer: None,
        start,
        limit,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.call.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if this.timer.is_none() {
            this.timer
                .set(Some(tokio::time::sleep_until(*this.start + *this.limit)));
        }
        match this.timer.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_call_is_never_timed_out_and_a_slow_one_is() {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(within(past, Duration::ZERO, async { 7 }).await, Ok(7));
        let start = Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(
            within(start, Duration::from_millis(100), slow).await,
            Err(Elapsed)
        );
        assert!(Instant::now() >= start + Duration::from_millis(100));
        let quick = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(
            within(Instant::now(), Duration::from_secs(1), quick).await,
            Ok(())
        );
    }
}
