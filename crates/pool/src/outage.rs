//! [`OutageGate`]: notices a PostgreSQL server that stopped answering and
//! fails callers fast until it answers again.
//!
//! sqlx's pool retries a refused connect until the caller's acquire
//! timeout, and waits that long too for a server that accepts TCP but
//! never answers the start-up message; its callers never see a failure
//! they could count. So the gate watches acquires from outside: one that
//! has not finished after [`PROBE_AFTER`] (or a statement after
//! [`PROBE_STATEMENT_AFTER`]) starts a single probe — one
//! real connect, bounded by the connect timeout. A probe that fails marks
//! the server down: every waiting acquire and every watched statement
//! (whose connection is then closed, not reused) returns
//! at once and new ones fail before they start, while the probe keeps
//! trying every [`reprobe_interval`] (a few connects per second at most)
//! and reopens the gate as soon as one succeeds. No request ever waits
//! out the acquire timeout because the server is down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::servers::Servers;

/// How long an acquire may take before the gate checks the server.
/// A healthy connect to a nearby server takes a few milliseconds.
pub(crate) const PROBE_AFTER: Duration = Duration::from_millis(100);

/// How long a statement may run before the gate checks the server: longer,
/// since statements may legitimately take a while and a probe costs the
/// server a connection.
pub(crate) const PROBE_STATEMENT_AFTER: Duration = Duration::from_secs(1);

/// The pause between probes while the server is down: the configured
/// retry delay, at most 500 ms, so that a server that is back is used
/// again within about half a second.
pub(crate) fn reprobe_interval(retry_delay: Duration) -> Duration {
    retry_delay.min(Duration::from_millis(500))
}

/// How an acquire watched by the gate ended.
pub(crate) enum Watched<T> {
    /// The acquire finished (successfully or not) by itself.
    Done(T),
    /// The server was found down while the acquire waited; it was dropped.
    Down,
}

impl<T> Watched<T> {
    /// The output mapped by `f`, if the acquire finished.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Watched<U> {
        match self {
            Self::Done(output) => Watched::Done(f(output)),
            Self::Down => Watched::Down,
        }
    }
}

/// Shared state of one pool's outage detection.
#[derive(Debug)]
pub(crate) struct OutageGate {
    /// True while the server is known to be down.
    down: watch::Sender<bool>,
    /// True while a probe task runs (at most one at a time).
    probing: AtomicBool,
    /// When the last probe found the server answering: a pool that is
    /// merely busy is not probed again for [`reprobe`](Self::reprobe).
    answered_at: Mutex<Option<Instant>>,
    connect_timeout: Duration,
    reprobe: Duration,
    /// The hosts a probe tries (one, unless several are configured).
    servers: Arc<Servers>,
}

impl OutageGate {
    pub(crate) fn new(
        connect_timeout: Duration,
        retry_delay: Duration,
        servers: Arc<Servers>,
    ) -> Arc<Self> {
        Arc::new(Self {
            down: watch::Sender::new(false),
            probing: AtomicBool::new(false),
            answered_at: Mutex::new(None),
            connect_timeout,
            reprobe: reprobe_interval(retry_delay),
            servers,
        })
    }

    /// The servers this gate probes.
    pub(crate) fn servers(&self) -> &Arc<Servers> {
        &self.servers
    }

    /// Looks for a server now (the one in use was found read-only),
    /// unless a probe runs already.
    pub(crate) fn recheck(self: &Arc<Self>) {
        self.start_probe();
    }

    /// Whether the server is known to be down right now.
    pub(crate) fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// When callers should try again while the server is down.
    pub(crate) fn retry_after(&self) -> Duration {
        self.reprobe
    }

    /// Runs `acquire`; if it is still pending after `after`,
    /// probes the servers (one probe for every waiter, and
    /// none within `reprobe` of a probe that found it answering: a busy
    /// pool costs at most a few extra connects a second) and gives up on
    /// `acquire` as soon as the server is found down.
    pub(crate) async fn watch<F: Future>(
        self: &Arc<Self>,
        acquire: F,
        after: Duration,
    ) -> Watched<F::Output> {
        tokio::pin!(acquire);
        if let Ok(result) = tokio::time::timeout(after, &mut acquire).await {
            return Watched::Done(result);
        }
        // `wait_for` looks at the current value first: subscribing only
        // now misses nothing.
        let mut down = self.down.subscribe();
        let recently_answered = self
            .answered_at
            .lock()
            .map(|at| at.is_some_and(|at| at.elapsed() < self.reprobe))
            .unwrap_or(false);
        if !recently_answered {
            self.start_probe();
        }
        let found_down = tokio::select! {
            result = &mut acquire => return Watched::Done(result),
            // `is_ok`: the borrow guard must not live across an await.
            found = down.wait_for(|down| *down) => found.is_ok(),
        };
        if found_down {
            Watched::Down
        } else {
            // The gate is gone (the pool is being dropped).
            Watched::Done(acquire.await)
        }
    }

    /// Starts the probe task unless one runs already.
    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let gate = Arc::downgrade(self);
        tokio::spawn(probe(gate));
    }
}

/// Connects until one server answers (and is accepted: see
/// [`Servers::find`]); marks the database down after each failure and up
/// after the success. Ends early when the pool is dropped.
async fn probe(gate: Weak<OutageGate>) {
    loop {
        let Some(g) = gate.upgrade() else { return };
        let (connect_timeout, reprobe) = (g.connect_timeout, g.reprobe);
        let servers = Arc::clone(&g.servers);
        drop(g);
        // `cargo xtask chaos` counts these lines: the pool's own connect
        // attempts while the server is down.
        tracing::debug!("outage probe: connect");
        let answered = servers.find(connect_timeout).await;
        let Some(g) = gate.upgrade() else { return };
        if answered {
            if let Ok(mut at) = g.answered_at.lock() {
                *at = Some(Instant::now());
            }
            if g.down.send_replace(false) {
                tracing::info!("database answers again; the pool reconnects");
            }
            g.probing.store(false, Ordering::Release);
            return;
        }
        if !g.down.send_replace(true) {
            tracing::warn!(retry_every = ?reprobe, "database does not answer; failing fast until it does");
        }
        drop(g);
        tokio::time::sleep(reprobe).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_at_most_twice_a_second() {
        assert_eq!(
            reprobe_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            reprobe_interval(Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }
}
