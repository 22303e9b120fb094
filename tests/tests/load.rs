//! The recording load generator that the fault drills rely on, against the
//! local upstream: what it records must be what happened.

// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::load::{Call, Load, Outcome, percentile};
use sluice_tests::provision::free_port;
use sluice_tests::upstream::Upstream;

#[tokio::test]
async fn it_records_every_request_and_how_it_ended() {
    let upstream = Upstream::start().await.unwrap();
    let load = Load {
        addr: upstream.addr(),
        connections: 2,
        duration: Duration::from_millis(300),
        stop_when_refused: false,
    };
    let samples = load
        .run(
            Instant::now(),
            |worker, n| {
                if n % 2 == 0 {
                    Call::get(format!("/data/w{worker}-{n}"))
                } else {
                    Call::get("/status/503")
                }
            },
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
    let ok = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Status(200))
        .count();
    let unavailable = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Status(503))
        .count();
    assert!(ok > 0 && unavailable > 0);
    assert_eq!(ok + unavailable, samples.len());
    // Every request the generator recorded reached the upstream.
    assert_eq!(
        upstream.state.requests.load(Ordering::SeqCst),
        samples.len() as u64
    );
    assert!(samples.iter().all(|s| !s.resent));
    assert!(samples.iter().all(|s| s.start < Duration::from_millis(400)));
}

#[tokio::test]
async fn nothing_listening_is_refused_and_only_loopback_is_allowed() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let load = Load {
        addr,
        connections: 1,
        duration: Duration::from_secs(5),
        stop_when_refused: true,
    };
    let samples = load
        .run(
            Instant::now(),
            |_, _| Call::get("/"),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
    assert_eq!(samples.len(), 1, "the worker stops at the first refusal");
    assert_eq!(samples[0].outcome, Outcome::Refused);

    let remote = Load {
        addr: std::net::SocketAddr::from(([192, 0, 2, 1], 80)),
        ..load
    };
    assert!(
        remote
            .run(
                Instant::now(),
                |_, _| Call::get("/"),
                Arc::new(AtomicBool::new(false))
            )
            .await
            .is_err()
    );
}

#[test]
fn percentiles_are_nearest_rank() {
    let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
    assert_eq!(percentile(&mut v, 50.0), Duration::from_millis(50));
    assert_eq!(percentile(&mut v, 99.0), Duration::from_millis(99));
    assert_eq!(percentile(&mut v, 100.0), Duration::from_millis(100));
    assert_eq!(percentile(&mut [], 99.0), Duration::ZERO);
}
