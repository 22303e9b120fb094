//! nginx as a reverse proxy in front of the bench upstream: the tool an
//! operator would otherwise put where `GET /external-data/{id}` runs (W4's
//! reference in `cargo xtask bench server`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use sluice_tests::provision::free_port;

use crate::load::wait_ready;

/// Starts nginx (2 workers: the machine's cores, as the server's runtime
/// has) on a free port, proxying `/external-data/{id}` to the upstream's
/// `/data/{id}` over kept-alive connections; waits until it answers.
pub(crate) fn start(dir: &Path, upstream: u16) -> Result<(Nginx, u16)> {
    crate::load::require("nginx", "apt-get install -y nginx")?;
    let port = free_port()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let config = format!(
        "worker_processes 2;\n\
         daemon off;\n\
         pid {prefix}/nginx.pid;\n\
         error_log {prefix}/logs/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {prefix}/body;\n\
         \x20 proxy_temp_path {prefix}/proxy;\n\
         \x20 fastcgi_temp_path {prefix}/fastcgi;\n\
         \x20 uwsgi_temp_path {prefix}/uwsgi;\n\
         \x20 scgi_temp_path {prefix}/scgi;\n\
         \x20 upstream bench {{ server 127.0.0.1:{upstream}; keepalive 128; }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port};\n\
         \x20   location /external-data/ {{\n\
         \x20     proxy_pass http://bench/data/;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        prefix = prefix.display()
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, config)?;
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(prefix.join("logs/stderr.log"))?)
        .spawn()
        .context("cannot start nginx")?;
    let nginx = Nginx(child);
    wait_ready(port, "/external-data/1", Duration::from_secs(10))
        .context("nginx did not answer")?;
    Ok((nginx, port))
}

/// The nginx master; stopped on drop with SIGTERM (a fast shutdown that
/// takes its workers with it: SIGKILL would leave them running).
pub(crate) struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
