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
    waiters: VecDeque<Waiter<C>>,
    /// Callers waiting on sqlx alone: while there are any, returned
    /// connections go back to sqlx, which serves them.
    sqlx_waiters: usize,
    closed: bool,
}

/// A caller waiting for a handoff, as the handoff sees it.
#[derive(Debug)]
struct Waiter<C> {
    handoff: oneshot::Sender<Kept<C>>,
    /// Dropped to send the caller to sqlx before its time alone is up; it
    /// keeps waiting for a handoff too.
    alone: Option<oneshot::Sender<()>>,
    alone_until: Instant,
}

/// What a caller waiting for a handoff holds (see [`first_of`]).
#[derive(Debug)]
pub(crate) struct Handed<C = PoolConnection<Postgres>> {
    /// Receives the next connection returned; closes if the pool closes.
    pub(crate) handoff: oneshot::Receiver<Kept<C>>,
    /// Closes when a connection went to sqlx for this caller: it waits on
    /// sqlx too from then on, not only after [`HANDOFF_ALONE`].
    pub(crate) alone: oneshot::Receiver<()>,
    pub(crate) alone_until: Instant,
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
    /// The caller is registered and receives the next connection returned.
    Handoff(Handed<C>),
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
                let (handoff, handoff_rx) = oneshot::channel();
                let (alone, alone_rx) = oneshot::channel();
                let alone_until = Instant::now() + HANDOFF_ALONE;
                if !state.closed {
                    // Callers that stopped waiting (their acquire finished
                    // through sqlx, or was cancelled) leave closed senders.
                    if state.waiters.len() >= 64 {
                        state.waiters.retain(|w| !w.handoff.is_closed());
                    }
                    state.waiters.push_back(Waiter {
                        handoff,
                        alone: Some(alone),
                        alone_until,
                    });
                }
                Taken::Handoff(Handed {
                    handoff: handoff_rx,
                    alone: alone_rx,
                    alone_until,
                })
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
    ///
    /// A connection given back to sqlx sends the oldest caller waiting for
    /// a handoff there as well ([`send_one_to_sqlx`](Self::send_one_to_sqlx)).
    pub(crate) fn give(&self, mut kept: Kept<C>) -> Given<C> {
        let mut state = self.state();
        if state.closed {
            return Given::Back(kept);
        }
        if state.sqlx_waiters > 0 {
            send_one_to_sqlx(&mut state);
            return Given::Back(kept);
        }
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.handoff.send(kept) {
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

    /// Sends the oldest caller still waiting alone for a handoff to sqlx
    /// too: a connection is going back to sqlx, after a failed statement
    /// or to be closed, and that caller would otherwise wait alone for up
    /// to [`HANDOFF_ALONE`] while the connection sits idle in sqlx (or sqlx
    /// has room to open one). It stays in line for a handoff, so it is
    /// never left waiting on sqlx alone for a connection another caller
    /// took there.
    pub(crate) fn send_one_to_sqlx(&self) {
        send_one_to_sqlx(&mut self.state());
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

/// Drops the `alone` sender of the oldest caller still waiting alone.
fn send_one_to_sqlx<C>(state: &mut State<C>) {
    let now = Instant::now();
    if let Some(waiter) = state
        .waiters
        .iter_mut()
        .find(|w| w.alone.is_some() && w.alone_until > now && !w.handoff.is_closed())
    {
        waiter.alone = None;
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
/// `acquire`, and started only after [`HANDOFF_ALONE`], or sooner when a
/// connection went to sqlx for this caller); gives up at `deadline` with
/// sqlx's `PoolTimedOut`. A handoff that arrives as sqlx answers is
/// returned too, to be passed on.
pub(crate) async fn first_of<F>(
    handed: Handed,
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
    let Handed {
        handoff: mut handed,
        mut alone,
        alone_until,
    } = handed;
    let alone_until = deadline.min(alone_until);
    let waited = tokio::time::timeout_at(alone_until.into(), async {
        tokio::select! {
            // A handoff first: it closes `alone` as it arrives.
            biased;
            handed = &mut handed => Some(handed),
            _ = &mut alone => None,
        }
    })
    .await;
    let mut handoff_open = match waited {
        Ok(Some(Ok(kept))) => return (Acquired::Handed(kept), None),
        // The pool is closing: sqlx answers.
        Ok(Some(Err(_))) => false,
        // Sent to sqlx, or alone long enough: sqlx too from now on.
        Ok(None) | Err(_) => true,
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

    fn wait(h: &Handoff<u32>) -> Handed<u32> {
        match take(h, Wait::Handoff) {
            Taken::Handoff(handed) => handed,
            _ => panic!("nothing kept: the caller waits"),
        }
    }

    fn sent_to_sqlx(handed: &mut Handed<u32>) -> bool {
        matches!(
            handed.alone.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        )
    }

    #[test]
    fn a_returned_connection_goes_to_the_oldest_waiter_before_it_is_kept() {
        let h = Handoff::default();
        let mut first = wait(&h);
        let mut second = wait(&h);
        assert!(matches!(h.give(kept(1)), Given::Done));
        assert_eq!(first.handoff.try_recv().map(|k| k.conn).ok(), Some(1));
        assert!(
            second.handoff.try_recv().is_err(),
            "one connection, one waiter"
        );
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
        // Callers waiting for a handoff meanwhile: each connection that goes
        // back to sqlx sends the oldest of them there too, at once.
        let mut first = wait(&h);
        let mut second = wait(&h);
        assert!(matches!(h.give(kept(2)), Given::Back(k) if k.conn == 2));
        assert!(
            sent_to_sqlx(&mut first),
            "the oldest waiter is sent to sqlx"
        );
        assert!(
            !sent_to_sqlx(&mut second),
            "one connection back to sqlx, one waiter sent after it"
        );
        drop(counted);
        // Nobody waits on sqlx alone any more: returned connections are
        // handed over, oldest waiter first, sent to sqlx or not.
        assert!(matches!(h.give(kept(3)), Given::Done));
        assert_eq!(first.handoff.try_recv().map(|k| k.conn).ok(), Some(3));
        assert!(matches!(h.give(kept(4)), Given::Done));
        assert_eq!(second.handoff.try_recv().map(|k| k.conn).ok(), Some(4));
        assert!(matches!(h.give(kept(5)), Given::Done));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_connection_going_to_sqlx_sends_the_oldest_caller_waiting_alone_after_it() {
        let h = Handoff::default();
        // Alone for longer than HANDOFF_ALONE: already waiting on sqlx.
        let mut long = wait(&h);
        std::thread::sleep(HANDOFF_ALONE + Duration::from_millis(10));
        let gone = wait(&h);
        let mut second = wait(&h);
        let mut third = wait(&h);
        // The one that stopped waiting is skipped too.
        drop(gone);
        h.send_one_to_sqlx();
        assert!(!sent_to_sqlx(&mut long));
        assert!(sent_to_sqlx(&mut second));
        assert!(!sent_to_sqlx(&mut third));
        // Sent or not, all stay in line for a handoff, oldest first.
        for (conn, handed) in [(1, &mut long), (2, &mut second), (3, &mut third)] {
            assert!(matches!(h.give(kept(conn)), Given::Done));
            assert_eq!(handed.handoff.try_recv().map(|k| k.conn).ok(), Some(conn));
        }
        // Nobody waiting: nothing to send, and the next one is kept.
        h.send_one_to_sqlx();
        assert!(matches!(h.give(kept(4)), Given::Done));
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
            waiter.handoff.try_recv().is_err(),
            "closed: the waiter goes on to sqlx"
        );
        assert!(matches!(h.give(kept(3)), Given::Back(_)));
    }
}
