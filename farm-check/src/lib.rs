//! Records transactional histories of farm-rs workloads and checks them for
//! strict serializability.
//!
//! Modules: [`history`] (recording), [`mod@check`] and [`report`] (the
//! checker and its verdict), [`workload`] (the `farm check` workload),
//! [`service`] (that workload as a service of `farm node` processes) and
//! [`command`] (`farm check` as one call).
//!
//! # The history model
//!
//! A history is a set of transactions, each run by one client
//! ([`history::ClientId`]), with
//! - an invocation time and a completion time, in nanoseconds of one
//!   monotonic clock: the client stamps the invocation before its first
//!   operation and the completion after it learns the outcome;
//! - its micro-operations, in order, each with the value written or
//!   observed: a register read (`key → Some(value)`, or `None` for a key
//!   never written), a register write, a list append, a list read (the whole
//!   list);
//! - its outcome: committed, aborted (certainly did not commit), or unknown
//!   (the client crashed or timed out; it may have committed).
//!
//! Values written to a register and elements appended to a list must be
//! unique per key, so that every observed value names the one transaction
//! that wrote it; the checker asserts this. A key is either a register or a
//! list for the whole history.
//!
//! Workloads record through a [`Recorder`]: every client thread takes a
//! [`ClientLog`] and records into it without locks; the recorder merges the
//! logs when they are dropped.
//!
//! ```
//! use farm_check::{check, Outcome, Recorder};
//!
//! let recorder = Recorder::new();
//! let mut log = recorder.client();
//! let mut txn = log.begin();
//! txn.read_list(1, vec![]);
//! txn.append(1, 10);
//! txn.finish(Outcome::Committed);
//! let mut txn = log.begin();
//! txn.read_list(1, vec![10]);
//! txn.finish(Outcome::Committed);
//! drop(log);
//!
//! let report = check(&recorder.history());
//! assert!(report.is_valid(), "{}", report.table());
//! ```
//!
//! # What is checked
//!
//! [`check()`] hands the history to the `adya` crate (a Rust take on Jepsen's
//! Elle) with the `strict-serializable` model. It reports
//! - the cycles of Adya's dependency graph among committed transactions:
//!   `G0`, `G1c`, `G-single-item` (read skew), `G-nonadjacent-item`,
//!   `G2-item` (write skew), and their `-realtime` variants, where the cycle
//!   closes only through real-time order (a committed transaction that
//!   completed before another was invoked must precede it): a stale read is
//!   one of these;
//! - the anomalies that need no cycle: aborted reads (`G1a`), intermediate
//!   reads (`G1b`), lost updates, reads that contradict the transaction's own
//!   writes (`internal`), list reads that no single order of appends explains
//!   (`incompatible-order`);
//! - and, added here, `garbage-read`: a committed read of a value nobody
//!   wrote.
//!
//! # What is not checked
//!
//! - Predicates and range reads: only items (the `-item` anomalies).
//! - The reads of aborted and unknown transactions: an optimistic transaction
//!   may read an inconsistent snapshot before validation fails, and FaRM's do.
//! - For registers, the order of blind writes nobody read between: registers
//!   hide their history (see [`CheckOptions`]). Lists reveal it; prefer them.
//! - Cycles that need both a register edge and a list edge: adya checks one
//!   workload at a time, so the two kinds of keys are checked separately and
//!   the report notes it.
//! - Durability and recovery, except as far as they show in the values read.
//!
//! A valid report means no anomaly was observed in this history, not that
//! the engine is correct.

pub mod check;
pub mod command;
pub mod history;
pub mod report;
pub mod service;
pub mod workload;

pub use check::{check, check_with, CheckOptions};
pub use history::{
    ClientId, ClientLog, History, MicroOp, Outcome, Recorder, Txn, TxnId, TxnRecord,
};
pub use report::{Anomaly, Killed, Report, Verdict};
