//! The live checks of `cargo xtask ci`: the OpenAPI conformance check —
//! schemathesis (from PyPI) against the live server, from the server's own
//! `/openapi.json`, once on SQLite and once on PostgreSQL with Redis and
//! an upstream — and the I/O manager's design example against the same
//! PostgreSQL, Redis and upstream.
//!
//! It fails on any server error (5xx), any response that breaks the
//! documented schema, any undocumented status code or content type, and
//! any schema-violating request the server accepts. Bounded: a fixed
//! number of examples per operation, a fixed seed (so a failure
//! reproduces), and a time limit per run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_tests::provision::free_port;

use crate::load::{Proc, wait_ready};
use crate::test::Services;

/// Examples schemathesis generates per operation and phase.
const EXAMPLES: &str = "40";
/// A fixed seed: the same cases every run, so a failure reproduces.
const SEED: &str = "20261202";
/// Each schemathesis run is stopped after this long.
const LIMIT: Duration = Duration::from_secs(300);

/// `cargo xtask schema`: the check alone, against provisioned services.
pub(crate) fn run_alone() -> Result<()> {
    let services = Services::provision()?;
    run(&services)
}

/// Runs the check against the debug server and upstream.
pub(crate) fn run(services: &Services) -> Result<()> {
    let (server, upstream_bin, design) = test_binaries()?;
    let scratch = std::env::temp_dir().join(format!("sluice-schema-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = (|| {
        let upstream_port = free_port()?;
        let _upstream = Proc(
            Command::new(&upstream_bin)
                .args([upstream_port.to_string(), "0".to_owned()])
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start bench_upstream")?,
        );
        wait_ready(upstream_port, "/data/1", Duration::from_secs(10))?;
        let upstream = format!("http://127.0.0.1:{upstream_port}");
        let sqlite = scratch.join("schema.db");
        let sqlite = sqlite.to_string_lossy();
        conform(
            "SQLite",
            &server,
            &scratch,
            &[
                ("SLUICE_DB_SQLITE_PATH", &sqlite),
                ("API_EXTERNAL_BASE_URL", &upstream),
            ],
        )?;
        conform(
            "PostgreSQL and Redis",
            &server,
            &scratch,
            &[
                ("DATABASE_URL", &services.database_url),
                ("REDIS_URL", &services.redis_url),
                ("API_EXTERNAL_BASE_URL", &upstream),
                ("API_EXTERNAL_CACHE_TTL", "5"),
            ],
        )?;
        design_example(&design, services, &upstream)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Builds the workspace's binaries and examples in the debug profile
/// (after `cargo test --workspace --all-targets` only the examples are
/// linked again) and returns the paths of the server binary and of the
/// `bench_upstream` example, as cargo reports them.
fn test_binaries() -> Result<(PathBuf, PathBuf, PathBuf)> {
    eprintln!("==> cargo build --bins --examples (the server and bench_upstream)");
    let output = crate::cargo()
        .args(["build", "--workspace", "--bins", "--examples"])
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !output.status.success() {
        bail!("cargo test --no-run failed ({})", output.status);
    }
    let (mut server, mut upstream, mut design) = (None, None, None);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        if message["profile"]["test"].as_bool() != Some(false) {
            continue;
        }
        let target = &message["target"];
        let kind = target["kind"][0].as_str().unwrap_or_default();
        match (target["name"].as_str(), kind) {
            (Some("sluice-server"), "bin") => server = Some(PathBuf::from(executable)),
            (Some("bench_upstream"), "example") => upstream = Some(PathBuf::from(executable)),
            (Some("design"), "example") => design = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    match (server, upstream, design) {
        (Some(server), Some(upstream), Some(design)) => Ok((server, upstream, design)),
        _ => bail!(
            "cargo did not report the sluice-server binary and the bench_upstream and design examples"
        ),
    }
}

/// Runs sluice-io's `design` example (the design's own usage, end to end)
/// against the provisioned PostgreSQL and Redis and the local upstream.
fn design_example(design: &Path, services: &Services, upstream: &str) -> Result<()> {
    crate::run_step(
        "sluice-io example design",
        Command::new(design)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DB_MAIN_URL", &services.database_url)
            .env("REDIS_URL", &services.redis_url)
            .env("API_EXTERNAL_BASE_URL", upstream)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    )
}

/// Starts the server with `env` and runs schemathesis against it.
fn conform(backend: &str, server: &Path, scratch: &Path, env: &[(&str, &str)]) -> Result<()> {
    let port = free_port()?;
    let log_path = scratch.join(format!("server-{port}.log"));
    let log = std::fs::File::create(&log_path)?;
    let _server = Proc(
        Command::new(server)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SLUICE_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start sluice-server")?,
    );
    wait_ready(port, "/readyz", Duration::from_secs(30))
        .with_context(|| format!("sluice-server on {backend} did not become ready"))?;
    let name = format!("schemathesis on {backend}");
    let mut status = schemathesis(&name, port, scratch)?;
    if status == Run::InterpreterBug {
        // CPython before 3.11.8 (python/cpython#106905) sometimes fails
        // to parse hypothesis' own source while it describes a strategy:
        // a crash of the tool, not a finding about the server. Once more.
        eprintln!(
            "<== {name}: the Python interpreter crashed inside hypothesis (cpython#106905); running it again"
        );
        status = schemathesis(&name, port, scratch)?;
    }
    if status != Run::Passed {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("  server: {line}");
        }
        bail!("{name} found failures");
    }
    Ok(())
}

/// How one schemathesis run ended.
#[derive(Debug, PartialEq, Eq)]
enum Run {
    Passed,
    Failed,
    /// Only CPython's `AST constructor recursion depth mismatch` error.
    InterpreterBug,
}

/// One schemathesis run against the server on `port`; its output is
/// shown as it comes and kept to tell a crash of the tool from a finding.
fn schemathesis(name: &str, port: u16, scratch: &Path) -> Result<Run> {
    eprintln!("==> {name}");
    let started = Instant::now();
    let output_path = scratch.join(format!("schemathesis-{port}.txt"));
    let output = std::fs::File::create(&output_path)?;
    // Through the interpreter, so that a pip install without its scripts
    // on the PATH still works.
    let mut child = Command::new("python3")
        .current_dir(scratch)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("http://127.0.0.1:{port}/openapi.json"))
        .args([
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
        ])
        .args(["--workers", "2", "--request-timeout", "10", "--no-color"])
        .stdout(output)
        .spawn()
        .context("cannot start schemathesis (python3 -m pip install schemathesis)")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = std::fs::read_to_string(&output_path).unwrap_or_default();
    eprint!("{report}");
    eprintln!(
        "<== {name}: {} in {:.1?}",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed()
    );
    Ok(if status.success() {
        Run::Passed
    } else if only_the_interpreter_bug(&report) {
        Run::InterpreterBug
    } else {
        Run::Failed
    })
}

/// Whether a failed run's only error is CPython's AST crash: one runtime
/// error, that error is the crash, and every generated case passed
/// (`380 generated, 380 passed`).
fn only_the_interpreter_bug(report: &str) -> bool {
    let all_passed = report.lines().any(|line| {
        let mut counts = line
            .trim()
            .split([' ', ','])
            .filter_map(|w| w.parse::<u64>().ok());
        line.contains(" generated, ")
            && line.trim_end().ends_with(" passed")
            && matches!((counts.next(), counts.next()), (Some(g), Some(p)) if g == p)
    });
    all_passed
        && report.contains("SystemError: AST constructor recursion depth mismatch")
        && report.contains("Runtime Error: 1")
        && !report.contains("Failures:")
}

#[cfg(test)]
mod tests {
    use super::only_the_interpreter_bug;

    #[test]
    fn only_the_interpreter_crash_is_run_again() {
        let crash = "SystemError: AST constructor recursion depth mismatch (before=81, after=105)\n\
                     Errors:\n  Runtime Error: 1\n\nTest cases:\n  380 generated, 380 passed\n";
        assert!(only_the_interpreter_bug(crash));
        let with_failure = crash.replace("380 passed", "379 passed, 1 failed");
        assert!(!only_the_interpreter_bug(&with_failure));
        let other_error = crash.replace("SystemError: AST", "ConnectionError: x");
        assert!(!only_the_interpreter_bug(&other_error));
    }
}
