//! Polling a node's inbox from any of its threads. The server
//! ([`crate::server`]) sits behind a mutex that application threads may
//! also take: on a machine with fewer cores than threads, a client waiting
//! for a LOCK answer is often the thread that is running, and it can
//! process the records its peers wait on instead of waiting for the server
//! thread to be scheduled. This module knows the server only as an
//! [`InboxPoller`], so the node's state does not depend on the participant.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdma_transport::{Fabric, MemoryRegion};

use super::gate::Gate;

use crate::codec::inbox::{reply_offset, LockReply};
use crate::error::Result;
use crate::task::{self, NoPause};
use crate::txn_id::TxnId;

/// Something that processes the records waiting in a node's rings.
pub(crate) trait InboxPoller: Send {
    /// One pass over every ring; returns how many records it processed.
    fn poll_once(&mut self) -> Result<usize>;

    /// Processes the records waiting in the ring from node `sender` only.
    fn poll_sender(&mut self, sender: usize) -> Result<usize>;
}

/// How threads of a node reach its inbox poller.
pub(crate) struct InboxHook {
    /// The server (weak: the server holds the node).
    poller: OnceLock<Weak<Mutex<dyn InboxPoller>>>,
    /// Application threads that poll this node's rings between their
    /// transactions ([`crate::Node::poller`]). While there are any, the
    /// server thread does not sleep on the doorbell (so senders need not
    /// wake it, a futex wake and a context switch per record on shm): it
    /// naps and leaves the records to them.
    pub(crate) pollers: AtomicUsize,
    /// The fabric's notification counter when a poller last polled; see
    /// [`InboxHook::poll_if_notified`].
    polled_at: AtomicU64,
}

impl InboxHook {
    pub(crate) fn new() -> InboxHook {
        InboxHook {
            poller: OnceLock::new(),
            pollers: AtomicUsize::new(0),
            polled_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Installs the poller; false if one was installed before.
    pub(crate) fn install(&self, poller: Weak<Mutex<dyn InboxPoller>>) -> bool {
        self.poller.set(poller).is_ok()
    }

    /// Runs one pass of the poller if no other thread is running it.
    pub(crate) fn help(&self) {
        if let Some(poller) = self.poller.get().and_then(Weak::upgrade) {
            if let Ok(mut poller) = poller.try_lock() {
                // A task must not pause holding the server (its thread's
                // other tasks would find it taken).
                let _held = NoPause::hold();
                let _ = poller.poll_once();
            }
        }
    }

    /// Processes the ring from node `sender` if no other thread is
    /// running the poller.
    pub(crate) fn help_sender(&self, sender: usize) {
        if let Some(poller) = self.poller.get().and_then(Weak::upgrade) {
            if let Ok(mut poller) = poller.try_lock() {
                let _held = NoPause::hold();
                let _ = poller.poll_sender(sender);
            }
        }
    }

    /// [`InboxHook::help`], skipped when no notification arrived since the
    /// last time a thread polled through here (where the fabric can tell).
    /// Records sent without a notification (COMMIT-BACKUP, TRUNCATE) are
    /// left to the server thread then: nobody waits on them.
    /// (Regression: polling on every call cost read-only YCSB-C a third of
    /// its throughput.)
    pub(crate) fn poll_if_notified(&self, fabric: &dyn Fabric) {
        let Some(now) = fabric.notification_counter() else {
            self.help();
            return;
        };
        if self.polled_at.load(Ordering::Relaxed) == now {
            return;
        }
        if let Some(poller) = self.poller.get().and_then(Weak::upgrade) {
            if let Ok(mut poller) = poller.try_lock() {
                // Read before polling: a notification after this read moves
                // the counter again, so it is never skipped.
                self.polled_at.store(now, Ordering::Relaxed);
                let _held = NoPause::hold();
                let _ = poller.poll_once();
            }
        }
    }

    /// True while application threads poll between transactions.
    pub(crate) fn has_pollers(&self) -> bool {
        self.pollers.load(Ordering::Acquire) > 0
    }
}

/// Spins on the answers before the first pass over the primaries' rings.
const HELP_PRIMARIES_AFTER: u32 = 8;

/// Waits until every primary of `primaries` answered the LOCK of `txid`
/// (sent from `context`); returns how many granted it, or `None` after
/// `timeout` or once `node`'s gate closes. The primaries WRITE their
/// answers into this node's inbox, so the client polls memory: no thread
/// of this node needs to wake for it.
///
/// While it waits it runs server passes: this node's (`hook`), for the
/// records its peers wait on, and each primary's (`help_primary`, with
/// the primary's id), which in an in-process cluster processes the LOCK in
/// this thread.
pub(crate) fn wait_lock_replies(
    (inbox, hook, help_primary, fabric, gate): (
        &MemoryRegion,
        &InboxHook,
        &dyn Fn(usize),
        &dyn Fabric,
        &Gate,
    ),
    context: usize,
    txid: TxnId,
    primaries: &[usize],
    (timeout, spin_polls): (Duration, u32),
) -> Option<usize> {
    // The clock is first read at the 64th round: most answers come before
    // it (a clock read per LOCK was a measurable share of TATP's commit),
    // and the timeout, counted from there, is longer by those 64 rounds.
    let mut started: Option<Instant> = None;
    let mut last_progress: Option<Instant> = None;
    let mut spins = 0u32;
    loop {
        let mut answered = 0;
        let mut granted = 0;
        for &primary in primaries {
            let word = inbox
                .atomic_u64(reply_offset(context, primary))
                .expect("reply offsets come from the inbox layout")
                // This Acquire pairs with the primary's WRITE of its
                // answer, made after it took (or refused) the locks.
                .load(Ordering::Acquire);
            match LockReply::decode(word) {
                Some(reply) if reply.sequence == txid.sequence() => {
                    answered += 1;
                    granted += usize::from(reply.granted);
                }
                _ => {}
            }
        }
        if answered == primaries.len() {
            return Some(granted);
        }
        spins += 1;
        if task::pause_after(spins) {
            // In a task: the thread's other transactions ran, and its
            // worker polled this node's rings, a round that costs what
            // many spins do. Help the primaries every round (in process,
            // this processes the LOCK here; regression: waiting 128
            // rounds first, as a plain thread waits 128 spins, made the
            // mean LOCK phase 10 ms over verbs in the VM).
            for &primary in primaries {
                help_primary(primary);
            }
        } else {
            // A plain thread: spin, then yield the core.
            if spins == HELP_PRIMARIES_AFTER {
                for &primary in primaries {
                    help_primary(primary);
                }
            }
            if spins < spin_polls.max(HELP_PRIMARIES_AFTER) {
                std::hint::spin_loop();
                continue;
            }
            if spins.is_multiple_of(16) {
                hook.help();
                for &primary in primaries {
                    help_primary(primary);
                }
            } else {
                std::thread::yield_now();
            }
        }
        if spins.is_multiple_of(64) {
            let now = Instant::now();
            let started = *started.get_or_insert(now);
            // A closed gate: the configuration is changing, and a primary
            // that failed will never answer; recovery decides instead.
            if now.duration_since(started) >= timeout || !gate.is_open() {
                return None;
            }
            let last = *last_progress.get_or_insert(now);
            if now.duration_since(last) >= Duration::from_millis(1) {
                last_progress = Some(now);
                let _ = fabric.progress();
            }
        }
    }
}
