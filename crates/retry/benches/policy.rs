//! Policy overhead on the success path, and the cost of a rejection while
//! the breaker is open.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_retry::{BreakerConfig, Policy, Window};

fn policy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let full = Policy::builder().build().expect("default policy");
    let bare = Policy::builder()
        .no_breaker()
        .no_budget()
        .no_deadline()
        .build()
        .expect("bare policy");
    let mut group = c.benchmark_group("policy");
    group.bench_function("direct_call", |b| {
        b.iter(|| rt.block_on(async { black_box(Ok::<u64, std::io::Error>(black_box(7))) }))
    });
    // What the policy's two clock reads cost in this build (tokio's
    // `test-util`, enabled by the tests, makes each read check for a
    // paused clock).
    group.bench_function("direct_call_two_clock_reads", |b| {
        b.iter(|| {
            rt.block_on(async {
                let t = tokio::time::Instant::now();
                let r = black_box(Ok::<u64, std::io::Error>(black_box(7)));
                black_box(t.elapsed());
                r
            })
        })
    });
    group.bench_function("success_default_policy", |b| {
        b.iter(|| rt.block_on(full.run(|_| async { Ok::<u64, std::io::Error>(black_box(7)) })))
    });
    // A thousand calls inside one `block_on`: the runtime's own cost per
    // `block_on` (the `direct_call` row) would otherwise swamp the
    // policy's. Divide by 1,000 for one call.
    group.bench_function("success_default_policy_1000_calls", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..1000 {
                    let r = full.run(|_| async { Ok::<u64, std::io::Error>(black_box(7)) });
                    black_box(r.await.ok());
                }
            })
        })
    });
    group.bench_function("direct_call_1000_calls", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..1000 {
                    let r = async { Ok::<u64, std::io::Error>(black_box(7)) };
                    black_box(r.await.ok());
                }
            })
        })
    });
    group.bench_function("success_attempts_only", |b| {
        b.iter(|| rt.block_on(bare.run(|_| async { Ok::<u64, std::io::Error>(black_box(7)) })))
    });
    let open = Policy::builder()
        .breaker(BreakerConfig {
            window: Window::Count(1),
            min_calls: 1,
            open_interval: Duration::from_secs(3600),
            max_open_interval: Duration::from_secs(3600),
            ..Default::default()
        })
        .build()
        .expect("policy");
    let _ = rt.block_on(open.run(|_| async {
        Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }));
    group.bench_function("rejected_breaker_open", |b| {
        b.iter(|| rt.block_on(open.run(|_| async { Ok::<u64, std::io::Error>(7) })))
    });
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
