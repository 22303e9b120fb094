//! A throw-away HAProxy on 127.0.0.1 in front of several servers, from
//! Debian's `haproxy` package: health checks on `/readyz`, retries of
//! idempotent requests on another server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ProvisionError, any_port, failed, spawn_error, unique_dir, wait_for_port};

/// HAProxy balancing over fixed backends; killed and removed on drop.
#[derive(Debug)]
pub struct TempHaproxy {
    dir: PathBuf,
    port: u16,
    stats_port: u16,
    child: Option<Child>,
}

/// The configuration: round robin; a server is taken out after one failed
/// `/readyz` check (every 200 ms) and back after two good ones; a request
/// whose connection fails, or whose server closes without answering, is
/// sent again to another server (HAProxy replays only requests it still
/// holds whole, and never a non-idempotent one after it was sent).
/// Its statistics are served as CSV at `http://127.0.0.1:{stats_port}/stats;csv`.
pub fn haproxy_config(port: u16, stats_port: u16, backends: &[SocketAddr]) -> String {
    let mut config = format!(
        "global\n\
         \x20 maxconn 4096\n\
         defaults\n\
         \x20 mode http\n\
         \x20 timeout connect 1s\n\
         \x20 timeout client 30s\n\
         \x20 timeout server 30s\n\
         \x20 retries 3\n\
         \x20 option redispatch 1\n\
         \x20 retry-on conn-failure empty-response response-timeout\n\
         frontend stats\n\
         \x20 bind 127.0.0.1:{stats_port}\n\
         \x20 stats enable\n\
         \x20 stats uri /stats\n\
         frontend sluice\n\
         \x20 bind 127.0.0.1:{port}\n\
         \x20 default_backend servers\n\
         backend servers\n\
         \x20 balance roundrobin\n\
         \x20 option httpchk GET /readyz\n\
         \x20 http-check expect status 200\n\
         \x20 default-server inter 200ms fall 1 rise 2\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        config.push_str(&format!("  server s{i} {backend} check\n"));
    }
    config
}

impl TempHaproxy {
    /// Starts HAProxy on a free port in front of `backends`.
    pub fn start(backends: &[SocketAddr]) -> Result<Self, ProvisionError> {
        let dir = unique_dir("sluice-haproxy").map_err(|e| failed(format!("temp dir: {e}")))?;
        let port = any_port()?;
        let stats_port = any_port()?;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, haproxy_config(port, stats_port, backends))
            .map_err(|e| failed(format!("haproxy.cfg: {e}")))?;
        let log = std::fs::File::create(dir.join("haproxy.log"))
            .map_err(|e| failed(format!("log: {e}")))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| spawn_error(e, "haproxy", "apt-get install -y haproxy"))?;
        let proxy = Self {
            dir,
            port,
            stats_port,
            child: Some(child),
        };
        if wait_for_port(port, Duration::from_secs(10)) {
            Ok(proxy)
        } else {
            Err(failed(format!(
                "haproxy did not listen within 10 s: {}",
                std::fs::read_to_string(proxy.dir.join("haproxy.log")).unwrap_or_default()
            )))
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Where its statistics are served (`/stats;csv`).
    pub fn stats_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.stats_port))
    }

    /// HAProxy's own log (configuration warnings, health-check changes).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for TempHaproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
