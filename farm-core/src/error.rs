//! The engine's error type: one variant per kind of failure, each naming
//! its cause. A conflict between transactions is not an error: it is an
//! [`crate::Outcome::Aborted`].

use std::path::PathBuf;
use std::time::Duration;

use crate::codec::DecodeError;
use crate::header::Addr;
use crate::outcome::AbortReason;
use crate::txn_id::TxnId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fabric operation failed (a peer gone, an address out of range, a
    /// completion error).
    #[error(transparent)]
    Fabric(#[from] rdma_transport::Error),
    /// The caller's configuration is invalid; the text names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be made, opened or written.
    #[error("cannot {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A region's memory holds another region, or another size.
    #[error("the memory of region {region} holds {found}")]
    RegionMismatch { region: u16, found: String },
    #[error(
        "{addr} names no live object: it was freed (incarnation {found} now) or never allocated"
    )]
    StaleAddress { addr: Addr, found: u32 },
    /// An argument a caller chose is out of range; `what` names it.
    #[error("invalid {what}: {why}")]
    InvalidArgument { what: &'static str, why: String },
    #[error("{addr} is not a valid object address: {why}")]
    BadAddress { addr: Addr, why: &'static str },
    #[error("object of {bytes} bytes exceeds the largest object ({max} bytes)")]
    ObjectTooLarge { bytes: usize, max: u32 },
    #[error("region {region} has no free slot of {class_bytes} bytes")]
    OutOfMemory { region: u16, class_bytes: u32 },
    #[error("node {node} is primary of no region: it cannot allocate")]
    NotPrimary { node: usize },
    #[error("record of {bytes} bytes exceeds the limit of {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    /// A transaction whose records cannot fit: refused before anything
    /// was sent (see [`crate::limits`] for the largest transaction).
    #[error(
        "transaction too large: its {record} record to node {node} would carry {objects} objects in {bytes} bytes, the limit is {max} bytes"
    )]
    TransactionTooLarge {
        record: &'static str,
        node: usize,
        objects: usize,
        bytes: usize,
        max: usize,
    },
    /// A commit failed after it may have become durable (a COMMIT-BACKUP
    /// was written: FaRM SOSP'15 §5.3 counts it as evidence of commit):
    /// its outcome is not known to this caller, and its locks stay until
    /// recovery decides it.
    #[error("outcome of transaction {txid} unknown: {step} failed: {source}")]
    OutcomeUnknown {
        txid: TxnId,
        step: &'static str,
        #[source]
        source: Box<Error>,
    },
    /// A commit failed before anything but LOCKs was sent, and the ABORT
    /// that releases them failed too.
    #[error("transaction {txid} failed ({cause}) and releasing its locks failed too: {source}")]
    LocksLeft {
        txid: TxnId,
        cause: Box<Error>,
        #[source]
        source: Box<Error>,
    },
    /// The node's configuration is changing (a node failed or joined) and
    /// did not settle within `waited`: no transaction can begin.
    #[error("node {node} is reconfiguring: no new configuration within {waited:?}")]
    Unavailable {
        node: usize,
        waited: std::time::Duration,
    },
    #[error("more than {max} concurrent transactions on node {node}")]
    TooManyContexts { node: usize, max: usize },
    /// Node `node` kept its bound of `max` transactions in flight
    /// ([`crate::Node::set_max_in_flight`]) full for `waited`: usually a
    /// plain thread that holds `max` open transactions and begins another,
    /// waiting on itself.
    #[error("node {node} kept its {max} transactions in flight for {waited:?}, no slot for another (a thread that holds open transactions and begins one more waits on itself)")]
    InFlightFull {
        node: usize,
        max: usize,
        waited: Duration,
    },
    #[error("cannot map a {bytes}-byte stack for a transaction task: {source}")]
    TaskStack {
        bytes: usize,
        source: std::io::Error,
    },
    #[error("ring to node {receiver} stayed full ({used} bytes in use, {needed} needed)")]
    RingFull {
        receiver: usize,
        used: u64,
        needed: u64,
    },
    /// A record in a ring (or an object, a region header) did not decode:
    /// it is never applied.
    #[error("corrupt {what}, not applied: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: DecodeError,
    },
    #[error("no answer from node {node} to {what} of transaction {txid}")]
    ReplyTimeout {
        node: usize,
        what: &'static str,
        txid: TxnId,
    },
    /// Something the engine waits for (a quiet cluster, drained rings) did
    /// not happen in time.
    #[error("{what} did not happen within {waited:?}")]
    Timeout {
        what: &'static str,
        waited: Duration,
    },
    #[error("node {0} is shut down")]
    ShutDown(usize),
    /// `Node::run` gave up on a transaction that kept aborting.
    #[error(
        "gave up after {attempts} attempts in {waited:?}: the transaction kept aborting (last: {last} conflict)"
    )]
    RetriesExhausted {
        attempts: u64,
        waited: Duration,
        last: AbortReason,
    },
    /// The fabric the configuration asks for is not built into this binary.
    #[error("this build has no {fabric} fabric: build with `--features {fabric}`")]
    FabricNotBuilt { fabric: &'static str },
    /// Another process (a node in a bootstrap round, node 0 answering a
    /// driver) failed, went away or spoke garbage; the text names it.
    #[error("{0}")]
    Peer(String),
}

/// What can stop a transaction's operation: a conflict (retry the
/// transaction) or a real error.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("transaction conflict ({0})")]
    Conflict(AbortReason),
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<rdma_transport::Error> for TxnError {
    fn from(error: rdma_transport::Error) -> Self {
        TxnError::Failed(Error::Fabric(error))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
