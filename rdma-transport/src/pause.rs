//! Waits that let the thread's other work run. A caller that runs many
//! transactions on one thread (farm-core's workers: stackful tasks, one
//! per transaction in flight) installs a hook once per process; a wait of
//! this crate that finds nothing done yet (a completion queue polled
//! empty) calls [`pause`], which runs the thread's other tasks before it
//! polls again (FaRM NSDI'14 §4: nothing waits while a thread has other
//! work). Without a hook, or on a thread that runs no tasks, `pause` is a
//! load and a return, and the wait spins as before.

use std::sync::OnceLock;

static HOOK: OnceLock<fn(u32) -> bool> = OnceLock::new();

/// Installs `hook`, which returns true when it ran other work of the
/// thread (and the caller should poll again at once), false when there is
/// none here. Its argument is how many times the wait has polled already
/// (a scheduler yields the core when every wait of the thread is long). One hook per process: false when one was installed before
/// (the first stays).
pub fn set_pause_hook(hook: fn(u32) -> bool) -> bool {
    HOOK.set(hook).is_ok()
}

/// Runs the thread's other work through the hook, if one is installed,
/// from a wait that has polled `polls` times; true when it did.
pub fn pause(polls: u32) -> bool {
    HOOK.get().is_some_and(|hook| hook(polls))
}
