//! `cargo xtask scale`: the scale-out scenarios on real engines, one
//! verdict per goal.
//!
//! 1. The server's end-to-end suite (`tests/tests/server.rs`) with
//!    `pgbouncer` mode, through a PgBouncer in transaction pooling.
//! 2. The engine tests (`tests/tests/{pgbouncer,failover,redis_ha}.rs`):
//!    PgBouncer 1.18 in transaction pooling, a PostgreSQL primary with a
//!    streaming replica promoted after a stop, a fenced primary, Redis
//!    Cluster (3 + 3) and Sentinel (1 + 1, three sentinels). Each test
//!    provisions its own engines on 127.0.0.1 and removes them when it
//!    ends; they also run in `cargo xtask ci`.
//! 3. The balancer drills of `cargo xtask chaos`: three release servers
//!    behind HAProxy, one sent SIGTERM, then one sent SIGKILL, under load.
//!
//! The test runs and the drills run in process groups of their own, with
//! every engine they start. Ctrl-C or SIGTERM to this process is passed on
//! to the running one's group as SIGINT (each engine shuts down on it),
//! and never to the group this process was started in: a script that runs
//! `cargo xtask scale` is not interrupted with it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use sluice_tests::provision::{TempPgBouncer, TempPostgres, TempRedis};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The process group of the step running now (0: none).
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

/// Starts `command` as the leader of a process group of its own, which
/// the signal handler interrupts.
fn spawn_in_own_group(command: &mut Command) -> Result<Child> {
    let child = command
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    RUNNING_GROUP.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    Ok(child)
}

/// The engine tests and the goal each proves.
const GOALS: &[(&str, &str, &str)] = &[
    (
        "pgbouncer",
        "statements_and_transactions_from_40_connections_onto_4_all_succeed",
        "PgBouncer transaction mode: 40 clients onto 4 server connections, 0 errors",
    ),
    (
        "pgbouncer",
        "without_pgbouncer_mode_named_statements_fail_behind_it",
        "without the setting the same load fails (the setting is needed)",
    ),
    (
        "pgbouncer",
        "the_server_migrates_and_serves_through_pgbouncer",
        "the server's routes, migrations and 50 concurrent creates through PgBouncer",
    ),
    (
        "pgbouncer",
        "a_thousand_client_connections_share_twenty_server_connections",
        "1,000 client connections onto at most 20 server connections, 0 errors",
    ),
    (
        "failover",
        "writes_move_to_the_promoted_replica_and_no_acknowledged_write_is_lost",
        "primary stopped, replica promoted: writes resume, no acknowledged write lost",
    ),
    (
        "failover",
        "a_primary_fenced_read_only_under_open_connections_is_left",
        "a primary turned read-only under open connections (25006) is left",
    ),
    (
        "failover",
        "a_standby_listed_first_is_skipped_at_start_up",
        "a standby listed first is skipped at start-up",
    ),
    (
        "failover",
        "lagging_reads_use_the_replica_and_fall_back_to_the_primary",
        "replica reads: served by the replica, a row it lacks read from the primary, replica stopped -> primary",
    ),
    (
        "redis_ha",
        "cluster_commands_span_slots_and_survive_a_master_failover",
        "Redis Cluster: multi-key commands across slots; a master killed, every slot served again",
    ),
    (
        "redis_ha",
        "user_reads_never_fail_while_the_cache_cluster_fails_over",
        "the server's user cache on the cluster: no user read fails during a failover, the cache serves again after",
    ),
    (
        "redis_ha",
        "a_sentinel_client_follows_the_promoted_replica",
        "Redis Sentinel: master killed, the client follows the promoted replica",
    ),
];

/// What the tests print as their measured figures.
const FIGURES: &[&str] = &[
    "1,000 client connections",
    "writes resumed",
    "cluster_state:ok again",
    "the client served every slot",
    "reads with the replica stopped",
    "user reads through the failover",
];

pub(crate) fn run() -> Result<()> {
    for (binary, install) in [
        ("pgbouncer", "apt-get install -y pgbouncer"),
        ("haproxy", "apt-get install -y haproxy"),
        ("redis-server", "apt-get install -y redis-server"),
        ("redis-cli", "apt-get install -y redis-tools"),
    ] {
        crate::load::require(binary, install)?;
    }
    ctrlc::set_handler(|| {
        if !INTERRUPTED.swap(true, Ordering::SeqCst) {
            let group = RUNNING_GROUP.load(Ordering::SeqCst);
            if group > 0 {
                let _ = Command::new("kill")
                    .args(["-INT", &format!("-{group}")])
                    .status();
            }
        }
    })
    .context("cannot install the signal handler")?;

    eprintln!(
        "==> scale: the server's end-to-end suite through PgBouncer (transaction pooling, 20 server connections)"
    );
    let through_pgbouncer = server_suite_through_pgbouncer()?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    eprintln!("==> scale: engine tests (PgBouncer, replica failover, Redis Cluster and Sentinel)");
    let output = spawn_in_own_group(
        crate::cargo()
            .args(["test", "-p", "sluice-tests", "--no-fail-fast"])
            .args([
                "--test",
                "pgbouncer",
                "--test",
                "failover",
                "--test",
                "redis_ha",
            ])
            .args(["--", "--nocapture", "--test-threads", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?
    .wait_with_output()
    .context("cannot run cargo test")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    let mut rows = vec![(
        "pgbouncer: the server's end-to-end suite (tests/tests/server.rs) with DB_POSTGRES_PGBOUNCER mode through PgBouncer".to_owned(),
        through_pgbouncer,
    )];
    for (suite, test, goal) in GOALS {
        let pass = text.contains(&format!("test {test} ... ok"));
        rows.push((format!("{suite}: {goal}"), pass));
    }
    let figures: Vec<&str> = text
        .lines()
        .filter(|l| FIGURES.iter().any(|f| l.contains(f)))
        .collect();

    eprintln!("==> scale: three servers behind HAProxy (chaos balancer drills)");
    crate::load::build_release()?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    let drills = spawn_in_own_group(
        Command::new(crate::load::release_example("chaos"))
            .arg(crate::load::release_bin("sluice-server"))
            .args(["balancer-sigterm", "balancer-sigkill"]),
    )?
    .wait()?;

    println!("\n| scenario | result |");
    println!("| --- | --- |");
    for (goal, pass) in &rows {
        println!("| {goal} | {} |", if *pass { "pass" } else { "**FAIL**" });
    }
    println!("\nmeasured:");
    for figure in &figures {
        println!("  {}", figure.trim());
    }
    let engines_ok = rows.iter().all(|(_, pass)| *pass);
    if !engines_ok {
        eprint!("{text}");
        bail!("an engine scenario failed (its output is above)");
    }
    match drills.code() {
        Some(0) => Ok(()),
        Some(1) => bail!("a balancer drill missed its goal (see its table above)"),
        _ => bail!("the balancer drills could not run ({drills})"),
    }
}

/// `tests/tests/server.rs` with `DATABASE_URL` pointing at a PgBouncer in
/// transaction pooling (in front of a throw-away PostgreSQL) and
/// `SLUICE_TEST_PGBOUNCER` set; whether it passed.
fn server_suite_through_pgbouncer() -> Result<bool> {
    let pg = TempPostgres::start().map_err(|e| anyhow!("cannot start PostgreSQL: {e}"))?;
    let bouncer =
        TempPgBouncer::start(pg.port(), 20).map_err(|e| anyhow!("cannot start PgBouncer: {e}"))?;
    let redis = TempRedis::start().map_err(|e| anyhow!("cannot start Redis: {e}"))?;
    let status = spawn_in_own_group(
        crate::cargo()
            .args(["test", "-p", "sluice-tests", "--test", "server"])
            .env("DATABASE_URL", bouncer.url("postgres"))
            .env("REDIS_URL", redis.url())
            .env("SLUICE_TEST_PGBOUNCER", "1"),
    )?
    .wait()
    .context("cannot run cargo test")?;
    Ok(status.success())
}
