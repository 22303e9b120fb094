//! Runs the policy's success path `N` times (the first argument) inside one
//! runtime, for instruction counts: run it under `valgrind --tool=callgrind`
//! at two values of `N` and divide the difference in instructions by the
//! difference in calls. Wall-clock benchmarks on a shared machine vary by
//! more than the path costs; instruction counts repeat exactly.
//!
//! ```text
//! cargo build --release -p sluice-retry --example success_path
//! valgrind --tool=callgrind target/release/examples/success_path 1000
//! valgrind --tool=callgrind target/release/examples/success_path 101000
//! ```

use std::hint::black_box;

use sluice_retry::Policy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: u64 = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    let bare = std::env::args().nth(2).as_deref() == Some("bare");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    // The default policy: deadline, attempt timeout, breaker and budget.
    let policy = if bare {
        Policy::builder()
            .no_breaker()
            .no_budget()
            .no_deadline()
            .build()?
    } else {
        Policy::builder().build()?
    };
    let ok = rt.block_on(async {
        let mut ok = 0u64;
        for _ in 0..calls {
            let run = policy.run(|_| async { Ok::<u64, std::io::Error>(black_box(7)) });
            ok += u64::from(run.await.is_ok());
        }
        ok
    });
    println!("{ok} of {calls} calls succeeded");
    Ok(())
}
