//! The cluster crate's error type: one variant per kind of failure, the
//! cause kept.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine failed (a transaction, a node's memory, the fabric).
    #[error(transparent)]
    Engine(#[from] farm_core::Error),
    #[error(transparent)]
    Fabric(#[from] rdma_transport::Error),
    /// A cluster file that does not parse or is inconsistent.
    #[error("{path}: {why}")]
    ClusterFile { path: PathBuf, why: String },
    /// A file of the launcher or a node process.
    #[error("cannot {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process (a node in a start-up round, node 0 answering a
    /// driver, a driver) failed, went away or spoke garbage; `peer` names
    /// it.
    #[error("{peer}: {what}")]
    Peer { peer: String, what: String },
    /// A peer speaks another version of a protocol.
    #[error("{peer} speaks {protocol} protocol version {theirs}, this build speaks {ours}")]
    Version {
        peer: String,
        protocol: &'static str,
        theirs: u32,
        ours: u32,
    },
    /// A node process of the cluster failed; its own words.
    #[error("node {node} failed: {error}")]
    NodeFailed { node: usize, error: String },
    /// A service refused or failed a driver's request.
    #[error("{service}: {error}")]
    Service { service: String, error: String },
    /// A launcher's node process could not be started or exited badly
    /// (`node` is `usize::MAX` when the text names the nodes itself).
    #[error("{}{what}", if *node == usize::MAX { String::new() } else { format!("node process {node}: ") })]
    Launch { node: usize, what: String },
}

impl Error {
    pub(crate) fn peer(peer: impl std::fmt::Display, what: impl std::fmt::Display) -> Error {
        Error::Peer {
            peer: peer.to_string(),
            what: what.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
