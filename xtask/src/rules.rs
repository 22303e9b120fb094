//! `cargo xtask rules`: the shipped Prometheus rules, checked and
//! unit-tested with `promtool` (also a step of `cargo xtask ci`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

const RULES: &str = "deploy/prometheus/rules.yml";
const TESTS: &str = "deploy/prometheus/rules_test.yml";

pub(crate) fn run() -> Result<()> {
    crate::run_step(
        "promtool check rules",
        Command::new("promtool").args(["check", "rules", RULES]),
    )?;
    crate::run_step(
        "promtool test rules",
        Command::new("promtool").args(["test", "rules", TESTS]),
    )?;
    every_alert_is_tested(Path::new(RULES), Path::new(TESTS))
}

/// Every alert of the rules has a unit test in which it fires, and one in
/// which it stays silent.
fn every_alert_is_tested(rules: &Path, tests: &Path) -> Result<()> {
    let rules = std::fs::read_to_string(rules).with_context(|| format!("reading {RULES}"))?;
    let tests = std::fs::read_to_string(tests).with_context(|| format!("reading {TESTS}"))?;
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut missing = Vec::new();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        // Each `alertname: X` is followed by `exp_alerts:` and either `[]`
        // (silent) or a list of expected alerts (fires).
        let (mut fires, mut silent) = (false, false);
        for (i, line) in lines.iter().enumerate() {
            if line.strip_prefix("alertname: ") == Some(alert) {
                match lines.get(i + 1) {
                    Some(&"exp_alerts: []") => silent = true,
                    Some(&"exp_alerts:") => fires = true,
                    _ => {}
                }
            }
        }
        if !(fires && silent) {
            missing.push(format!(
                "{alert} (a test where it fires: {fires}, where it is silent: {silent})"
            ));
        }
    }
    if !missing.is_empty() {
        bail!(
            "alerts without unit tests in {TESTS}: {}",
            missing.join("; ")
        );
    }
    eprintln!("==> every alert of {RULES} fires and stays silent in a unit test");
    Ok(())
}
