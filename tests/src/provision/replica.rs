//! Streaming replicas of a [`TempPostgres`], and their promotion: the
//! engine side of failover tests.

use std::time::{Duration, Instant};

use super::{ProvisionError, TempPostgres, any_port, failed, run, unique_dir};

impl TempPostgres {
    /// A streaming replica of this server (`pg_basebackup -R`: a hot
    /// standby that follows it), started on a port of its own and caught
    /// up with everything committed before the call.
    pub fn start_replica(&self) -> Result<TempPostgres, ProvisionError> {
        let dir = unique_dir("sluice-pg-replica").map_err(|e| failed(format!("temp dir: {e}")))?;
        if self.as_postgres_user {
            run(std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir))?;
        }
        let mut replica = TempPostgres {
            bindir: self.bindir.clone(),
            dir,
            port: any_port()?,
            as_postgres_user: self.as_postgres_user,
            durable: self.durable,
            frozen: false,
            child: None,
        };
        let data = replica.data_dir();
        run(replica
            .command("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-X", "stream", "-R", "--no-sync", "-D"])
            .arg(&data))?;
        // Sockets and the log go where this replica's own files are.
        replica.launch()?;
        Ok(replica)
    }

    /// Promotes this standby to a primary and waits until it takes
    /// writes (`pg_ctl promote -w`).
    pub fn promote(&self) -> Result<(), ProvisionError> {
        run(self
            .command("pg_ctl")
            .args(["promote", "-w", "-t", "30", "-D"])
            .arg(self.data_dir()))
    }

    /// Waits until a standby has replayed everything its primary sent
    /// (`pg_last_wal_replay_lsn() >= lsn`), at most `within`.
    pub fn wait_replayed(&self, lsn: &str, within: Duration) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + within;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        while Instant::now() < deadline {
            if self.psql(&sql)? == "t" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(failed(format!(
            "the replica did not replay {lsn} within {within:?}"
        )))
    }

    /// The current WAL insert position of a primary: everything committed
    /// so far is before it, even with `synchronous_commit=off`.
    pub fn current_lsn(&self) -> Result<String, ProvisionError> {
        self.psql("SELECT pg_current_wal_insert_lsn()")
    }

    /// Runs one statement through `psql` and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String, ProvisionError> {
        let output = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-XAtq", "-c", sql])
            .output()
            .map_err(|e| failed(format!("psql: {e}")))?;
        if !output.status.success() {
            return Err(failed(format!(
                "psql: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}
