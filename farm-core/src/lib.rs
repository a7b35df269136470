//! The farm-rs engine: FaRM's replicated optimistic transactions over the
//! fabrics of `rdma-transport`.
//!
//! Layers, bottom up: [`header`] (object header words and addresses),
//! [`region`] (region files, slot layout, torn-read detection, allocator),
//! [`record`] and [`ring`] (message rings appended by one-sided WRITEs),
//! [`node`] (a node's memory and its server thread), [`txn`] (execution and
//! the commit protocol), [`cluster`] (the embedded API).

pub mod bootstrap;
pub mod cluster;
pub mod cluster_file;
pub mod config;
pub mod error;
pub mod header;
pub mod kv;
pub mod limits;
pub mod node;
pub mod process;
pub mod record;
pub mod recovery;
pub mod region;
pub mod ring;
pub mod txn;

pub use cluster::{Cluster, Node, Poller};
pub use cluster_file::ClusterFile;
pub use config::{ClusterConfig, FabricChoice, Faults, Placement};
pub use error::{Error, Result};
pub use header::{Addr, Header};
pub use kv::HashTable;
pub use process::NodeProcess;
pub use txn::{AbortReason, Outcome, PhaseTimes, Txn, TxnError};
