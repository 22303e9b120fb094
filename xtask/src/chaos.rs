//! `cargo xtask chaos [DRILL…]`: fault drills against the release server.
//!
//! Builds the server and the drill runner (`sluice-tests`' `chaos`
//! example) in release mode and runs it. The runner provisions its own
//! PostgreSQL and Redis — it stops, kills and restarts them, so it never
//! uses `DATABASE_URL`/`REDIS_URL` — and a fault-injecting upstream, all on
//! 127.0.0.1; every drill is bounded in time. The last lines it prints are
//! one Markdown table, one row per goal.

use std::process::Command;

use anyhow::{Result, bail};

pub(crate) fn run(drills: &[String]) -> Result<()> {
    for (binary, install) in [
        ("redis-cli", "apt-get install -y redis-tools"),
        ("pgrep", "apt-get install -y procps"),
    ] {
        crate::load::require(binary, install)?;
    }
    // One invocation: built apart, the two would resolve features
    // differently and compile sqlx, fred and rustls twice.
    crate::run_step(
        "cargo build --release (server and drill runner)",
        crate::cargo().args([
            "build",
            "--release",
            "-p",
            "sluice-server",
            "-p",
            "sluice-tests",
            "--bins",
            "--example",
            "chaos",
        ]),
    )?;
    let root = crate::project_root();
    let status = Command::new(root.join("target/release/examples/chaos"))
        .arg(root.join("target/release/sluice-server"))
        .args(drills)
        .status()?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => bail!("a drill missed its goal (see the table above)"),
        _ => bail!("the drills could not run ({status})"),
    }
}
