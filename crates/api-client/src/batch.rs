//! [`ApiClient::batch`]: many requests, bounded fan-out, one deadline.

use std::collections::HashMap;
use std::time::Duration;

use sluice_metrics::{OpKind, Outcome};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::ApiClient;
use crate::error::{ApiError, Result};
use crate::request::{ApiRequest, ApiResponse};

impl ApiClient {
    /// Sends every request concurrently, at most the shared in-flight limit
    /// at a time (shared with every other batch and request of the
    /// process), all within one `deadline` (the upstream's default when
    /// `None`). Returns one result per request, in input order: a failed
    /// request is a failed item, never a failed batch. Identical body-less
    /// GETs in one batch are sent once and their result repeated.
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
        let mut tasks = JoinSet::new();
        for (index, mut request) in unique.into_iter().enumerate() {
            let client = self.clone();
            request.timeout = Some(request.timeout.map_or(deadline, |t| t.min(deadline)));
            tasks.spawn(async move {
                let result = match tokio::time::timeout_at(ends, client.request(request)).await {
                    Ok(result) => result,
                    Err(_) => Err(ApiError::Timeout {
                        upstream: client.inner.name.clone(),
                        after: deadline,
                    }),
                };
                (index, result)
            });
        }
        let mut results: Vec<Option<Result<ApiResponse>>> = vec![None; tasks.len()];
        // Bodies held so far; past the limit, nothing more is fetched.
        let limit = self.inner.config.max_batch_bytes;
        let too_large = || ApiError::BatchTooLarge {
            upstream: self.inner.name.clone(),
            limit,
        };
        let (mut held, mut exceeded) = (0usize, false);
        while let Some(joined) = tasks.join_next().await {
            let Ok((index, result)) = joined else {
                continue;
            };
            let size = result.as_ref().map_or(0, |r| r.body.len());
            if exceeded || held.saturating_add(size) > limit {
                // Dropped here; the rest are not fetched at all.
                results[index] = Some(Err(too_large()));
                exceeded = true;
                tasks.abort_all();
                continue;
            }
            held += size;
            results[index] = Some(result);
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
