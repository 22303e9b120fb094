//! [`Servers`]: the PostgreSQL servers a pool may connect to, which one it
//! uses now, and whether that one still takes writes.
//!
//! Like libpq, a URL may name several hosts
//! (`postgres://u@db1:5432,db2:5432/app?target_session_attrs=read-write`)
//! and the host field may hold a comma-separated list. With
//! `target_session_attrs=read-write`, a server that answers
//! `transaction_read_only = on` (a standby, or a primary demoted to one)
//! is not used: each new connection is checked once, and the pool finds
//! the writable server by trying the hosts in their listed order:
//! - when a new connection lands on a read-only server;
//! - when a statement fails with SQLSTATE 25006 (`read_only_sql_transaction`:
//!   the server was demoted under open connections, where `SELECT 1` still
//!   succeeds). Every connection opened before then is closed instead of
//!   being lent again;
//! - from the outage probe, when the current server stops answering.
//!
//! sqlx connects to one host; this module keeps the list and tells the
//! sqlx pool which host to use (`Pool::set_connect_options`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};

use crate::hosts::{HostPort, TargetSession};

/// The servers of one PostgreSQL pool and the one in use.
#[derive(Debug)]
pub(crate) struct Servers {
    /// Connect options per host, in the listed order.
    candidates: Vec<PgConnectOptions>,
    current: AtomicUsize,
    target: TargetSession,
    /// The sqlx pool, to point at another host. Cleared when the
    /// [`SqlPool`](crate::SqlPool) goes (the pool's callbacks hold this
    /// struct: the pool must not be kept alive through it).
    pool: Mutex<Option<PgPool>>,
    /// When a demotion was last seen, in nanoseconds from [`epoch`]; 0 if
    /// never. Connections opened before it are closed, not lent.
    demoted_at: AtomicU64,
}

/// A fixed instant for [`Servers::demoted_at`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Servers {
    /// `base` with each host of `hosts` (its port, or `base`'s).
    pub(crate) fn new(base: PgConnectOptions, hosts: &[HostPort], target: TargetSession) -> Self {
        let candidates = if hosts.len() <= 1 {
            vec![base]
        } else {
            let default_port = base.get_port();
            hosts
                .iter()
                .map(|h| {
                    base.clone()
                        .host(&h.host)
                        .port(h.port.unwrap_or(default_port))
                })
                .collect()
        };
        Self {
            candidates,
            current: AtomicUsize::new(0),
            target,
            pool: Mutex::new(None),
            demoted_at: AtomicU64::new(0),
        }
    }

    /// Whether new connections are checked, or several hosts are listed:
    /// then the pool looks for its server before it opens.
    pub(crate) fn chooses(&self) -> bool {
        self.target != TargetSession::Any || self.candidates.len() > 1
    }

    /// The target this pool was configured with.
    pub(crate) fn target(&self) -> TargetSession {
        self.target
    }

    /// Connect options for the server in use.
    pub(crate) fn current(&self) -> PgConnectOptions {
        let i = self.current.load(Ordering::Acquire);
        self.candidates[i.min(self.candidates.len() - 1)].clone()
    }

    /// Lets [`use_server`](Self::use_server) repoint `pool`.
    pub(crate) fn attach(&self, pool: &PgPool) {
        if let Ok(mut slot) = self.pool.lock() {
            *slot = Some(pool.clone());
        }
    }

    /// Drops the pool handle (see [`Servers::pool`]).
    pub(crate) fn detach(&self) {
        if let Ok(mut slot) = self.pool.lock() {
            *slot = None;
        }
    }

    /// Whether `conn` is on a server this pool accepts. One round trip
    /// with `read-write`, none otherwise.
    pub(crate) async fn accepts(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        match self.target {
            TargetSession::Any => Ok(true),
            TargetSession::ReadWrite => {
                // A simple query: one round trip, no prepared statement
                // (which PgBouncer in transaction pooling could misroute).
                let row = sqlx::raw_sql("SHOW transaction_read_only")
                    .fetch_one(&mut *conn)
                    .await?;
                let read_only: String = sqlx::Row::try_get(&row, 0)?;
                Ok(read_only == "off")
            }
        }
    }

    /// Tries the hosts in their listed order, each within
    /// `connect_timeout`, and switches the pool to the first that answers
    /// and is accepted. Whether one was found.
    pub(crate) async fn find(&self, connect_timeout: Duration) -> bool {
        for (i, options) in self.candidates.iter().enumerate() {
            let host = options.get_host();
            match tokio::time::timeout(connect_timeout, options.connect()).await {
                Ok(Ok(mut conn)) => {
                    let accepted = self.accepts(&mut conn).await;
                    let _ = conn.close().await;
                    match accepted {
                        Ok(true) => {
                            self.use_server(i);
                            return true;
                        }
                        Ok(false) => tracing::info!(host, "server is read-only; trying the next"),
                        Err(e) => tracing::debug!(host, error = %e, "server check failed"),
                    }
                }
                Ok(Err(e)) => tracing::debug!(host, error = %e, "connect failed"),
                Err(_) => tracing::debug!(host, ?connect_timeout, "connect timed out"),
            }
        }
        false
    }

    fn use_server(&self, i: usize) {
        if self.current.swap(i, Ordering::AcqRel) == i {
            return;
        }
        let options = self.candidates[i].clone();
        tracing::warn!(
            host = options.get_host(),
            port = options.get_port(),
            "the pool now connects to another server"
        );
        if let Ok(slot) = self.pool.lock()
            && let Some(pool) = slot.as_ref()
        {
            pool.set_connect_options(options);
        }
    }

    /// Records that the server in use was found read-only under open
    /// connections: they are closed as they come back.
    pub(crate) fn demoted(&self) {
        self.demoted_at
            .store(since_epoch(Instant::now()), Ordering::Release);
    }

    /// Whether a connection `age` old was opened before the last demotion
    /// seen. One atomic load when there was none.
    pub(crate) fn opened_before_demotion(&self, age: Duration) -> bool {
        let demoted = self.demoted_at.load(Ordering::Acquire);
        if demoted == 0 {
            return false;
        }
        let now = Instant::now();
        let opened = now.checked_sub(age).unwrap_or(now);
        since_epoch(opened) <= demoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_default_to_the_base_port() {
        let base = PgConnectOptions::new_without_pgpass().port(6543);
        let servers = Servers::new(
            base,
            &[HostPort::new("a", None), HostPort::new("b", Some(7000))],
            TargetSession::Any,
        );
        assert!(servers.chooses());
        let ports: Vec<_> = servers.candidates.iter().map(|o| o.get_port()).collect();
        assert_eq!(ports, vec![6543, 7000]);
        assert_eq!(servers.current().get_host(), "a");
    }

    #[test]
    fn connections_opened_before_a_demotion_are_stale() {
        let servers = Servers::new(
            PgConnectOptions::new_without_pgpass(),
            &[],
            TargetSession::ReadWrite,
        );
        assert!(!servers.opened_before_demotion(Duration::from_secs(3600)));
        servers.demoted();
        assert!(servers.opened_before_demotion(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(5));
        // Opened 1 ms ago: after the demotion.
        assert!(!servers.opened_before_demotion(Duration::from_millis(1)));
    }
}
