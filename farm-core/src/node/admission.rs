//! A bound on the transactions a node runs at once, set with
//! [`crate::Node::set_max_in_flight`]; unbounded by default.
//!
//! On the 2-core development host, TATP's throughput fell as transactions
//! in flight per node grew, whether on more threads or more tasks per
//! thread (`farm bench --threads 2 --in-flight 8` lost as much as
//! `--threads 8 --in-flight 2`; see the README, "Measured", sixth
//! session): the cores were already busy, and each extra transaction only
//! added its working set and its waits. Admitting a new transaction only
//! while fewer than the bound run keeps the work in flight where the cores
//! keep up, however many client threads there are (admission control).
//!
//! A transaction takes its slot in [`crate::Node::begin`] and gives it
//! back when it commits, aborts or is dropped. While unbounded, nothing is
//! counted (no shared counter on the hot path).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::task;

/// How long [`Admission::enter`] waits for a slot before it fails.
pub(crate) const ADMISSION_WAIT_MS: u64 = crate::limits::RECOVERY_WAIT_MS;

pub(crate) struct Admission {
    /// The bound; `usize::MAX` while unbounded.
    max: AtomicUsize,
    /// Slots taken.
    used: AtomicUsize,
}

impl Admission {
    pub(crate) fn new() -> Admission {
        Admission {
            max: AtomicUsize::new(usize::MAX),
            used: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_max(&self, max: Option<std::num::NonZeroUsize>) {
        self.max
            .store(max.map_or(usize::MAX, |m| m.get()), Ordering::Release);
    }

    /// Takes a slot for a transaction of node `node`: `Ok(true)` when it
    /// took one (give it back with [`Admission::release`]), `Ok(false)`
    /// when the node is unbounded (nothing taken). While every slot is
    /// taken it calls `help` (poll the node's rings: the transactions it
    /// waits for may need them) and pauses in a task or yields on a plain
    /// thread.
    ///
    /// # Errors
    /// [`Error::InFlightFull`] when no slot came free within
    /// [`ADMISSION_WAIT_MS`].
    pub(crate) fn enter(&self, node: usize, mut help: impl FnMut()) -> Result<bool> {
        let mut polls = 0u32;
        let mut started: Option<Instant> = None;
        loop {
            let max = self.max.load(Ordering::Acquire);
            if max == usize::MAX {
                return Ok(false);
            }
            let used = self.used.load(Ordering::Relaxed);
            if used < max {
                if self
                    .used
                    .compare_exchange_weak(used, used + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(true);
                }
                continue;
            }
            help();
            if !task::pause_after(polls) {
                std::thread::yield_now();
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(64) {
                let waited = started.get_or_insert_with(Instant::now).elapsed();
                if waited >= Duration::from_millis(ADMISSION_WAIT_MS) {
                    return Err(Error::InFlightFull { node, max, waited });
                }
            }
        }
    }

    /// Gives back a slot [`Admission::enter`] took.
    pub(crate) fn release(&self) {
        self.used.fetch_sub(1, Ordering::Release);
    }
}
