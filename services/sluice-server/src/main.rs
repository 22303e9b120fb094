//! `sluice-server`: logging, configuration, metrics recorder, dependencies,
//! then `sluice_http_server::serve` until SIGTERM or SIGINT.

mod env;
mod startup;
mod telemetry;

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use tokio::net::TcpListener;

/// Exit status for a bad configuration value (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status for a dependency that cannot be reached (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The Sluice server: users, an external-API proxy with batch fan-out,
/// I/O metrics. Runs on an embedded SQLite file unless PostgreSQL is
/// configured.
#[derive(Debug, Parser)]
#[command(version)]
struct Flags {
    /// Listen address; overrides SLUICE_BIND.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// The default connection cap: the file-descriptor limit less a reserve
/// for pools, logs and the database (a tenth, at least 256), so that the
/// server stops accepting before `accept` fails. 10,000 where the limit
/// cannot be read (only Linux's `/proc/self/limits` is read).
fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<usize>().ok())
        });
    match soft {
        Some(n) => n.saturating_sub((n / 10).max(256)).max(16),
        None => 10_000,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // `--help` lists every variable, rendered from the configuration tables.
    let matches = Flags::command().after_help(env::help()).get_matches();
    let flags = match Flags::from_arg_matches(&matches) {
        Ok(flags) => flags,
        Err(e) => e.exit(),
    };
    // One process-wide rustls provider (ring), before anything builds TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A variable of ours whose value is not UTF-8 is an error, not unset.
    let mut names = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Ok(key) = key.into_string() else { continue };
        if env::is_ours(&key) && value.to_str().is_none() {
            eprintln!("sluice-server: invalid configuration {key}: the value is not valid UTF-8");
            return ExitCode::from(EXIT_CONFIG);
        }
        names.push(key);
    }
    let lookup = |key: &str| std::env::var(key).ok();
    let mut settings = match env::Settings::from_lookup(&names, &lookup, default_max_connections())
    {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("sluice-server: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(bind) = flags.bind {
        settings.bind = bind;
    }
    let telemetry = match telemetry::init(flags.log_format, settings.traces.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("sluice-server: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = run(settings).await;
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-server: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

async fn run(settings: env::Settings) -> Result<()> {
    let tls = match &settings.tls {
        Some((cert, key)) => Some(
            sluice_http_server::tls_config(cert, key).context("SLUICE_TLS_CERT/SLUICE_TLS_KEY")?,
        ),
        None => None,
    };
    let prometheus = sluice_metrics::prometheus::install().context("metrics recorder")?;
    let state = startup::state(&settings, Some(prometheus)).await?;
    let listener = TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    if settings.server.auth_tokens.is_empty() && !settings.bind.ip().is_loopback() {
        tracing::warn!(
            "no SLUICE_AUTH_TOKENS set and listening on a non-loopback address: every route is open"
        );
    }
    tracing::info!("{}", settings.describe());
    sluice_http_server::serve_with(listener, state.clone(), tls, shutdown_signal()).await?;
    state.close_all().await;
    tracing::info!("stopped: every pool closed");
    Ok(())
}
