//! The one error type of the fabric. One variant per failing operation; an
//! errno or a completion status that a caller acts on gets its own variant.

use std::path::PathBuf;
use std::time::Duration;

use crate::access::Access;
use crate::op::NodeId;
use crate::wire::WireError;

/// A work completion status, as verbs reports it (`enum ibv_wc_status`), kept
/// numerically so that nothing is lost, with its name for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionStatus(pub u32);

impl CompletionStatus {
    pub const SUCCESS: CompletionStatus = CompletionStatus(0);
    pub const LOCAL_PROTECTION: CompletionStatus = CompletionStatus(4);
    pub const REMOTE_INVALID_REQUEST: CompletionStatus = CompletionStatus(9);
    pub const REMOTE_ACCESS: CompletionStatus = CompletionStatus(10);
    pub const RETRY_EXCEEDED: CompletionStatus = CompletionStatus(12);

    pub fn name(self) -> &'static str {
        // Names from ibv_wc_status_str() in rdma-core.
        match self.0 {
            0 => "success",
            1 => "local length error",
            2 => "local QP operation error",
            3 => "local EE context operation error",
            4 => "local protection error",
            5 => "work request flushed error",
            6 => "memory management operation error",
            7 => "bad response error",
            8 => "local access error",
            9 => "remote invalid request error",
            10 => "remote access error",
            11 => "remote operation error",
            12 => "transport retry counter exceeded",
            13 => "RNR retry counter exceeded",
            14 => "local RDD violation error",
            15 => "remote invalid RD request",
            16 => "aborted error",
            17 => "invalid EE context number",
            18 => "invalid EE context state",
            19 => "fatal error",
            20 => "response timeout error",
            21 => "general error",
            _ => "unknown status",
        }
    }
}

impl std::fmt::Display for CompletionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (status {})", self.name(), self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map {len} bytes of memory: {source}")]
    Map {
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("memory registration of {len} bytes failed: {source}")]
    Register {
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("no RDMA device found{}", match .wanted { Some(name) => format!(" named {name}"), None => String::new() })]
    NoDevice { wanted: Option<String> },
    #[error("RDMA device {device}: {what} failed: {source}")]
    Device {
        device: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach node {node} at {address}: {source}")]
    Connect {
        node: NodeId,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("handshake with {peer} failed: {source}")]
    Handshake {
        peer: String,
        #[source]
        source: WireError,
    },
    #[error("node {node} is unknown to this fabric")]
    UnknownNode { node: NodeId },
    #[error("node {node} has no registration with key {key:#x}")]
    UnknownRemoteKey { node: NodeId, key: u32 },
    #[error("remote range {offset}+{len} is outside node {node}'s registration {key:#x} of {region_len} bytes")]
    RemoteOutOfRange {
        node: NodeId,
        key: u32,
        offset: u64,
        len: u64,
        region_len: u64,
    },
    #[error("node {node}'s registration {key:#x} grants {granted}, the operation needs {needed}")]
    RemotePermission {
        node: NodeId,
        key: u32,
        needed: Access,
        granted: Access,
    },
    #[error("local range {offset}+{len} is outside the local registration of {region_len} bytes")]
    LocalOutOfRange {
        offset: u64,
        len: u64,
        region_len: u64,
    },
    #[error("the local registration grants {granted}, the operation needs {needed}")]
    LocalPermission { needed: Access, granted: Access },
    #[error(
        "atomic operation at remote offset {offset} (local {local_offset}) is not 8-byte aligned"
    )]
    Misaligned { offset: u64, local_offset: u64 },
    #[error("operation addressed to node {addressed} was posted on the endpoint to node {peer}")]
    WrongPeer { peer: NodeId, addressed: NodeId },
    #[error("batch of {count} work requests exceeds the limit of {max}")]
    BatchTooLarge { count: usize, max: usize },
    #[error("send queue full: {outstanding} work requests outstanding, limit {max}")]
    QueueFull { outstanding: usize, max: usize },
    #[error("posting to node {node} failed: {source}")]
    Post {
        node: NodeId,
        #[source]
        source: std::io::Error,
    },
    #[error("work request to node {node} completed with {status} (vendor error {vendor_err:#x})")]
    Completion {
        node: NodeId,
        status: CompletionStatus,
        vendor_err: u32,
    },
    #[error(
        "no completion from node {node} after {waited:?} ({outstanding} work requests outstanding)"
    )]
    Timeout {
        node: NodeId,
        waited: Duration,
        outstanding: usize,
    },
    #[error("node {node} is unreachable: its process is gone")]
    PeerUnreachable { node: NodeId },
    #[error("the endpoint to node {node} is broken by an earlier error and must be reconnected")]
    EndpointBroken { node: NodeId },
    /// The filesystem cannot hold a file that is to be memory-mapped: its
    /// blocks are reserved when it is created, so a full disk is this
    /// error at start-up, never a SIGBUS at the first store into a page.
    #[error(
        "no space for {path}: it needs {needed} bytes, its filesystem has {available} bytes free"
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    /// A fault the test's [`crate::faulty::FaultPlan`] injected.
    #[error("injected fault: {what} from node {from} to node {to}")]
    Injected {
        what: &'static str,
        from: NodeId,
        to: NodeId,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
