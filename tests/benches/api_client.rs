//! `cargo xtask bench api-client`: sluice-api-client against hyper-util's
//! client used bare, on the same local upstream and workload, and batch
//! wall time against its physical floor. Prints a Markdown table.

#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_api_client::{ApiClient, ApiPath, ApiRequest, UpstreamConfig};
use sluice_metrics::Registry;
use sluice_tests::upstream::Upstream;
use tokio::sync::Semaphore;

const WORKERS: usize = 32;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and
/// then one short round checks that the bench still runs (as criterion does).
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Requests per second from `WORKERS` loops calling `call` for `RUN`.
async fn throughput<F, Fut>(call: F, run: Duration) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (call, done) = (call.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = w as u64 * 1_000_000;
                while started.elapsed() < run {
                    i += 1;
                    assert!(call(i).await, "request failed");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let upstream = Upstream::start().await.expect("upstream");
    let mut config = UpstreamConfig::new("bench", &upstream.base_url()).expect("config");
    // The per-upstream pool must not be the bottleneck: the cap under test
    // is the process-wide in-flight limit of 100.
    config.max_connections = 128;
    let api = ApiClient::with_limiter(config, Arc::new(Semaphore::new(100)), &Registry::new())
        .expect("client");
    let bare: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let base = upstream.base_url();

    let (run, rounds, batch_rounds) = if full_run() {
        (Duration::from_secs(3), 3, 5)
    } else {
        (Duration::from_millis(200), 1, 1)
    };
    // Alternate the two, three rounds each, and compare medians.
    let (mut sluice_rps, mut bare_rps) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let client = api.clone();
        sluice_rps.push(
            throughput(
                move |i| {
                    let client = client.clone();
                    async move {
                        let r = client
                            .request(ApiRequest::get(
                                ApiPath::new().push("data").push(&i.to_string()),
                            ))
                            .await;
                        r.is_ok_and(|r| r.status == 200)
                    }
                },
                run,
            )
            .await,
        );
        let (client, base) = (bare.clone(), base.clone());
        bare_rps.push(
            throughput(
                move |i| {
                    let (client, base) = (client.clone(), base.clone());
                    async move {
                        let uri = format!("{base}/data/{i}").parse().expect("uri");
                        match client.get(uri).await {
                            Ok(response) => {
                                let ok = response.status() == 200;
                                ok && response.into_body().collect().await.is_ok()
                            }
                            Err(_) => false,
                        }
                    }
                },
                run,
            )
            .await,
        );
    }
    let (s, b) = (median(sluice_rps), median(bare_rps));

    // Batch: 1000 ids, cap 100, 20 ms upstream: floor = 10 × 20 ms.
    upstream.state.latency_ms.store(20, Ordering::SeqCst);
    let mut walls = Vec::new();
    for round in 0..batch_rounds {
        let requests: Vec<ApiRequest> = (0..1000)
            .map(|i| ApiRequest::get(ApiPath::new().push("data").push(&format!("r{round}-{i}"))))
            .collect();
        let started = Instant::now();
        let results = api.batch(requests, None).await;
        walls.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(results.iter().all(Result::is_ok));
    }
    let wall = median(walls);
    let floor = 10.0 * 20.0;

    println!("## sluice-api-client benchmark (127.0.0.1 upstream, {WORKERS} concurrent callers)\n");
    println!("| measure | sluice-api-client | reference | ratio | goal |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| GET requests/s, 0 ms upstream (median of {rounds} × {:.1} s) | {s:.0} | {b:.0} (hyper-util bare) | {:.2}× | ≥ 0.90× |",
        run.as_secs_f64(),
        s / b
    );
    println!(
        "| batch of 1000, cap 100, 20 ms upstream: wall ms (median of {batch_rounds}) | {wall:.1} | {floor:.1} (floor) | {:.2}× | ≤ 1.15× |",
        wall / floor
    );
}
