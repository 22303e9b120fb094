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
//!
//! A second argument `bare` turns deadline, breaker and budget off;
//! `shared` builds the breaker and the budget apart and shares them into
//! the policy, as the API client does.

use std::hint::black_box;

use sluice_retry::{BreakerConfig, BudgetConfig, CircuitBreaker, Policy, RetryBudget};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: u64 = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    // `bare`: attempts only. `shared`: a breaker and a budget built apart
    // and shared into the policy, as the API client does.
    let mode = std::env::args().nth(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    // The default policy: deadline, attempt timeout, breaker and budget.
    let policy = match mode.as_deref() {
        Some("bare") => Policy::builder()
            .no_breaker()
            .no_budget()
            .no_deadline()
            .build()?,
        Some("shared") => {
            let breaker = CircuitBreaker::try_new(BreakerConfig::default())?;
            std::thread::sleep(std::time::Duration::from_millis(1));
            let budget = RetryBudget::try_new(BudgetConfig::default())?;
            Policy::builder()
                .shared_breaker(breaker)
                .shared_budget(budget)
                .build()?
        }
        _ => Policy::builder().build()?,
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
