//! The farm-rs engine: FaRM's replicated optimistic transactions over the
//! fabrics of `rdma-transport` (FaRM NSDI'14, SOSP'15).
//!
//! Modules, bottom up; each uses only the ones above it in this list:
//!
//! | module | what |
//! | --- | --- |
//! | [`limits`] | every bound of the engine, checked against each other at compile time |
//! | [`error`], [`outcome`] | errors; commit outcomes, abort reasons and their counts |
//! | [`task`] | transactions as tasks: pausing at waits so a worker runs many in flight |
//! | [`header`], [`txn_id`] | the 64-bit words: object header, object address, transaction id |
//! | [`codec`] | every byte layout: records, object slots, region headers, the inbox |
//! | [`config`] | cluster configuration, region placement, injected faults |
//! | `region`, `allocator` | a node's replicas and the objects in them; slot allocation at a primary |
//! | `ring` | message rings appended by one-sided WRITEs |
//! | `node` | a node's shared state: memory, contexts, send path, truncation queue, inbox polling |
//! | `participant` | what a primary or backup does with each record (`on_lock`, `on_commit_backup`, …) |
//! | `coordinator` | the commit steps (`lock`, `validate`, `commit_backup`, `commit_primary`, `truncate`) |
//! | [`txn`] | transactions: execution and commit |
//! | `server`, `recovery` | the node's server thread; restart from the mapped files |
//! | [`reconfiguration`] | deciding the transactions a failure left unfinished |
//! | [`cluster`], [`startup`] | the embedded API (`Cluster`, `Node`); a node process's start-up steps |
//! | [`worker`] | worker event loops: many transactions in flight per thread |
//! | [`kv`] | a transactional hash table |
//!
//! Node processes, the cluster file and the driver protocol are the
//! cluster crate's (`farm-cluster`); this crate knows no file format but
//! its own memory's.

pub mod codec;
pub mod config;
pub mod error;
pub mod header;
pub mod kv;
pub mod limits;
pub mod outcome;
pub mod read_counts;
pub mod startup;
pub mod task;
pub mod txn;
pub mod txn_id;

pub mod cluster;
pub mod worker;

mod allocator;
mod coordinator;
mod node;
mod participant;
pub mod reconfiguration;
mod recovery;
mod region;
mod ring;
mod server;

#[cfg(feature = "test-support")]
pub mod testing;

pub use cluster::{Cluster, Node, NodeControl, Poller, RunAsync, ServingNode};
pub use config::{
    ClusterConfig, FabricKind, Fault, Faults, LockWait, Placement, RetryBudget, VerbsDevice,
};
pub use error::{Error, Result, TxnError};
pub use header::{Addr, Header};
pub use kv::{
    bucket_slots, HashTable, INLINE_VALUE_BYTES, INLINE_VALUE_BYTES_MAX, INLINE_VALUE_BYTES_MIN,
};
pub use node::{Directory, NodeStats};
pub use outcome::{AbortCounts, AbortReason, Outcome, PhaseTimes};
pub use read_counts::{thread_reads, ReadCounts};
pub use startup::{NodeKeys, NodeStartup, ReplaySummary};
pub use txn::Txn;
pub use txn_id::TxnId;
pub use worker::Worker;
