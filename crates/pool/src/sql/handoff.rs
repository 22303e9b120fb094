//! [`Handoff`]: PostgreSQL connections passed from the caller that is done
//! with one straight to the next caller, without sqlx's release check.
//!
//! When a `PoolConnection` is dropped, sqlx spawns a task that sends a
//! Sync and waits for the server's ReadyForQuery before the connection is
//! idle again: a task and a round trip to the server per query, and the
//! connection cannot be lent meanwhile. That check exists for connections
//! left midway (a dropped statement, a dropped transaction's queued
//! rollback). A connection whose work finished cleanly — the caller said
//! so with [`SqlConnection::finished`](super::SqlConnection::finished), no
//! transaction is open and nothing waits in its write buffer — does not
//! need it: it goes to the oldest waiting caller at once, or is kept here
//! for the next one. sqlx still counts it as lent.
//!
//! What sqlx's idle handling would do, this does too: a connection kept
//! here for [`VALIDATE_AFTER_IDLE`](super::VALIDATE_AFTER_IDLE) or longer,
//! past its lifetime, or opened before the server was demoted is given
//! back to sqlx (which checks it), not lent; a sweep gives back those left
//! unused; closing the pool gives back all.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use tokio::sync::oneshot;

/// A connection outside sqlx's idle queue, with what its checks need.
/// (Generic only so that the unit tests can keep plain values.)
#[derive(Debug)]
pub(crate) struct Kept<C = PoolConnection<Postgres>> {
    pub(crate) conn: C,
    /// When it was opened (its age decides its lifetime and whether it
    /// predates a demotion).
    pub(crate) opened: Instant,
    /// When it was last returned (set by [`Handoff::give`]).
    pub(crate) returned: Instant,
}

/// The kept connections and the callers waiting for one; one lock, so a
/// connection is never kept while a caller waits (no lost wake-up).
#[derive(Debug)]
pub(crate) struct Handoff<C = PoolConnection<Postgres>> {
    state: Mutex<State<C>>,
}

impl<C> Default for Handoff<C> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                kept: Vec::new(),
                waiters: VecDeque::new(),
                sqlx_waiters: 0,
                closed: false,
            }),
        }
    }
}

#[derive(Debug)]
struct State<C> {
    /// Most recently returned last: lent first, so the others age out.
    kept: Vec<Kept<C>>,
    /// Callers waiting for a handoff (see [`Wait::Handoff`]), oldest first. A
    /// caller that stopped waiting leaves a closed sender, skipped and
    /// pruned.
    waiters: VecDeque<oneshot::Sender<Kept<C>>>,
    /// Callers waiting on sqlx alone: while there are any, returned
    /// connections go back to sqlx, which serves them.
    sqlx_waiters: usize,
    closed: bool,
}

/// How a caller without a kept connection waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// For a handoff: alone for up to [`HANDOFF_ALONE`], then on sqlx
    /// too (sqlx is at its maximum: it can only lend what comes back to
    /// it).
    Handoff,
    /// On sqlx alone (sqlx has room: it opens a connection, which a
    /// handoff must not cancel midway).
    Sqlx,
}

/// What [`Handoff::take`] gives.
pub(crate) enum Taken<'a, C = PoolConnection<Postgres>> {
    /// A kept connection that passed the caller's check.
    Kept(Kept<C>),
    /// The caller is registered and receives the next connection returned
    /// (the receiver closes if the pool closes).
    Handoff(oneshot::Receiver<Kept<C>>),
    /// The caller is counted as waiting on sqlx for as long as this lives.
    Sqlx(SqlxWaiter<'a, C>),
}

/// Counts a caller waiting on sqlx alone; see [`Wait::Sqlx`].
pub(crate) struct SqlxWaiter<'a, C>(&'a Handoff<C>);

impl<C> Drop for SqlxWaiter<'_, C> {
    fn drop(&mut self) {
        self.0.state().sqlx_waiters -= 1;
    }
}

/// What [`Handoff::give`] did.
pub(crate) enum Given<C = PoolConnection<Postgres>> {
    /// Handed to a waiting caller, or kept.
    Done,
    /// Not taken: the pool is closed, or callers wait on sqlx. The caller
    /// drops it, which returns it to sqlx.
    Back(Kept<C>),
}

impl<C> Handoff<C> {
    fn state(&self) -> MutexGuard<'_, State<C>> {
        // The state stays consistent at every unlock: a panic elsewhere
        // does not invalidate it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned connection that `fit` accepts; those it
    /// rejects go into `unfit` (the caller gives them back to sqlx,
    /// outside the lock). With none, registers the caller to `wait`.
    pub(crate) fn take(
        &self,
        fit: impl Fn(&Kept<C>) -> bool,
        unfit: &mut Vec<Kept<C>>,
        wait: Wait,
    ) -> Taken<'_, C> {
        let mut state = self.state();
        while let Some(kept) = state.kept.pop() {
            if fit(&kept) {
                return Taken::Kept(kept);
            }
            unfit.push(kept);
        }
        match wait {
            Wait::Handoff => {
                let (tx, rx) = oneshot::channel();
                if !state.closed {
                    // Callers that stopped waiting (their acquire finished
                    // through sqlx, or was cancelled) leave closed senders.
                    if state.waiters.len() >= 64 {
                        state.waiters.retain(|w| !w.is_closed());
                    }
                    state.waiters.push_back(tx);
                }
                Taken::Handoff(rx)
            }
            Wait::Sqlx => {
                state.sqlx_waiters += 1;
                Taken::Sqlx(SqlxWaiter(self))
            }
        }
    }

    /// Hands `kept` to the oldest caller waiting for a handoff, or keeps
    /// it; gives it back when the pool is closed or a caller waits on
    /// sqlx alone (sqlx serves that caller with it).
    pub(crate) fn give(&self, mut kept: Kept<C>) -> Given<C> {
        let mut state = self.state();
        if state.closed || state.sqlx_waiters > 0 {
            return Given::Back(kept);
        }
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(kept) {
                Ok(()) => return Given::Done,
                // That caller stopped waiting: the next one.
                Err(back) => kept = back,
            }
        }
        // Stamped under the lock, so `kept` stays in order of return.
        kept.returned = Instant::now();
        state.kept.push(kept);
        Given::Done
    }

    /// Removes the kept connections returned before `cutoff`.
    pub(crate) fn expired(&self, cutoff: Instant) -> Vec<Kept<C>> {
        let mut state = self.state();
        // Oldest first: those returned before the cutoff form a prefix.
        let stale = state.kept.partition_point(|k| k.returned < cutoff);
        state.kept.drain(..stale).collect()
    }

    /// Keeps nothing from now on; returns what was kept, and closes every
    /// waiter's receiver (they go on waiting on sqlx, which is closing).
    pub(crate) fn close(&self) -> Vec<Kept<C>> {
        let mut state = self.state();
        state.closed = true;
        state.waiters.clear();
        std::mem::take(&mut state.kept)
    }

    /// How many connections are kept.
    pub(crate) fn len(&self) -> usize {
        self.state().kept.len()
    }
}

/// How an acquire that waited got its connection.
pub(crate) enum Acquired {
    /// Handed over by the caller that returned it.
    Handed(Kept),
    /// From sqlx, with when it was opened (where sqlx's callbacks said).
    Sqlx(
        std::result::Result<PoolConnection<Postgres>, sqlx::Error>,
        Option<Instant>,
    ),
}

/// How long a caller waiting for a handoff waits for it alone before it
/// waits on sqlx too. Under load a connection comes back every few hundred
/// microseconds, and waiting on sqlx costs a large future and a place in
/// its queue, given up when the handoff comes; a connection that went back
/// to sqlx meanwhile (after a failed statement, say) is found by the next
/// caller that asks sqlx, or by a waiter after this long.
pub(crate) const HANDOFF_ALONE: Duration = Duration::from_millis(50);

/// Waits for whichever comes first: a handoff, or sqlx's acquire (made by
/// `acquire`, and started only after [`HANDOFF_ALONE`]); gives up at
/// `deadline` with sqlx's `PoolTimedOut`. A handoff that arrives as sqlx
/// answers is returned too, to be passed on.
pub(crate) async fn first_of<F>(
    mut handed: oneshot::Receiver<Kept>,
    deadline: Instant,
    acquire: impl FnOnce() -> Pin<Box<F>>,
) -> (Acquired, Option<Kept>)
where
    F: Future<
        Output = (
            std::result::Result<PoolConnection<Postgres>, sqlx::Error>,
            Option<Instant>,
        ),
    >,
{
    let alone_until = deadline.min(Instant::now() + HANDOFF_ALONE);
    let mut handoff_open = match tokio::time::timeout_at(alone_until.into(), &mut handed).await {
        Ok(Ok(kept)) => return (Acquired::Handed(kept), None),
        // The pool is closing: sqlx answers.
        Ok(Err(_)) => false,
        Err(_) => true,
    };
    let mut acquire = acquire();
    let both = std::future::poll_fn(|cx| {
        if handoff_open {
            match Pin::new(&mut handed).poll(cx) {
                Poll::Ready(Ok(kept)) => return Poll::Ready(Acquired::Handed(kept)),
                Poll::Ready(Err(_)) => handoff_open = false,
                Poll::Pending => {}
            }
        }
        acquire
            .as_mut()
            .poll(cx)
            .map(|(result, opened)| Acquired::Sqlx(result, opened))
    });
    let acquired = tokio::time::timeout_at(deadline.into(), both)
        .await
        .unwrap_or(Acquired::Sqlx(Err(sqlx::Error::PoolTimedOut), None));
    let extra = match acquired {
        Acquired::Handed(_) => None,
        Acquired::Sqlx(..) => {
            handed.close();
            handed.try_recv().ok()
        }
    };
    (acquired, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(conn: u32) -> Kept<u32> {
        let now = Instant::now();
        Kept {
            conn,
            opened: now,
            returned: now,
        }
    }

    fn take(h: &Handoff<u32>, wait: Wait) -> Taken<'_, u32> {
        h.take(|_| true, &mut Vec::new(), wait)
    }

    #[test]
    fn a_returned_connection_goes_to_the_oldest_waiter_before_it_is_kept() {
        let h = Handoff::default();
        let Taken::Handoff(mut first) = take(&h, Wait::Handoff) else {
            panic!("nothing kept yet: the caller waits");
        };
        let Taken::Handoff(mut second) = take(&h, Wait::Handoff) else {
            panic!("nothing kept yet: the caller waits");
        };
        assert!(matches!(h.give(kept(1)), Given::Done));
        assert_eq!(first.try_recv().map(|k| k.conn).ok(), Some(1));
        assert!(second.try_recv().is_err(), "one connection, one waiter");
        // A waiter that stopped waiting is skipped.
        drop(second);
        assert!(matches!(h.give(kept(2)), Given::Done));
        assert_eq!(h.len(), 1, "kept, nobody waits");
    }

    #[test]
    fn kept_connections_are_lent_newest_first_and_unfit_ones_set_aside() {
        let h = Handoff::default();
        for conn in 1..=3 {
            assert!(matches!(h.give(kept(conn)), Given::Done));
        }
        let mut unfit = Vec::new();
        let Taken::Kept(k) = h.take(|k| k.conn != 3, &mut unfit, Wait::Sqlx) else {
            panic!("two fit connections are kept");
        };
        assert_eq!(k.conn, 2);
        assert_eq!(unfit.iter().map(|k| k.conn).collect::<Vec<_>>(), [3]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn while_a_caller_waits_on_sqlx_alone_returned_connections_go_back_to_sqlx() {
        let h = Handoff::default();
        let counted = take(&h, Wait::Sqlx);
        assert!(matches!(counted, Taken::Sqlx(_)));
        assert!(matches!(h.give(kept(1)), Given::Back(k) if k.conn == 1));
        assert_eq!(h.len(), 0);
        drop(counted);
        assert!(matches!(h.give(kept(2)), Given::Done));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn expired_takes_the_oldest_and_close_takes_the_rest_and_keeps_nothing() {
        let h = Handoff::default();
        assert!(matches!(h.give(kept(1)), Given::Done));
        let cutoff = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(h.give(kept(2)), Given::Done));
        let old: Vec<u32> = h.expired(cutoff).into_iter().map(|k| k.conn).collect();
        assert_eq!(old, [1]);
        let Taken::Handoff(mut waiter) = h.take(|_| false, &mut Vec::new(), Wait::Handoff) else {
            panic!("the only kept connection is unfit: the caller waits");
        };
        assert!(
            h.close().is_empty(),
            "the unfit one was handed back to the caller"
        );
        assert!(
            waiter.try_recv().is_err(),
            "closed: the waiter goes on to sqlx"
        );
        assert!(matches!(h.give(kept(3)), Given::Back(_)));
    }
}
