//! `cargo xtask ci`: everything CI runs, in the order that fails fastest.

use std::process::Command;

use anyhow::{Result, bail};

pub(crate) fn run() -> Result<()> {
    let started = std::time::Instant::now();
    require("promtool", "apt-get install -y prometheus")?;
    require("cargo-deny", "cargo install cargo-deny --locked")?;
    // tests/tests/pgbouncer.rs runs against a real PgBouncer.
    require("pgbouncer", "apt-get install -y pgbouncer")?;
    // The server's tests validate /openapi.json; schemathesis checks the
    // live server against it.
    require_python("openapi_spec_validator", "openapi-spec-validator")?;
    require_python("schemathesis", "schemathesis")?;

    crate::run_step(
        "cargo fmt --check",
        crate::cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    crate::layers::run()?;
    crate::rules::run()?;
    crate::run_step(
        "cargo clippy",
        crate::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // Tests before docs: they share the build, and a failing test is the
    // more useful early signal.
    let services = crate::test::Services::provision()?;
    crate::test::run_with(&services, &[])?;
    crate::schema::run(&services)?;
    drop(services);
    crate::run_step(
        "cargo doc",
        crate::cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    deny()?;
    eprintln!("xtask ci: all green in {:.0?}", started.elapsed());
    Ok(())
}

/// `cargo deny`: bans, licenses and sources always (they work offline);
/// advisories only when the advisory database can be fetched, so a machine
/// without network access does not fail CI for that alone.
fn deny() -> Result<()> {
    crate::run_step(
        "cargo deny (bans licenses sources)",
        crate::cargo().args(["deny", "--offline", "check", "bans", "licenses", "sources"]),
    )?;
    let fetched = crate::cargo()
        .args(["deny", "fetch", "db"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if fetched {
        crate::run_step(
            "cargo deny (advisories)",
            crate::cargo().args(["deny", "check", "advisories"]),
        )
    } else {
        eprintln!(
            "==> cargo deny (advisories): skipped, the advisory database cannot be fetched from here"
        );
        Ok(())
    }
}

/// Fails with the pip command when python3 cannot import `module`.
fn require_python(module: &str, package: &str) -> Result<()> {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        bail!(
            "python3 with {package} is required by `cargo xtask ci`; install it with `python3 -m pip install {package}`"
        );
    }
    Ok(())
}

fn require(binary: &str, install: &str) -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        bail!("`{binary}` is required by `cargo xtask ci`; install it with `{install}`");
    }
    Ok(())
}
