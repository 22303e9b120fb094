//! The fault-injecting upstream as a process, for `cargo xtask bench`:
//! `bench_upstream <port> <latency_ms>`. Serves until killed.

#![allow(missing_docs)]

use std::sync::atomic::Ordering;

use sluice_tests::upstream::Upstream;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let latency: u64 = args.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let upstream = Upstream::start_on(([127, 0, 0, 1], port).into()).await?;
    upstream.state.latency_ms.store(latency, Ordering::SeqCst);
    println!("listening on {}", upstream.base_url());
    std::future::pending::<()>().await;
    Ok(())
}
