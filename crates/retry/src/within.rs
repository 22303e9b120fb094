//! [`within`]: `tokio::time::timeout_at` that builds its timer only when
//! the call does not finish on its first poll.
//!
//! Building a tokio `Sleep` looks up the runtime's handle and clones it,
//! which is most of what a deadline costs a call that is ready at once
//! (a cached answer, an already-finished future). A call that has to wait
//! gets the same timer `timeout_at` would give it.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The deadline passed before the call finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `call` until it finishes or `limit` from `start` passes. Like
/// `tokio::time::timeout_at`, the call is polled before the deadline is
/// checked, so a call that finishes at once is never timed out (and never
/// pays for computing the deadline either).
pub(crate) async fn within<F: Future>(
    start: Instant,
    limit: Duration,
    call: F,
) -> Result<F::Output, Elapsed> {
    let mut call = pin!(call);
    let mut timer = pin!(None::<Sleep>);
    poll_fn(|cx| {
        if let Poll::Ready(output) = call.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(start + limit)));
        }
        match timer.as_mut().as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    })
    .await
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
