//! The engine's error type. A conflict between transactions is not an
//! error: it is an [`crate::Outcome::Aborted`].

use crate::header::Addr;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Fabric(#[from] rdma_transport::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot {what} {path}: {source}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{addr} names no live object: it was freed (incarnation {found} now) or never allocated"
    )]
    StaleAddress { addr: Addr, found: u16 },
    #[error("{addr} is not a valid object address: {why}")]
    BadAddress { addr: Addr, why: &'static str },
    #[error("object of {bytes} bytes exceeds the largest object ({max} bytes)")]
    ObjectTooLarge { bytes: usize, max: u32 },
    #[error("region {region} has no free slot of {class_bytes} bytes")]
    OutOfMemory { region: u16, class_bytes: u32 },
    #[error("record of {bytes} bytes exceeds the limit of {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("ring to node {receiver} stayed full ({used} bytes in use, {needed} needed)")]
    RingFull {
        receiver: usize,
        used: u64,
        needed: u64,
    },
    #[error("corrupt record, not applied: {0}")]
    RingCorrupt(String),
    #[error("no answer from node {node} to {what} of transaction {txid:#x}")]
    ReplyTimeout {
        node: usize,
        what: &'static str,
        txid: u64,
    },
    #[error("node {0} is shut down")]
    ShutDown(usize),
    /// Another process (a node in a bootstrap round, node 0 answering a
    /// driver) failed, went away or spoke garbage; the text names it.
    #[error("{0}")]
    Peer(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
