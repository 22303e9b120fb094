//! sluice-api-client against a local fault-injecting upstream on 127.0.0.1.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_api_client::{
    ApiClient, ApiError, ApiPath, ApiRequest, BreakerConfig, CircuitState, Method, UpstreamConfig,
    Window,
};
use sluice_metrics::Registry;
use sluice_pool::Secret;
use sluice_tests::upstream::Upstream;
use tokio::sync::Semaphore;

fn config(upstream: &Upstream) -> UpstreamConfig {
    let mut c = UpstreamConfig::new("test_upstream", &upstream.base_url()).unwrap();
    c.retry_delay = Duration::from_millis(10);
    c.timeout = Duration::from_secs(2);
    c.deadline = Duration::from_secs(5);
    c
}

fn client(config: UpstreamConfig) -> ApiClient {
    ApiClient::with_limiter(config, Arc::new(Semaphore::new(100)), &Registry::new()).unwrap()
}

fn path(parts: &[&str]) -> ApiPath {
    parts.iter().fold(ApiPath::new(), |p, s| p.push(s))
}

#[tokio::test]
async fn retries_only_transient_failures_of_idempotent_requests() {
    let upstream = Upstream::start().await.unwrap();
    let api = client(config(&upstream));
    // GET 503: retried to the 3 attempts, then a Status error.
    let err = api
        .request(ApiRequest::get(path(&["status", "503"])))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(upstream.state.hits("/status/503"), 3);
    // Permanent statuses are answered at once: no retry.
    for code in ["404", "500", "400"] {
        let response = api
            .request(ApiRequest::get(path(&["status", code])))
            .await
            .unwrap();
        assert_eq!(response.status.to_string(), code);
        assert_eq!(upstream.state.hits(&format!("/status/{code}")), 1, "{code}");
    }
    // POST is not idempotent: sent once.
    upstream.state.reset_counts();
    let err = api
        .request(ApiRequest::new(Method::POST, path(&["status", "502"])))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(upstream.state.hits("/status/502"), 1);
    // …unless the caller marks it idempotent.
    api.request(ApiRequest::new(Method::POST, path(&["status", "502"])).idempotent())
        .await
        .unwrap_err();
    assert_eq!(upstream.state.hits("/status/502"), 4);
    // A connection reset is transient too.
    let err = api
        .request(ApiRequest::get(path(&["reset"])))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
    assert_eq!(upstream.state.hits("/reset"), 3);
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_deadline() {
    let upstream = Upstream::start().await.unwrap();
    let mut c = config(&upstream);
    c.retry_attempts = 2;
    let api = client(c);
    let started = Instant::now();
    api.request(ApiRequest::get(path(&["status", "429"])).query("retry_after", "1"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.state.hits("/status/429"), 2);
    // With a 500 ms deadline a 1 s Retry-After cannot fit: no second attempt.
    upstream.state.reset_counts();
    let started = Instant::now();
    let err = api
        .request(
            ApiRequest::get(path(&["status", "503"]))
                .query("retry_after", "1")
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(upstream.state.hits("/status/503"), 1);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn the_deadline_covers_every_attempt() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(300, Ordering::SeqCst);
    let mut c = config(&upstream);
    // Five 200 ms attempts would take over a second; the 500 ms deadline
    // must cut the call well before that.
    c.retry_attempts = 5;
    c.timeout = Duration::from_millis(200);
    c.deadline = Duration::from_millis(500);
    let api = client(c);
    let started = Instant::now();
    let err = api
        .request(ApiRequest::get(path(&["data", "slow"])))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(upstream.state.hits("/data/slow") <= 2);
}

#[tokio::test]
async fn the_breaker_opens_in_an_outage_answers_at_once_and_closes_after() {
    let upstream = Upstream::start().await.unwrap();
    let mut c = config(&upstream);
    c.retry_attempts = 1;
    c.breaker = BreakerConfig {
        window: Window::Count(10),
        min_calls: 5,
        open_interval: Duration::from_millis(500),
        half_open_probes: 1,
        ..BreakerConfig::default()
    };
    let api = client(c);
    upstream.state.down.store(true, Ordering::SeqCst);
    let mut open_answers = 0;
    for i in 0..30 {
        let started = Instant::now();
        match api
            .request(ApiRequest::get(path(&["data", &i.to_string()])))
            .await
        {
            Err(ApiError::CircuitOpen { retry_after, .. }) => {
                open_answers += 1;
                assert!(retry_after <= Duration::from_millis(500));
                assert!(
                    started.elapsed() < Duration::from_millis(50),
                    "{:?}",
                    started.elapsed()
                );
            }
            Err(ApiError::Status { status: 503, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        open_answers, 25,
        "5 calls open the breaker, the rest are rejected"
    );
    assert_eq!(upstream.state.requests.load(Ordering::SeqCst), 5);
    assert_eq!(api.circuit(), CircuitState::Open);
    upstream.state.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(550)).await;
    let body: serde_json::Value = api.get_json(path(&["data", "back"])).await.unwrap();
    assert_eq!(body["id"], "back");
    assert_eq!(api.circuit(), CircuitState::Closed);
}

#[tokio::test]
async fn a_batch_of_a_thousand_never_exceeds_the_in_flight_cap() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(20, Ordering::SeqCst);
    let api = client(config(&upstream));
    let requests: Vec<ApiRequest> = (0..1000)
        .map(|i| ApiRequest::get(path(&["data", &format!("id{i}")])))
        .collect();
    let results = api.batch(requests, None).await;
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        let body: serde_json::Value = result.as_ref().unwrap().json().unwrap();
        assert_eq!(
            body["id"],
            format!("id{i}"),
            "results come back in input order"
        );
    }
    let max = upstream.state.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 100, "{max} requests in flight at once");
    assert!(
        max >= 50,
        "the batch should use the cap, not run serially: {max}"
    );
    assert_eq!(upstream.state.requests.load(Ordering::SeqCst), 1000);
}

#[tokio::test]
async fn concurrent_batches_share_one_cap() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(10, Ordering::SeqCst);
    let limiter = Arc::new(Semaphore::new(20));
    let api = ApiClient::with_limiter(config(&upstream), limiter, &Registry::new()).unwrap();
    let batches: Vec<_> = (0..10)
        .map(|b| {
            let api = api.clone();
            tokio::spawn(async move {
                let requests = (0..50)
                    .map(|i| ApiRequest::get(path(&["data", &format!("b{b}-{i}")])))
                    .collect();
                api.batch(requests, None).await
            })
        })
        .collect();
    for batch in batches {
        assert!(batch.await.unwrap().iter().all(Result::is_ok));
    }
    assert!(upstream.state.max_in_flight.load(Ordering::SeqCst) <= 20);
}

/// `batches` batches of `size` behind a limit of `limit`, each request
/// 10 ms, and one single request once they are under way. First come,
/// first served would run the batches one after another and make the
/// single request wait behind everything queued; taking turns, the batches
/// end together and the single request waits about one round. Returns
/// (requests sent before the single one finished, requests sent when the
/// first batch ended).
async fn batches_and_a_single_request(limit: usize, batches: usize, size: usize) -> (u64, u64) {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(10, Ordering::SeqCst);
    let api = ApiClient::with_limiter(
        config(&upstream),
        Arc::new(Semaphore::new(limit)),
        &Registry::new(),
    )
    .unwrap();
    let received = || upstream.state.requests.load(Ordering::SeqCst);
    let mut running = tokio::task::JoinSet::new();
    for b in 0..batches {
        let api = api.clone();
        running.spawn(async move {
            let requests = (0..size)
                .map(|i| ApiRequest::get(path(&["data", &format!("b{b}-{i}")])))
                .collect();
            let results = api.batch(requests, None).await;
            assert!(
                results.iter().all(Result::is_ok),
                "batch {b}: an item failed"
            );
        });
    }
    // Wait until the batches are under way (the limit is full, twice).
    while received() < 2 * limit as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let single = api
        .request(ApiRequest::get(path(&["data", "single"])))
        .await
        .unwrap();
    assert_eq!(single.status, 200);
    let before_single = received();
    running.join_next().await.unwrap().unwrap();
    let when_first_ended = received();
    while let Some(batch) = running.join_next().await {
        batch.unwrap();
    }
    assert!(upstream.state.max_in_flight.load(Ordering::SeqCst) <= limit as u64);
    assert_eq!(upstream.state.hits("/data/single"), 1);
    assert_eq!(received(), (batches * size) as u64 + 1);
    (before_single, when_first_ended)
}

#[tokio::test]
async fn concurrent_batches_take_turns_and_a_single_request_waits_behind_neither() {
    // Slots free one at a time (a small limit): first come, first served
    // would have sent some seventy of 81 before the single one.
    let (before_single, when_first_ended) = batches_and_a_single_request(4, 2, 40).await;
    assert!(
        before_single <= 24,
        "{before_single} requests reached the upstream before the single one finished"
    );
    assert!(
        when_first_ended >= 70,
        "only {when_first_ended} of 81 requests were sent when the first batch ended"
    );
}

#[tokio::test]
async fn batches_take_turns_when_many_slots_free_at_once() {
    // 20 requests in flight end together, so 20 slots free at once: a
    // batch that grabbed every free slot would run whole (the server's
    // 8 batches of 100 behind 100 slots did, before turns). The first batch
    // starts a round ahead, alone; the others end within a round of it.
    let (before_single, when_first_ended) = batches_and_a_single_request(20, 4, 60).await;
    assert!(
        before_single <= 100,
        "{before_single} of 241 requests reached the upstream before the single one finished"
    );
    assert!(
        when_first_ended >= 160,
        "only {when_first_ended} of 241 requests were sent when the first batch ended"
    );
}

/// A batch alone is not held to one slot at a time: it fills the limit.
#[tokio::test]
async fn a_batch_alone_uses_every_free_slot() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(50, Ordering::SeqCst);
    let api = client(config(&upstream));
    let requests = (0..100)
        .map(|i| ApiRequest::get(path(&["data", &i.to_string()])))
        .collect();
    let results = api.batch(requests, None).await;
    assert!(results.iter().all(Result::is_ok));
    let max = upstream.state.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max >= 90,
        "only {max} of 100 requests were in flight at once"
    );
}

#[tokio::test]
async fn a_batch_with_mixed_failures_returns_every_item_in_order() {
    let upstream = Upstream::start().await.unwrap();
    let mut c = config(&upstream);
    c.retry_attempts = 1;
    let api = client(c);
    let requests = vec![
        ApiRequest::get(path(&["data", "a"])),
        ApiRequest::get(path(&["status", "404"])),
        ApiRequest::get(path(&["data", "b"])),
        ApiRequest::get(path(&["status", "503"])),
        ApiRequest::get(path(&["reset"])),
        ApiRequest::get(path(&["data", "a"])),
    ];
    let results = api.batch(requests, None).await;
    assert_eq!(results.len(), 6);
    assert_eq!(results[0].as_ref().unwrap().status, 200);
    assert_eq!(results[1].as_ref().unwrap().status, 404);
    assert_eq!(
        results[2]
            .as_ref()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap()["id"],
        "b"
    );
    assert_eq!(results[3].as_ref().unwrap_err().status(), Some(503));
    assert!(matches!(results[4], Err(ApiError::Transport { .. })));
    assert_eq!(results[5].as_ref().unwrap().status, 200);
    assert_eq!(
        upstream.state.hits("/data/a"),
        1,
        "a repeated id is fetched once"
    );
}

#[tokio::test]
async fn a_hundred_identical_concurrent_gets_make_one_upstream_call() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(300, Ordering::SeqCst);
    let api = client(config(&upstream));
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                api.get_json::<serde_json::Value>(path(&["data", "same"]))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap()["id"], "same");
    }
    assert_eq!(upstream.state.hits("/data/same"), 1);
    assert_eq!(api.coalesced_in_flight(), 0);
    // A lone caller's answer (moved out of the shared cell, not cloned)
    // is whole: status, headers and body.
    let lone = api
        .request(ApiRequest::get(path(&["data", "lone"])))
        .await
        .unwrap();
    assert_eq!(lone.status, 200);
    assert_eq!(lone.content_type(), "application/json");
    assert_eq!(lone.json::<serde_json::Value>().unwrap()["id"], "lone");
    assert_eq!(api.coalesced_in_flight(), 0);
    // Afterwards a new call goes upstream again (results are not cached).
    api.get_json::<serde_json::Value>(path(&["data", "same"]))
        .await
        .unwrap();
    assert_eq!(upstream.state.hits("/data/same"), 2);
}

#[tokio::test]
async fn hostile_path_segments_never_reach_another_path() {
    let upstream = Upstream::start().await.unwrap();
    let api = client(config(&upstream));
    for id in [
        "../x",
        "a/b",
        "%2F",
        "..",
        ".",
        "a?b=c#d",
        "ctl\n\r\t\u{0}",
        "../../status/500",
    ] {
        let body: serde_json::Value = api.get_json(path(&["echo", id])).await.unwrap();
        let received = body["path"].as_str().unwrap();
        assert!(received.starts_with("/echo/"), "{id:?} reached {received}");
        assert_eq!(
            received.matches('/').count(),
            2,
            "{id:?} reached {received}"
        );
        assert_eq!(body["query"], "", "{id:?}");
    }
    let hits = upstream.state.all_hits();
    assert!(hits.keys().all(|p| p.starts_with("/echo/")), "{hits:?}");
}

/// The base URL's path prefixes every request's target, with or without
/// its trailing `/`, and the query goes after the whole path.
#[tokio::test]
async fn a_base_url_path_prefixes_every_target() {
    let upstream = Upstream::start().await.unwrap();
    for base in ["/echo/v1", "/echo/v1/"] {
        let mut c = config(&upstream);
        c.base_url = url::Url::parse(&format!("{}{base}", upstream.base_url())).unwrap();
        let api = client(c);
        let body: serde_json::Value = api.get_json(path(&["items", "a b"])).await.unwrap();
        assert_eq!(body["path"], "/echo/v1/items/a%20b", "{base}");
        assert_eq!(body["query"], "", "{base}");
        let response = api
            .request(ApiRequest::get(path(&["q"])).query("k", "v w"))
            .await
            .unwrap();
        let body: serde_json::Value = response.json().unwrap();
        assert_eq!(body["path"], "/echo/v1/q", "{base}");
        assert_eq!(body["query"], "k=v+w", "{base}");
        assert!(
            body["host"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{body}"
        );
    }
    // An empty path on a base without one is the root, query or not.
    let api = client(config(&upstream));
    for (request, target) in [
        (ApiRequest::get(ApiPath::new()), "/"),
        (ApiRequest::get(ApiPath::new()).query("k", "v"), "/?k=v"),
    ] {
        upstream.state.reset_counts();
        let response = api.request(request).await.unwrap();
        assert_eq!(response.status, 404, "{target}");
        let path = target.split('?').next().unwrap();
        assert_eq!(upstream.state.hits(path), 1, "{target}");
    }
}

#[tokio::test]
async fn bodies_are_checked_not_trusted() {
    let upstream = Upstream::start().await.unwrap();
    let mut c = config(&upstream);
    c.max_body_bytes = 1024;
    c.retry_attempts = 1;
    c.timeout = Duration::from_millis(300);
    let api = client(c);
    let err = api
        .get_json::<serde_json::Value>(path(&["invalid-json"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::InvalidJson { .. }), "{err:?}");
    let err = api
        .get_json::<serde_json::Value>(path(&["text"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("text/plain"), "{err}");
    for route in ["big", "big-chunked"] {
        let err = api
            .request(ApiRequest::get(path(&[route, "5000"])))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::BodyTooLarge { limit: 1024, .. }),
            "{route}: {err:?}"
        );
    }
    assert!(
        api.request(ApiRequest::get(path(&["big", "100"])))
            .await
            .is_ok()
    );
    let err = api
        .request(ApiRequest::get(path(&["slow-body", "2000"])))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn default_headers_are_sent_and_never_shown() {
    let upstream = Upstream::start().await.unwrap();
    let mut c = config(&upstream);
    c.headers.push((
        "authorization".into(),
        Secret::new("Bearer tok-hunter2".into()),
    ));
    let api = client(c.clone());
    let body: serde_json::Value = api.get_json(path(&["echo", "auth"])).await.unwrap();
    assert_eq!(body["authorization"], "Bearer tok-hunter2");
    let shown = format!("{api:?} {c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = api
        .request(ApiRequest::get(path(&["status", "503"])))
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_connect_error() {
    let port = sluice_tests::provision::free_port().unwrap();
    let mut c = UpstreamConfig::new("gone", &format!("http://127.0.0.1:{port}")).unwrap();
    c.retry_delay = Duration::from_millis(10);
    let api = client(c);
    let err = api
        .request(ApiRequest::get(path(&["data", "x"])))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
    assert!(api.pool_stats().max == 100);
}

#[tokio::test]
async fn queueing_for_a_local_slot_is_not_an_upstream_failure() {
    // 100 ids at 200 ms each, 5 at a time: the last ones queue for about
    // 4 s, four times the 1 s attempt timeout, well within the deadline.
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(200, Ordering::SeqCst);
    let mut config = config(&upstream);
    config.timeout = Duration::from_secs(1);
    config.deadline = Duration::from_secs(10);
    let api =
        ApiClient::with_limiter(config, Arc::new(Semaphore::new(5)), &Registry::new()).unwrap();
    let requests: Vec<ApiRequest> = (0..100)
        .map(|i| ApiRequest::get(path(&["data", &i.to_string()])))
        .collect();
    let results = api.batch(requests, None).await;
    let failed: Vec<&ApiError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(api.circuit(), CircuitState::Closed);
    // Each id was sent once: no attempt timed out while queueing.
    assert_eq!(upstream.state.hits("/data/0"), 1);
    assert_eq!(upstream.state.hits("/data/99"), 1);
    assert_eq!(api.pool_stats().waiting, 0);
}

#[tokio::test]
async fn a_deadline_spent_queueing_is_overloaded_and_sends_nothing() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(500, Ordering::SeqCst);
    let api = ApiClient::with_limiter(
        config(&upstream),
        Arc::new(Semaphore::new(1)),
        &Registry::new(),
    )
    .unwrap();
    let busy = {
        let api = api.clone();
        tokio::spawn(async move { api.request(ApiRequest::get(path(&["data", "busy"]))).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = api
        .request(ApiRequest::get(path(&["data", "queued"])).timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(queued, ApiError::Overloaded { .. }), "{queued:?}");
    assert_eq!(upstream.state.hits("/data/queued"), 0);
    assert_eq!(api.circuit(), CircuitState::Closed);
    assert_eq!(busy.await.unwrap().unwrap().status, 200);
}

#[tokio::test]
async fn cancelled_callers_leave_the_coalescing_map_empty() {
    let upstream = Upstream::start().await.unwrap();
    upstream.state.latency_ms.store(2_000, Ordering::SeqCst);
    let api = client(config(&upstream));
    // Unique ids, every caller gone before the upstream answers.
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let api = api.clone();
        callers.spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(50),
                api.request(ApiRequest::get(path(&["data", &format!("gone-{i}")]))),
            )
            .await
            .is_err()
        });
    }
    while let Some(cancelled) = callers.join_next().await {
        assert!(cancelled.unwrap());
    }
    assert_eq!(api.coalesced_in_flight(), 0);
    // Ten callers of one id: nine leave, the last still gets the answer,
    // and the entry is gone after it.
    upstream.state.latency_ms.store(300, Ordering::SeqCst);
    let mut leaving = tokio::task::JoinSet::new();
    for _ in 0..9 {
        let api = api.clone();
        leaving.spawn(async move {
            let request = api.request(ApiRequest::get(path(&["data", "shared"])));
            tokio::time::timeout(Duration::from_millis(50), request).await
        });
    }
    let staying = api.request(ApiRequest::get(path(&["data", "shared"])));
    let (answer, ()) = tokio::join!(staying, async {
        while leaving.join_next().await.is_some() {}
    });
    assert_eq!(answer.unwrap().status, 200);
    assert_eq!(api.coalesced_in_flight(), 0);
}

#[tokio::test]
async fn a_dead_upstream_at_low_traffic_opens_the_breaker_after_a_few_calls() {
    // Nothing listens on this port: every connect is refused. The
    // default breaker needs 50 calls in 2 s for its rate rule; calls come
    // here one at a time, far below that.
    let port = sluice_tests::provision::free_port().unwrap();
    let mut c = UpstreamConfig::new("dead", &format!("http://127.0.0.1:{port}")).unwrap();
    c.retry_delay = Duration::from_millis(10);
    assert_eq!(c.breaker, BreakerConfig::default());
    let api = client(c);
    let mut calls_before_open = 0;
    for _ in 0..10 {
        let err = api
            .request(ApiRequest::get(path(&["data", "x"])))
            .await
            .unwrap_err();
        if matches!(err, ApiError::CircuitOpen { .. }) {
            break;
        }
        assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
        calls_before_open += 1;
    }
    // Three attempts per call, ten failures in a row: the fourth call.
    assert_eq!(calls_before_open, 4);
    assert_eq!(api.circuit(), CircuitState::Open);
}

#[tokio::test]
async fn a_black_holed_upstream_is_retried_within_the_deadline_then_trips_the_breaker() {
    // A listener that never accepts: connects complete in the kernel's
    // backlog, requests are never read.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    let mut c = UpstreamConfig::new("hole", &format!("http://{addr}")).unwrap();
    c.timeout = Duration::from_millis(100);
    c.deadline = Duration::from_millis(1_000);
    c.retry_delay = Duration::from_millis(10);
    let api = client(c);
    let mut timeouts = 0;
    for _ in 0..6 {
        match api.request(ApiRequest::get(path(&["data", "x"]))).await {
            Err(ApiError::Timeout { .. }) => timeouts += 1,
            Err(ApiError::CircuitOpen { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(timeouts, 4, "ten timed-out attempts, three per call");
    assert_eq!(api.circuit(), CircuitState::Open);
    drop(hole);
}

#[tokio::test]
async fn a_batch_stops_holding_answers_at_its_byte_limit() {
    let upstream = Upstream::start().await.unwrap();
    let mut config = config(&upstream);
    config.max_batch_bytes = 500_000;
    let api = client(config);
    let requests: Vec<ApiRequest> = (0..20)
        .map(|i| ApiRequest::get(path(&["data", &format!("big-1000{i:02}")])))
        .collect();
    let results = api.batch(requests, None).await;
    assert_eq!(results.len(), 20);
    let held: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.body.len())
        .sum();
    assert!(held <= 500_000, "{held} bytes held");
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ApiError::BatchTooLarge { limit: 500_000, .. })))
        .count();
    assert!(refused > 0);
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count() + refused,
        20,
        "every item is an answer or the limit's error"
    );
}
