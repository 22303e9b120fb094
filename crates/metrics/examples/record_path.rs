//! Records `N` operations (the first argument) through the installed
//! Prometheus recorder, for instruction counts: run it under
//! `valgrind --tool=callgrind` at two values of `N` and divide the
//! difference in instructions by the difference in calls. Wall-clock
//! benchmarks (`cargo bench -p sluice-metrics`) on a shared machine vary by
//! more than the path costs; instruction counts repeat exactly.
//!
//! ```text
//! cargo build --release -p sluice-metrics --example record_path
//! valgrind --tool=callgrind target/release/examples/record_path 1000
//! valgrind --tool=callgrind target/release/examples/record_path 21000
//! ```
//!
//! A second argument `http` records outbound HTTP requests instead of
//! database queries.

use std::hint::black_box;
use std::time::Duration;

use sluice_metrics::{Backend, OpKind, Outcome, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: u64 = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    let http = std::env::args().nth(2).as_deref() == Some("http");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let handle = rt.block_on(async { sluice_metrics::prometheus::install() })?;
    let registry = Registry::new();
    let db = registry.connection(Backend::Postgresql, "primary");
    let api = registry.connection(Backend::Http, "external");
    let started = tokio::time::Instant::now();
    for _ in 0..calls {
        if http {
            api.record_http_since(OpKind::Read, black_box("GET"), Ok(200), black_box(started));
        } else {
            db.record_since(black_box(OpKind::Query), Outcome::Ok, black_box(started));
        }
    }
    // Drain what the exporter buffered, as its upkeep does every 5 s.
    handle.run_upkeep();
    let text = handle.render();
    println!(
        "{calls} recorded; exposition {} bytes; {:?} elapsed",
        text.len(),
        Duration::from_nanos(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    );
    Ok(())
}
