//! A throw-away PgBouncer in transaction pooling in front of a
//! [`TempPostgres`](super::TempPostgres), from Debian's `pgbouncer`
//! package (1.18: no prepared-statement support of its own).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    ProvisionError, any_port, failed, is_root, run, spawn_error, unique_dir, wait_for_port,
};

/// A PgBouncer on 127.0.0.1, `pool_mode = transaction`, trust auth for
/// `postgres`, stopped and removed on drop.
#[derive(Debug)]
pub struct TempPgBouncer {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TempPgBouncer {
    /// Starts PgBouncer in front of the PostgreSQL on `pg_port`, with at
    /// most `server_connections` server connections per database.
    pub fn start(pg_port: u16, server_connections: u32) -> Result<Self, ProvisionError> {
        let dir = unique_dir("sluice-pgbouncer").map_err(|e| failed(format!("temp dir: {e}")))?;
        let port = any_port()?;
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             max_client_conn = 2000\n\
             default_pool_size = {server_connections}\n\
             max_db_connections = {server_connections}\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             admin_users = postgres\n\
             logfile = {dir}/pgbouncer.log\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), config)
            .and_then(|()| std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n"))
            .map_err(|e| failed(format!("pgbouncer.ini: {e}")))?;
        let mut command = Command::new("pgbouncer");
        if is_root() {
            // PgBouncer refuses to run as root.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir))?;
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| spawn_error(e, "pgbouncer", "apt-get install -y pgbouncer"))?;
        let bouncer = Self {
            dir,
            port,
            child: Some(child),
        };
        if wait_for_port(port, Duration::from_secs(10)) {
            Ok(bouncer)
        } else {
            let log =
                std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
            Err(failed(format!(
                "pgbouncer did not listen within 10 s: {log}"
            )))
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` through PgBouncer, as `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for TempPgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
