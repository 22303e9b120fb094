//! `cargo xtask`: the project's automation, in Rust (matklad's cargo-xtask).
//!
//! Each command is a module with a `run` function. `cargo xtask` with no
//! arguments prints the list.

mod bench;
mod chaos;
mod ci;
mod layers;
mod load;
mod nginx;
mod open_loop;
mod rules;
mod scale;
mod schema;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask <command>

commands:
  ci                 everything CI runs: fmt, clippy, layering, rules, docs, tests
                     against provisioned PostgreSQL and Redis, schemathesis
                     against the live server (SQLite, PostgreSQL), cargo deny
  test [ARGS…]       provision throw-away PostgreSQL and Redis (or use
                     DATABASE_URL / REDIS_URL when set) and run
                     `cargo test --workspace ARGS…` against them
  schema             schemathesis against the live server from its own
                     /openapi.json, on SQLite and on PostgreSQL + Redis
  layers             check that crate dependencies only point down the layers
  rules              promtool check and test the shipped Prometheus rules
                     (deploy/prometheus), every alert tested firing and silent
  bench [NAME…]      benchmarks quoted in the docs: `metrics` (recording
                     cost), `retry` (outage simulation + policy overhead),
                     `db` (sluice-db vs sqlx on a provisioned PostgreSQL),
                     `api-client` (vs bare hyper-util; batch vs its floor),
                     `server` (the release server under wrk, W1–W5, beside
                     references; SLUICE_BENCH_SECONDS, SLUICE_BENCH_STEADY_SECONDS)
  chaos [DRILL…]     fault drills on the release server under load, each with
                     pass/fail goals: postgres-stop, postgres-freeze,
                     postgres-kill-reads, redis-kill, upstream-errors,
                     upstream-outage, postgres-kill, sigterm, slow-clients,
                     idle-sockets, batch-memory, alerts (a real Prometheus with
                     the shipped rules), balancer-sigterm, balancer-sigkill
                     (three servers behind HAProxy; default: all; about 7
                     minutes; SLUICE_CHAOS_LOG sets the server's RUST_LOG)
  scale              scale-out on real engines, a verdict per goal: PgBouncer
                     (1,000 clients onto 20), replica promotion and fencing,
                     Redis Cluster and Sentinel failover, three servers
                     behind HAProxy (see docs/SCALING.md; about 2 minutes)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print!("{HELP}");
        return Ok(());
    };
    match command.as_str() {
        "ci" => ci::run(),
        "test" => test::run(rest),
        "layers" => layers::run(),
        "rules" => rules::run(),
        "schema" => schema::run_alone(),
        "bench" => bench::run(rest),
        "chaos" => chaos::run(rest),
        "scale" => scale::run(),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo` as invoked by the user (respects `$CARGO`), run from the root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// Runs a command to completion, failing with its name if it fails.
pub(crate) fn run_step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {name}");
    let started = std::time::Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {name}"))?;
    eprintln!(
        "<== {name}: {} in {:.1?}",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed()
    );
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}
