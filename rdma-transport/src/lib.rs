//! The fabric of farm-rs: registered memory, reliable connected endpoints and
//! one-sided RDMA operations (READ, WRITE, compare-and-swap, fetch-and-add),
//! over interchangeable backends.
//!
//! * [`shm`]: nodes on one host, threads of one process or separate
//!   processes, reach each other's registered memory through shared file
//!   mappings. It needs no hardware and is the embedded default.
//! * `verbs` (cargo feature `verbs`): real RDMA NICs and soft-RoCE through
//!   libibverbs (`rdma-sys`).
//! * [`faulty`]: a fault-injecting wrapper over either, for tests.
//!
//! Both backends implement [`Fabric`] and [`Endpoint`] and pass the same
//! conformance suite (`tests/conformance.rs`). Every one-sided operation is
//! bounds- and permission-checked against the registration of the target
//! range *before* it is posted, so a bad address is an [`Error`], never
//! undefined behaviour or a hung queue pair.
//!
//! This crate knows nothing of transactions: it may not interpret the bytes it
//! moves.

pub mod access;
pub mod copy;
pub mod error;
pub mod fabric;
pub mod faulty;
pub mod limits;
pub mod mr;
pub mod op;
pub mod pause;
pub mod shm;
#[cfg(feature = "verbs")]
pub mod verbs;
pub mod wire;

pub use access::Access;
pub use error::{CompletionStatus, Error};
pub use fabric::{Endpoint, Fabric, FabricKind, UnknownFabric};
pub use mr::{Backing, MemoryRegion};
pub use op::{LocalSlice, NodeId, Op, RemoteAddr};
