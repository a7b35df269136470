//! The gate a node's transactions pass: open while the node serves a
//! configuration, closed while it changes (FaRM SOSP'15 §5.2: "apply the
//! new configuration ... block new transactions"). While it is closed,
//! new transactions wait at `begin`, commits that have not written a
//! COMMIT-BACKUP give up at their next step, and commits whose outcome
//! recovery must decide wait here for the decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::task;
use crate::txn_id::TxnId;

/// How far a commit got when the gate closed: what recovery decides by
/// when its coordinator survived.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum CommitPhase {
    /// LOCKs, VALIDATE, and maybe some COMMIT-BACKUPs: no primary was told
    /// to commit. Recovery aborts it.
    BeforeCommitPrimary,
    /// COMMIT-PRIMARY was sent to at least one primary (every
    /// COMMIT-BACKUP had been acknowledged). Recovery commits it.
    CommitPrimarySent,
}

/// The clock leases are kept in: this process's first look at it.
fn lease_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[derive(Default)]
struct State {
    closed: bool,
    /// The node failed ([`Gate::abandon`]): no decision will come.
    abandoned: bool,
    /// Commits parked for recovery's decision, with their phase.
    in_doubt: HashMap<TxnId, CommitPhase>,
    /// Decisions recovery made for parked commits: committed or not.
    decided: HashMap<TxnId, bool>,
}

pub(crate) struct Gate {
    /// `!closed`, read on every begin and commit step without the lock.
    open: AtomicBool,
    /// Commits between their start and their end (or parking).
    active: AtomicUsize,
    /// Threads in [`Gate::wait_quiet`]: the last active commit to end
    /// wakes them, and takes the lock to do so, only when there are any.
    /// (Regression, found with `strace -c -f`: notifying on every commit
    /// that left no other active, a `futex` wake system call each, was 96%
    /// of TATP's `futex` calls.)
    quiet_waiters: AtomicUsize,
    /// When this node's lease ends, in ns after [`lease_epoch`];
    /// `u64::MAX`: no lease.
    lease_until_ns: std::sync::atomic::AtomicU64,
    /// A membership agent (leases, a configuration manager) watches this
    /// node: a commit that loses a peer waits for recovery's decision
    /// instead of failing.
    managed: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

/// A commit counted as active until dropped.
pub(crate) struct Active<'a> {
    gate: &'a Gate,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        // SeqCst on both counters on both sides (Dekker): either the
        // waiter sees this commit gone, or this sees the waiter and wakes
        // it, under the lock it holds until it waits.
        if self.gate.active.fetch_sub(1, Ordering::SeqCst) == 1
            && self.gate.quiet_waiters.load(Ordering::SeqCst) > 0
        {
            // Whoever waits for the commits to stop looks again.
            let _state = self.gate.state.lock().expect("gate lock");
            self.gate.changed.notify_all();
        }
    }
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            open: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            quiet_waiters: AtomicUsize::new(0),
            managed: AtomicBool::new(false),
            lease_until_ns: std::sync::atomic::AtomicU64::new(u64::MAX),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// True while the node serves its configuration.
    pub(crate) fn is_open(&self) -> bool {
        // SeqCst with `enter` and `close`: a commit counts itself active,
        // then looks at the gate; `close` shuts it, then counts the
        // active. One of the two sees the other (store-load order).
        self.open.load(Ordering::SeqCst)
    }

    /// Sets the end of this node's lease (FaRM SOSP'15 §5.1): from then
    /// on, until renewed, no commit begins and no read-only commit
    /// finishes. `None`: no lease (a node no membership agent watches).
    pub(crate) fn set_lease_until(&self, until: Option<Instant>) {
        let ns = match until {
            None => u64::MAX,
            Some(until) => until.saturating_duration_since(lease_epoch()).as_nanos() as u64,
        };
        self.lease_until_ns.store(ns, Ordering::Release);
    }

    /// True while this node's lease holds (always, without a lease).
    pub(crate) fn lease_valid(&self) -> bool {
        let until = self.lease_until_ns.load(Ordering::Acquire);
        until == u64::MAX || (lease_epoch().elapsed().as_nanos() as u64) < until
    }

    /// True when a membership agent will reconfigure around a failed peer.
    pub(crate) fn managed(&self) -> bool {
        self.managed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_managed(&self, managed: bool) {
        self.managed.store(managed, Ordering::Relaxed);
    }

    /// Waits up to `left` for the state to change (or not: callers look
    /// again). On a plain thread, on the condition variable; in a task, by
    /// pausing, since what the change waits for may be another task of
    /// this thread (regression: with `farm bench --processes` on workers,
    /// a transaction waiting here for the gate to open blocked its thread,
    /// so another of its tasks, a commit still active, never finished, and
    /// the reconfiguration waiting for quiet never went on).
    fn wait_change<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        left: Duration,
    ) -> MutexGuard<'a, State> {
        if task::in_task() {
            drop(state);
            let paused = task::pause_after(u32::MAX);
            let state = self.state.lock().expect("gate lock");
            if paused {
                return state;
            }
            return self.changed.wait_timeout(state, left).expect("gate lock").0;
        }
        self.changed.wait_timeout(state, left).expect("gate lock").0
    }

    /// Waits until the gate is open, up to `timeout`; false if it stayed
    /// closed.
    pub(crate) fn wait_open(&self, timeout: Duration) -> bool {
        if self.is_open() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("gate lock");
        while state.closed {
            if state.abandoned {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.wait_change(state, left);
        }
        true
    }

    /// Counts a commit as active until the guard goes.
    pub(crate) fn enter(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        Active { gate: self }
    }

    /// Closes the gate: new transactions wait, commits stop at their next
    /// step.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().expect("gate lock");
        state.closed = true;
        self.open.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Waits up to `timeout` until no commit is active (each finished,
    /// gave up, or parked); false if some still run.
    pub(crate) fn wait_quiet(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("gate lock");
        self.quiet_waiters.fetch_add(1, Ordering::SeqCst);
        let quiet = loop {
            if self.active.load(Ordering::SeqCst) == 0 {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            state = self.wait_change(state, left);
        };
        self.quiet_waiters.fetch_sub(1, Ordering::SeqCst);
        drop(state);
        quiet
    }

    /// Parks commit `txid` (its phase for recovery); the caller then waits
    /// in [`Gate::await_decision`].
    pub(crate) fn park(&self, txid: TxnId, phase: CommitPhase) {
        let mut state = self.state.lock().expect("gate lock");
        state.in_doubt.insert(txid, phase);
    }

    /// The commits parked now, with their phases.
    pub(crate) fn parked(&self) -> Vec<(TxnId, CommitPhase)> {
        let state = self.state.lock().expect("gate lock");
        state.in_doubt.iter().map(|(t, p)| (*t, *p)).collect()
    }

    /// Recovery's decision for parked commits.
    pub(crate) fn decide(&self, decisions: impl IntoIterator<Item = (TxnId, bool)>) {
        let mut state = self.state.lock().expect("gate lock");
        for (txid, committed) in decisions {
            if state.in_doubt.remove(&txid).is_some() {
                state.decided.insert(txid, committed);
            }
        }
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for the decision on parked commit `txid`:
    /// `Some(true)` committed, `Some(false)` aborted, `None` unknown.
    pub(crate) fn await_decision(&self, txid: TxnId, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().expect("gate lock");
        loop {
            if let Some(committed) = state.decided.remove(&txid) {
                return Some(committed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.abandoned {
                state.in_doubt.remove(&txid);
                return None;
            }
            state = self.wait_change(state, left);
        }
    }

    /// The node failed (or was removed): closes the gate for good, and
    /// every parked commit and waiting transaction gives up at once.
    pub(crate) fn abandon(&self) {
        let mut state = self.state.lock().expect("gate lock");
        state.closed = true;
        state.abandoned = true;
        self.open.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Opens the gate: transactions go on in the new configuration.
    pub(crate) fn open(&self) {
        let mut state = self.state.lock().expect("gate lock");
        state.closed = false;
        self.open.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    // Not `super::*`: the module-graph test reads `super` as the parent.
    use crate::node::gate::Gate;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// The last commit to end wakes a reconfiguration waiting for quiet
    /// (it notifies only when someone waits, so this checks that the
    /// waiter is seen): the wait ends long before its timeout.
    #[test]
    fn the_last_commit_to_end_wakes_a_quiet_waiter() {
        let gate = Gate::new();
        for _ in 0..50 {
            let active = gate.enter();
            std::thread::scope(|scope| {
                let waiter = scope.spawn(|| {
                    let started = Instant::now();
                    let quiet = gate.wait_quiet(Duration::from_secs(60));
                    (quiet, started.elapsed())
                });
                std::thread::sleep(Duration::from_millis(2));
                drop(active);
                let (quiet, waited) = waiter.join().expect("waiter");
                assert!(quiet);
                assert!(
                    waited < Duration::from_secs(30),
                    "woken only by the timeout"
                );
            });
            assert_eq!(gate.quiet_waiters.load(Ordering::SeqCst), 0);
        }
        // Nobody active: quiet at once.
        assert!(gate.wait_quiet(Duration::ZERO));
    }
}
