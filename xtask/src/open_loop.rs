//! Open-loop latency for `cargo xtask bench server`: oha sends requests at
//! a fixed rate and corrects for coordinated omission (`-q` with
//! `--latency-correction`: a request's latency counts from when it was due,
//! not from when a busy connection got round to sending it). wrk's closed
//! loop hides queueing delay; this does not.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// What one oha run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenRun {
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    /// Requests that failed or answered other than 2xx.
    pub(crate) failed: u64,
}

/// The oha binary: `cargo install oha --locked` puts it in `~/.cargo/bin`.
pub(crate) fn require() -> Result<()> {
    crate::load::require("oha", "cargo install oha --locked")
}

/// Runs oha at `rate` requests/s for `seconds` over `connections`
/// connections, against URLs drawn from `url_regex` (oha's
/// `--rand-regex-url`, e.g. `http://127.0.0.1:8000/users/[1-9][0-9]{0,3}`).
pub(crate) fn oha(url_regex: &str, rate: f64, seconds: u64, connections: u32) -> Result<OpenRun> {
    let out = Command::new("oha")
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
            // Requests still out at the end are waited for, not counted
            // as errors.
            "-w",
            "-q",
            &format!("{rate:.0}"),
            "-z",
            &format!("{seconds}s"),
            "-c",
            &connections.to_string(),
            "--rand-regex-url",
            url_regex,
        ])
        .output()
        .context("cannot run oha")?;
    if !out.status.success() {
        bail!(
            "oha failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&out.stdout)
}

fn parse(json: &[u8]) -> Result<OpenRun> {
    let v: serde_json::Value = serde_json::from_slice(json).context("oha printed no JSON")?;
    let seconds = |key: &str| {
        v["latencyPercentiles"][key]
            .as_f64()
            .with_context(|| format!("oha's JSON has no latencyPercentiles.{key}"))
    };
    let statuses = v["statusCodeDistribution"]
        .as_object()
        .context("oha's JSON has no statusCodeDistribution")?;
    let not_2xx: u64 = statuses
        .iter()
        .filter(|(code, _)| !code.starts_with('2'))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|e| e.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    Ok(OpenRun {
        rps: v["summary"]["requestsPerSec"]
            .as_f64()
            .context("oha's JSON has no summary.requestsPerSec")?,
        p99_ms: seconds("p99")? * 1e3,
        p999_ms: seconds("p99.9")? * 1e3,
        failed: not_2xx + errors,
    })
}

/// Median of `f` over `runs` (of wrk or of oha).
pub(crate) fn median<R>(runs: &[R], f: fn(&R) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Sluice against a reference at 50% and 80% of the reference's closed-loop
/// maximum, three alternating rounds at each rate; one table row per rate
/// with the medians, judged against p99 and p99.9 ≤ 1.2× the reference's.
pub(crate) fn compare(
    workload: &str,
    ours: &str,
    reference: (&str, &str),
    reference_max: f64,
    seconds: u64,
    connections: u32,
) -> Result<Vec<String>> {
    let (reference_name, reference_url) = reference;
    let mut rows = Vec::new();
    for share in [0.5, 0.8] {
        let rate = (reference_max * share).max(1.0);
        let (mut sluice, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            sluice.push(oha(ours, rate, seconds, connections)?);
            theirs.push(oha(reference_url, rate, seconds, connections)?);
        }
        let (p99, p999) = (
            median(&sluice, |r| r.p99_ms) / median(&theirs, |r| r.p99_ms),
            median(&sluice, |r| r.p999_ms) / median(&theirs, |r| r.p999_ms),
        );
        let failed: u64 = sluice.iter().chain(&theirs).map(|r| r.failed).sum();
        rows.push(format!(
            "| {workload} at {:.0}% ({rate:.0} req/s) | {:.0} | {:.2} / {:.2} | {reference_name} {:.2} / {:.2} | {p99:.2}× / {p999:.2}× | {failed} | {} |",
            share * 100.0,
            median(&sluice, |r| r.rps),
            median(&sluice, |r| r.p99_ms),
            median(&sluice, |r| r.p999_ms),
            median(&theirs, |r| r.p99_ms),
            median(&theirs, |r| r.p999_ms),
            crate::load::check(p99 <= 1.2 && p999 <= 1.2 && failed == 0),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ohas_json() {
        let json = br#"{"summary":{"requestsPerSec":4990.5},
            "latencyPercentiles":{"p50":0.001,"p99":0.0042,"p99.9":0.0105},
            "statusCodeDistribution":{"200":29000,"503":3},
            "errorDistribution":{"connection refused":2}}"#;
        let run = parse(json).expect("parses");
        assert!((run.rps - 4990.5).abs() < 1e-9);
        assert!((run.p99_ms - 4.2).abs() < 1e-9);
        assert!((run.p999_ms - 10.5).abs() < 1e-9);
        assert_eq!(run.failed, 5);
        assert!(parse(b"{}").is_err());
    }
}
