//! The `alerts` drill: the shipped rules (`deploy/prometheus/rules.yml`)
//! in a real Prometheus scraping the real server every second, and real
//! outages — PostgreSQL stopped (`pg_ctl stop`), Redis killed, the
//! upstream answering 503 — each judged by whether its alert fired during
//! the fault and resolved after it, as Prometheus's own API reports. The
//! dashboard's queries are then run against the same Prometheus.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::load;
use sluice_tests::provision::free_port;
use sluice_tests::upstream::Upstream;
use tokio::task::block_in_place;
use tokio::time::sleep;

use crate::harness::{Check, Harness, Result, Server};

const D: &str = "alerts";
/// How long an alert may take to fire, or to resolve.
const PATIENCE: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Prometheus server of Debian's package, on 127.0.0.1, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(dir: &Path, target: SocketAddr) -> Result<Self> {
        let rules = repo().join("deploy/prometheus/rules.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .map_err(|e| format!("prometheus ({e}): apt-get install prometheus"))?;
        let prometheus = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(load::fetch(addr, "/-/ready").await, Some((200, _))) {
            if Instant::now() > deadline {
                return Err("prometheus was not ready within 30 s".into());
            }
            sleep(Duration::from_millis(100)).await;
        }
        Ok(prometheus)
    }

    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = load::fetch(self.addr, path).await?;
        (status == 200)
            .then(|| serde_json::from_slice(&body).ok())
            .flatten()
    }

    /// The state of `alert` (`firing`, `pending`), if it is active.
    async fn alert(&self, alert: &str) -> Option<String> {
        let alerts = self.api("/api/v1/alerts").await?;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == alert)
            .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
            .max_by_key(|state| state == "firing")
    }

    /// Waits until `alert` is firing (`firing` true) or inactive; returns
    /// how long that took, or `None` past `PATIENCE`.
    async fn wait_for(&self, alert: &str, firing: bool) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            let state = self.alert(alert).await;
            let reached = if firing {
                state.as_deref() == Some("firing")
            } else {
                state.is_none()
            };
            if reached {
                return Some(started.elapsed());
            }
            sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Runs `expr`: `Ok(series returned)` or the error Prometheus gave.
    async fn query(&self, expr: &str) -> std::result::Result<usize, String> {
        let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let answer = self
            .api(&format!("/api/v1/query?query={encoded}"))
            .await
            .ok_or_else(|| format!("no answer to {expr}"))?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {}", answer["error"]));
        }
        Ok(answer["data"]["result"].as_array().map_or(0, Vec::len))
    }
}

/// Requests to the proxy route while `on`, a few a second, so that the
/// upstream's breaker sees calls.
fn traffic(server: &Server, on: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let addr = server.addr;
    tokio::spawn(async move {
        let mut n = 0u64;
        while on.load(Ordering::Relaxed) {
            n += 1;
            load::fetch(addr, &format!("/external-data/alert-{n}")).await;
            load::fetch(addr, &format!("/users/{}", n % 20 + 1)).await;
            sleep(Duration::from_millis(200)).await;
        }
    })
}

/// One fault: whether `alert` fired during it and resolved after it.
fn judged(fault: &str, alert: &str, fired: Option<Duration>, resolved: Option<Duration>) -> Check {
    let secs =
        |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    Check::new(
        D,
        format!("{alert} fires during {fault} and resolves after it"),
        format!(
            "fired {} into the fault; resolved {} after it ended",
            secs(fired),
            secs(resolved)
        ),
        fired.is_some() && resolved.is_some(),
    )
}

pub(crate) async fn alerts(h: &mut Harness) -> Result<Vec<Check>> {
    // An upstream of its own, so that it can be taken down and back.
    let upstream = Upstream::start().await?;
    let server = h
        .server(&[
            ("REDIS_URL", h.redis.url()),
            ("API_EXTERNAL_BASE_URL", upstream.base_url()),
        ])
        .await?;
    let dir = h.dir.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let prometheus = Prometheus::start(&dir, server.addr).await?;
    let on = Arc::new(AtomicBool::new(true));
    let load = traffic(&server, on.clone());
    let mut checks = Vec::new();
    // A quiet start: a few scrapes, and no alert active.
    sleep(Duration::from_secs(5)).await;
    let quiet = prometheus
        .api("/api/v1/alerts")
        .await
        .and_then(|a| a["data"]["alerts"].as_array().map(Vec::len));
    checks.push(Check::new(
        D,
        "no alert active before any fault".to_owned(),
        format!("{} active", quiet.map_or("?".to_owned(), |n| n.to_string())),
        quiet == Some(0),
    ));

    block_in_place(|| h.pg.stop())?;
    let fired = prometheus.wait_for("SluiceDatabaseUnavailable", true).await;
    block_in_place(|| h.pg.restart())?;
    let resolved = prometheus
        .wait_for("SluiceDatabaseUnavailable", false)
        .await;
    checks.push(judged(
        "PostgreSQL stopped",
        "SluiceDatabaseUnavailable",
        fired,
        resolved,
    ));

    block_in_place(|| h.redis.stop());
    let fired = prometheus.wait_for("SluiceCacheUnavailable", true).await;
    block_in_place(|| h.redis.restart())?;
    let resolved = prometheus.wait_for("SluiceCacheUnavailable", false).await;
    checks.push(judged(
        "Redis killed",
        "SluiceCacheUnavailable",
        fired,
        resolved,
    ));

    upstream.state.down.store(true, Ordering::Relaxed);
    let fired = prometheus.wait_for("SluiceUpstreamCircuitOpen", true).await;
    upstream.state.down.store(false, Ordering::Relaxed);
    let resolved = prometheus
        .wait_for("SluiceUpstreamCircuitOpen", false)
        .await;
    checks.push(judged(
        "the upstream answering 503",
        "SluiceUpstreamCircuitOpen",
        fired,
        resolved,
    ));

    // Every query of the dashboard, on this Prometheus, after all that.
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        repo().join("deploy/grafana/sluice.json"),
    )?)?;
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(expr.to_owned());
            }
        }
    }
    let (mut with_data, mut errors) = (0, Vec::new());
    for expr in &exprs {
        match prometheus.query(expr).await {
            Ok(0) => {}
            Ok(_) => with_data += 1,
            Err(e) => errors.push(e),
        }
    }
    checks.push(Check::new(
        D,
        "every dashboard query is valid on a real Prometheus".to_owned(),
        format!(
            "{} queries, {} errors, {with_data} returned series{}",
            exprs.len(),
            errors.len(),
            errors.first().map_or(String::new(), |e| format!(" ({e})"))
        ),
        errors.is_empty() && !exprs.is_empty(),
    ));
    on.store(false, Ordering::Relaxed);
    let _ = load.await;
    drop(server);
    Ok(checks)
}
