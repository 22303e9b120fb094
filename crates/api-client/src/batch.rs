//! [`ApiClient::batch`]: many requests, bounded fan-out, one deadline, and
//! a fair share of the in-flight limit.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use sluice_metrics::{OpKind, Outcome};
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::client::ApiClient;
use crate::error::{ApiError, Result};
use crate::request::{ApiRequest, ApiResponse};

type Admission =
    Pin<Box<dyn Future<Output = std::result::Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// What the batch's driver loop woke up for.
enum Event {
    Admitted(std::result::Result<OwnedSemaphorePermit, AcquireError>),
    Joined(Option<std::result::Result<(usize, Result<ApiResponse>), JoinError>>),
    DeadlinePassed,
}

impl ApiClient {
    /// Sends every request concurrently, at most the shared in-flight limit
    /// at a time (shared with every other batch and request of the
    /// process), all within one `deadline` (the upstream's default when
    /// `None`). Returns one result per request, in input order: a failed
    /// request is a failed item, never a failed batch. Identical body-less
    /// GETs in one batch are sent once and their result repeated.
    ///
    /// **Fair share.** Concurrent batches of this client take turns for
    /// in-flight slots, one slot per turn (a first-come, first-served turn
    /// queue), and only the batch whose turn it is waits at the limiter.
    /// So batches interleave slot by slot even when many slots free up at
    /// once, and a single request waits behind at most one batch request,
    /// never behind whole batches. A batch alone still takes every free
    /// slot, one turn after another without waiting. Requests never given a
    /// slot before the deadline fail as [`ApiError::Overloaded`] without
    /// being sent.
    pub async fn batch(
        &self,
        requests: Vec<ApiRequest>,
        deadline: Option<Duration>,
    ) -> Vec<Result<ApiResponse>> {
        let deadline = deadline.unwrap_or(self.inner.config.deadline);
        let started = Instant::now();
        let ends = started + deadline;
        // Fold duplicates: `slots[i]` is the unique request serving input i.
        let mut unique: Vec<ApiRequest> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut slots = Vec::with_capacity(requests.len());
        for request in requests {
            let slot = match request.coalescing_key() {
                Some(key) => *seen.entry(key).or_insert_with(|| {
                    unique.push(request.clone());
                    unique.len() - 1
                }),
                None => {
                    unique.push(request);
                    unique.len() - 1
                }
            };
            slots.push(slot);
        }
        let mut results: Vec<Option<Result<ApiResponse>>> = vec![None; unique.len()];
        let mut waiting = unique.into_iter().enumerate();
        let mut next = waiting.next();
        // One slot per turn: a batch holds the turn only while it waits
        // for one slot, then queues for the turn again behind the others.
        let admit = || -> Admission {
            let (turns, limiter) = (self.inner.batch_turns.clone(), self.inner.limiter.clone());
            Box::pin(async move {
                let _turn = turns.lock_owned().await;
                limiter.acquire_owned().await
            })
        };
        let mut admission = next.as_ref().map(|_| admit());
        let mut tasks = JoinSet::new();
        // Bodies held so far; past the limit, nothing more is fetched.
        let limit = self.inner.config.max_batch_bytes;
        let too_large = || ApiError::BatchTooLarge {
            upstream: self.inner.name.clone(),
            limit,
        };
        let (mut held, mut exceeded) = (0usize, false);
        let mut deadline_passed = false;
        let mut timer = std::pin::pin!(tokio::time::sleep_until(ends));
        while admission.is_some() || !tasks.is_empty() {
            let event = poll_fn(|cx| {
                if let Some(waiting) = admission.as_mut()
                    && let Poll::Ready(admitted) = waiting.as_mut().poll(cx)
                {
                    admission = None;
                    return Poll::Ready(Event::Admitted(admitted));
                }
                if !tasks.is_empty()
                    && let Poll::Ready(joined) = tasks.poll_join_next(cx)
                {
                    return Poll::Ready(Event::Joined(joined));
                }
                if !deadline_passed && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::DeadlinePassed);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Admitted(Ok(permit)) => {
                    if let Some((index, mut request)) = next.take() {
                        let client = self.clone();
                        request.timeout =
                            Some(request.timeout.map_or(deadline, |t| t.min(deadline)));
                        tasks.spawn(async move {
                            let sent = client.send(request, Some(permit));
                            let result = match tokio::time::timeout_at(ends, sent).await {
                                Ok(result) => result,
                                Err(_) => Err(ApiError::Timeout {
                                    upstream: client.inner.name.clone(),
                                    after: deadline,
                                }),
                            };
                            (index, result)
                        });
                    }
                    next = waiting.next();
                    admission = next.as_ref().map(|_| admit());
                }
                // The limiter is never closed; if it were, nothing more
                // could be sent.
                Event::Admitted(Err(_)) => {
                    let closed = || ApiError::Closed {
                        upstream: self.inner.name.clone(),
                    };
                    fail_unsent(&mut results, next.take(), &mut waiting, closed);
                }
                Event::Joined(Some(Ok((index, result)))) => {
                    let size = result.as_ref().map_or(0, |r| r.body.len());
                    if exceeded || held.saturating_add(size) > limit {
                        // Dropped here; the rest are not fetched at all.
                        results[index] = Some(Err(too_large()));
                        exceeded = true;
                        tasks.abort_all();
                        admission = None;
                        next = None;
                        continue;
                    }
                    held += size;
                    results[index] = Some(result);
                }
                // Aborted (past the byte limit) or panicked: filled below.
                Event::Joined(_) => {}
                Event::DeadlinePassed => {
                    deadline_passed = true;
                    admission = None;
                    let overloaded = || ApiError::Overloaded {
                        upstream: self.inner.name.clone(),
                        waited: deadline,
                    };
                    fail_unsent(&mut results, next.take(), &mut waiting, overloaded);
                }
            }
        }
        if exceeded {
            for result in results.iter_mut().filter(|r| r.is_none()) {
                *result = Some(Err(too_large()));
            }
        }
        self.inner
            .metrics
            .record_since(OpKind::Batch, Outcome::Ok, started);
        slots
            .into_iter()
            .map(|slot| {
                results[slot].clone().unwrap_or_else(|| {
                    Err(ApiError::InvalidRequest {
                        upstream: self.inner.name.clone(),
                        reason: "the request's task failed".into(),
                    })
                })
            })
            .collect()
    }
}

/// Fails every request not yet given a slot (`next`, then the rest of
/// `waiting`) with `error()`: they were never sent.
fn fail_unsent(
    results: &mut [Option<Result<ApiResponse>>],
    next: Option<(usize, ApiRequest)>,
    waiting: &mut impl Iterator<Item = (usize, ApiRequest)>,
    error: impl Fn() -> ApiError,
) {
    for (index, _) in next.into_iter().chain(waiting) {
        results[index] = Some(Err(error()));
    }
}
