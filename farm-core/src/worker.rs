//! Worker event loops (FaRM NSDI'14 §4; issue 11): one thread keeps many
//! transactions of its node in flight. Each runs as a [`crate::task`]; a
//! transaction that waits (for a LOCK answer, a locked object, a fabric
//! completion, a retry's back-off) pauses, and the worker runs the next
//! one, and between rounds polls its node's rings itself, so incoming
//! LOCKs and COMMIT-PRIMARYs are processed by whichever worker polls next
//! instead of a thread that must first be woken.
//!
//! Which to use when:
//! - [`Worker::run`]: an application thread that only runs transactions
//!   (a benchmark client, a request loop); with `in_flight` > 1 it hides
//!   LOCK round trips and READ completions behind other transactions. On
//!   node processes and verbs that is where the time goes.
//! - [`crate::Node::run`] (blocking): an embedder that runs a transaction
//!   now and then from its own threads; each thread has one in flight.
//! - [`crate::Node::run_async`]: code that already lives in an async
//!   executor; a transaction's waits return `Pending` instead of blocking
//!   the executor's thread.
//!
//! The transaction code is the same in all three: only the waits differ.

use std::cell::Cell;

use crate::cluster::Node;
use crate::error::Result;
use crate::task::{self, Task};

/// A round in which every paused task had waited at least this many polls
/// (none began a new wait, so none finished one) ends with the worker
/// yielding its core: nothing on this thread moves, and what it waits for
/// may need a thread that has no core (a 2-core box running three
/// in-process nodes; soft-RoCE's kernel work in the VM).
const YIELD_AFTER_POLLS: u32 = 64;

/// One thread's event loop over `in_flight` transaction tasks of a node.
pub struct Worker<'n> {
    node: &'n Node,
    in_flight: usize,
}

impl<'n> Worker<'n> {
    /// A worker of `node` keeping `in_flight` tasks (at least one) going.
    pub fn new(node: &'n Node, in_flight: usize) -> Worker<'n> {
        Worker {
            node,
            in_flight: in_flight.max(1),
        }
    }

    /// How many tasks [`Worker::run`] runs.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Runs `body(task)` for every task index in `0..in_flight`, each on its
    /// own task on this thread, until every one has returned; between
    /// rounds it polls the node's rings. A body usually loops, running
    /// transactions (`Node::run`, `Txn::commit`, the hash table) until the
    /// application says stop. Returns the bodies' results by task index. A
    /// panic in a body comes out of this call, after the other tasks were
    /// unwound.
    ///
    /// # Errors
    /// [`crate::Error::TaskStack`] when a task's stack cannot be mapped
    /// (nothing has run then).
    pub fn run<R>(&self, body: impl Fn(usize) -> R) -> Result<Vec<R>> {
        task::install_fabric_hook();
        let results: Vec<Cell<Option<R>>> = (0..self.in_flight).map(|_| Cell::new(None)).collect();
        let body = &body;
        let mut tasks = Vec::with_capacity(self.in_flight);
        for (index, result) in results.iter().enumerate() {
            let run: Box<dyn FnOnce() + '_> = Box::new(move || result.set(Some(body(index))));
            // SAFETY: only the lifetime changes. The closure borrows `body`
            // and `results`, which outlive `tasks`: every task is run to its
            // end or dropped, which unwinds its stack, before this function
            // returns or unwinds (the tasks are a local nobody else holds).
            let run: Box<dyn FnOnce() + 'static> = unsafe { std::mem::transmute(run) };
            tasks.push(Some(Task::new(run)?));
        }
        // While this worker polls, the node's server thread naps instead
        // of sleeping on the doorbell.
        let _poller = self.node.poller();
        let mut live = tasks.len();
        while live > 0 {
            let mut finished = false;
            task::take_round_wait();
            for slot in &mut tasks {
                if let Some(task) = slot {
                    if task.step().is_some() {
                        *slot = None;
                        live -= 1;
                        finished = true;
                    }
                }
            }
            self.node.poll();
            if !finished && live > 0 && task::take_round_wait() >= YIELD_AFTER_POLLS {
                std::thread::yield_now();
            }
        }
        drop(tasks);
        Ok(results
            .into_iter()
            .map(|result| result.into_inner().expect("every task returned"))
            .collect())
    }
}
