//! `cargo xtask test`: the workspace tests against real services.
//!
//! Uses `DATABASE_URL` / `REDIS_URL` when they are set; otherwise starts a
//! throw-away PostgreSQL and Redis from the local binaries, exports their
//! URLs to `cargo test`, and tears them down afterwards — on success, on
//! failure, and on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow};
use sluice_tests::provision::{TempPostgres, TempRedis};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Services for the test run: provisioned ones are stopped when dropped.
pub(crate) struct Services {
    pub(crate) database_url: String,
    pub(crate) redis_url: String,
    _postgres: Option<TempPostgres>,
    _redis: Option<TempRedis>,
}

impl Services {
    pub(crate) fn provision() -> Result<Self> {
        // Ctrl-C reaches cargo and the servers (same process group); we
        // survive it (and SIGTERM) so that the drops below stop the servers
        // and remove their temporary files.
        ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
        let (database_url, postgres) = match std::env::var("DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let pg =
                    TempPostgres::start().map_err(|e| anyhow!("cannot start PostgreSQL: {e}"))?;
                eprintln!(
                    "xtask: PostgreSQL {} on 127.0.0.1:{}",
                    pg.dir().display(),
                    pg.port()
                );
                (pg.url(), Some(pg))
            }
        };
        let (redis_url, redis) = match std::env::var("REDIS_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let redis = TempRedis::start().map_err(|e| anyhow!("cannot start Redis: {e}"))?;
                eprintln!("xtask: Redis on 127.0.0.1:{}", redis.port());
                (redis.url(), Some(redis))
            }
        };
        Ok(Self {
            database_url,
            redis_url,
            _postgres: postgres,
            _redis: redis,
        })
    }
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let services = Services::provision()?;
    run_with(&services, args)
}

/// `cargo test --workspace` with the services' URLs exported.
pub(crate) fn run_with(services: &Services, args: &[String]) -> Result<()> {
    let result = crate::run_step(
        "cargo test --workspace",
        crate::cargo()
            .args(["test", "--workspace", "--all-targets"])
            .args(args)
            .env("DATABASE_URL", &services.database_url)
            .env("REDIS_URL", &services.redis_url),
    )
    .and_then(|()| {
        // `--all-targets` leaves out doctests; run them separately.
        crate::run_step(
            "cargo test --workspace --doc",
            crate::cargo()
                .args(["test", "--workspace", "--doc"])
                .env("DATABASE_URL", &services.database_url)
                .env("REDIS_URL", &services.redis_url),
        )
    });
    // Every test's scratch files live under one root (sluice_tests::
    // services::scratch_root); remove it whatever the outcome.
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join("sluice-tests"));
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(anyhow!("interrupted"));
    }
    result
}
