//! `cargo xtask bench [retry|metrics]`: benchmarks whose figures the docs
//! quote, reproducible with one command.

use anyhow::{Result, bail};

const CRITERION_ARGS: [&str; 5] = ["--", "--warm-up-time", "1", "--measurement-time", "3"];

pub(crate) fn run(args: &[String]) -> Result<()> {
    let which: Vec<&str> = if args.is_empty() {
        vec!["metrics", "retry", "db", "api-client"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in which {
        match name {
            "metrics" => metrics()?,
            "retry" => retry()?,
            "db" => db()?,
            "api-client" => api_client()?,
            "server" => crate::load::run()?,
            other => {
                bail!("unknown benchmark `{other}`; known: metrics, retry, db, api-client, server")
            }
        }
    }
    Ok(())
}

/// Recording one operation (criterion).
fn metrics() -> Result<()> {
    crate::run_step(
        "criterion: sluice-metrics record",
        crate::cargo()
            .args(["bench", "-p", "sluice-metrics", "--bench", "record"])
            .args(CRITERION_ARGS),
    )
}

/// The retry simulation (naive vs default policy, side by side) and the
/// policy's success-path overhead (criterion).
fn retry() -> Result<()> {
    crate::run_step(
        "retry simulation",
        crate::cargo().args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "sluice-retry",
            "--example",
            "simulate",
        ]),
    )?;
    crate::run_step(
        "criterion: sluice-retry policy",
        crate::cargo()
            .args(["bench", "-p", "sluice-retry", "--bench", "policy"])
            .args(CRITERION_ARGS),
    )
}

/// sluice-db vs sqlx on the same pool (criterion), against a provisioned
/// PostgreSQL (or `DATABASE_URL`) and in-memory SQLite.
fn db() -> Result<()> {
    let services = crate::test::Services::provision()?;
    crate::run_step(
        "criterion: sluice-db point_select",
        crate::cargo()
            .args(["bench", "-p", "sluice-db", "--bench", "point_select"])
            .args(CRITERION_ARGS)
            .env("DATABASE_URL", &services.database_url),
    )
}

/// sluice-api-client vs bare hyper-util on a local upstream, and batch wall
/// time vs its floor.
fn api_client() -> Result<()> {
    crate::run_step(
        "api-client throughput and batch",
        crate::cargo().args(["bench", "-p", "sluice-tests", "--bench", "api_client"]),
    )
}
