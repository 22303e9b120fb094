//! Cost of recording one operation: Prometheus histogram + snapshot histogram.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_metrics::{Backend, OpKind, Outcome, Registry};

fn record(c: &mut Criterion) {
    // Installed globally, as the binary does: handles register lazily on
    // first use with whatever recorder is current then.
    let recorder = sluice_metrics::prometheus::build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first recorder");
    let registry = Registry::new();
    let db = registry.connection(Backend::Postgresql, "primary");
    let http = registry.connection(Backend::Http, "external");
    // The exporter buffers samples until upkeep drains them; run it as the
    // binary does, so the benchmark measures the steady state.
    let upkeep = handle.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            upkeep.run_upkeep();
        }
    });
    let mut group = c.benchmark_group("record");
    group.bench_function("db_query_ok", |b| {
        b.iter(|| {
            db.record(
                black_box(OpKind::Query),
                Outcome::Ok,
                black_box(Duration::from_micros(250)),
            )
        })
    });
    // What `timed` does after the operation: one clock read that both
    // times it and places it in the last-minute window, then the record.
    let started = tokio::time::Instant::now();
    group.bench_function("db_query_ok_since", |b| {
        b.iter(|| db.record_since(black_box(OpKind::Query), Outcome::Ok, black_box(started)))
    });
    group.bench_function("http_get_200", |b| {
        b.iter(|| {
            http.record_http(
                OpKind::Read,
                black_box("GET"),
                Ok(200),
                black_box(Duration::from_millis(20)),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
