//! Transactions as tasks: each transaction in flight on a worker thread
//! runs on its own stack (a stackful coroutine, `corosensei`), and where
//! it would wait (a LOCK answer, a locked object, a completion, a retry's
//! back-off) it *pauses*: the thread runs its other tasks and polls its
//! node's rings, then comes back. This is FaRM's event loop (NSDI'14 §4,
//! many transactions in flight per thread) with the continuations kept on
//! the tasks' stacks, as FaSST and DrTM+H do with coroutines.
//!
//! Better than DESIGN.md §6's callbacks, for us: the transaction code
//! (`Txn`, the coordinator's steps, the hash table, every workload) stays
//! written in blocking style and is the same code on a worker, on a plain
//! thread and under an async executor ([`crate::Node::run_async`]); only
//! the waits know whether they run in a task. On a plain thread
//! [`pause`] returns false and each wait spins or yields as before.
//!
//! A task must never pause while it holds a lock that another task of the
//! same thread may take: that would deadlock the thread. Code that holds
//! such a lock across a possible wait (a server pass, a ring sender)
//! holds a [`NoPause`] too.

use std::cell::Cell;
use std::ptr;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::error::{Error, Result};

/// Bytes of a task's stack (virtual: pages are touched as used), with a
/// guard page below it: an overflow faults instead of corrupting memory.
/// The engine's own deepest path, a commit under a hash-table operation,
/// uses a few tens of KiB; the rest is for the application's code in the
/// task (1 MiB, as `corosensei`'s default; a thread's is 8).
pub const TASK_STACK_BYTES: usize = 1024 * 1024;

thread_local! {
    /// The yielder of the task running on this thread now; null outside
    /// tasks (and while a task is paused).
    static CURRENT: Cell<*const Yielder<(), ()>> = const { Cell::new(ptr::null()) };
    /// How many [`NoPause`] guards this thread holds.
    static HELD: Cell<u32> = const { Cell::new(0) };
    /// The shortest wait, in polls, of the tasks that paused since the
    /// worker last asked ([`take_round_wait`]); `u32::MAX` when none did.
    static ROUND_WAIT: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// A transaction's task: a closure on its own stack that may pause.
pub(crate) struct Task<R> {
    coroutine: Coroutine<(), (), R, DefaultStack>,
}

impl<R: 'static> Task<R> {
    /// A task that will run `body` (not started yet).
    ///
    /// # Errors
    /// [`Error::TaskStack`] when the stack cannot be mapped.
    pub(crate) fn new(body: impl FnOnce() -> R + 'static) -> Result<Task<R>> {
        let stack = DefaultStack::new(TASK_STACK_BYTES).map_err(|source| Error::TaskStack {
            bytes: TASK_STACK_BYTES,
            source,
        })?;
        let coroutine = Coroutine::with_stack(stack, move |yielder: &Yielder<(), ()>, ()| {
            CURRENT.set(yielder);
            let result = body();
            CURRENT.set(ptr::null());
            result
        });
        Ok(Task { coroutine })
    }

    /// Runs the task until it pauses (`None`) or returns (`Some`). A
    /// panic in the task comes out of this call.
    ///
    /// # Panics
    /// When called again after the task returned.
    pub(crate) fn step(&mut self) -> Option<R> {
        // A task stepped from inside another (an async form polled in a
        // worker's task) restores the outer one's yielder afterwards.
        struct Restore(*const Yielder<(), ()>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.set(self.0);
            }
        }
        let _restore = Restore(CURRENT.replace(ptr::null()));
        match self.coroutine.resume(()) {
            CoroutineResult::Yield(()) => None,
            CoroutineResult::Return(result) => Some(result),
        }
    }
}

/// True when this thread is running a task now.
pub fn in_task() -> bool {
    !CURRENT.get().is_null()
}

/// Lets this thread's other tasks run, if this is a task and it may pause
/// here: true when it paused (and is running again), false when it did
/// not, and the caller should wait as a plain thread would.
pub fn pause() -> bool {
    pause_after(0)
}

/// [`pause`] from a wait that has polled `polls` times already: the worker
/// yields its core only when every task that paused in a round had waited
/// long (see [`take_round_wait`]).
pub fn pause_after(polls: u32) -> bool {
    if HELD.get() > 0 {
        return false;
    }
    let yielder = CURRENT.get();
    if yielder.is_null() {
        return false;
    }
    ROUND_WAIT.set(ROUND_WAIT.get().min(polls));
    CURRENT.set(ptr::null());
    // SAFETY: `yielder` is the yielder of the task running on this thread:
    // the task set it at its start and every pause puts it back before
    // going on, and it is cleared before the task returns; a yielder lives
    // as long as its task's stack, which is running now.
    unsafe { (*yielder).suspend(()) };
    CURRENT.set(yielder);
    true
}

/// The shortest wait, in polls, of the tasks that paused since the last
/// call (`u32::MAX` when none did); resets it.
pub(crate) fn take_round_wait() -> u32 {
    ROUND_WAIT.replace(u32::MAX)
}

/// Waits `duration`: pausing in a task, sleeping on a plain thread.
pub fn sleep(duration: Duration) {
    if !in_task() || HELD.get() > 0 {
        std::thread::sleep(duration);
        return;
    }
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if !pause_after(u32::MAX) {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            return;
        }
    }
}

/// While alive, [`pause`] does not pause on this thread: held across code
/// that keeps a lock other tasks of the thread may take.
pub(crate) struct NoPause(());

impl NoPause {
    pub(crate) fn hold() -> NoPause {
        HELD.set(HELD.get() + 1);
        NoPause(())
    }
}

impl Drop for NoPause {
    fn drop(&mut self) {
        HELD.set(HELD.get() - 1);
    }
}

/// The hook of `rdma_transport::pause`: the fabric's waits pause the task.
pub(crate) fn install_fabric_hook() {
    rdma_transport::pause::set_pause_hook(pause_after);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn tasks_interleave_at_pauses_and_return_their_results() {
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut tasks: Vec<Task<usize>> = (0..3)
            .map(|id| {
                let log = log.clone();
                Task::new(move || {
                    for step in 0..2 {
                        log.borrow_mut().push((id, step));
                        assert!(pause(), "a task pauses");
                    }
                    id * 10
                })
                .unwrap()
            })
            .collect();
        let mut results = vec![None; 3];
        while results.iter().any(Option::is_none) {
            for (id, task) in tasks.iter_mut().enumerate() {
                if results[id].is_none() {
                    results[id] = task.step();
                }
            }
        }
        assert_eq!(results, vec![Some(0), Some(10), Some(20)]);
        assert_eq!(
            *log.borrow(),
            vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)],
            "each task ran to its pause, in turn"
        );
        assert!(!in_task() && !pause(), "outside a task nothing pauses");
    }

    #[test]
    fn no_pause_guard_keeps_a_task_running() {
        let mut task = Task::new(|| {
            let _held = NoPause::hold();
            !pause()
        })
        .unwrap();
        assert_eq!(task.step(), Some(true), "ran to the end without pausing");
    }

    #[test]
    fn a_panicking_task_panics_its_caller_and_leaves_the_thread_outside_tasks() {
        let mut task = Task::new(|| -> () { panic!("inside") }).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.step()));
        assert!(caught.is_err());
        assert!(!in_task());
    }
}
