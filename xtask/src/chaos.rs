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
    crate::load::build_release()?;
    let status = Command::new(crate::load::release_example("chaos"))
        .arg(crate::load::release_bin("sluice-server"))
        .args(drills)
        .status()?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => bail!("a drill missed its goal (see the table above)"),
        _ => bail!("the drills could not run ({status})"),
    }
}
