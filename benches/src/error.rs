//! The one error type of the benchmarks: one variant per failing operation,
//! the fabric's error kept as the source.

use std::path::PathBuf;
use std::time::Duration;

use rdma_transport::NodeId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine failed (loading, a transaction, a node's memory).
    #[error(transparent)]
    Engine(#[from] farm_core::Error),
    /// Node processes, their rounds or a driver's request failed.
    #[error(transparent)]
    Cluster(#[from] farm_cluster::Error),
    /// A workload's consistency check found a violation.
    #[error("consistency check failed: {0}")]
    Consistency(String),
    #[error("cannot draw {path}: {error}")]
    Plot { path: PathBuf, error: String },
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error(
        "the {fabric} fabric is not built into this binary: rebuild with `--features {fabric}`"
    )]
    FabricNotBuilt { fabric: &'static str },
    #[error("cannot make a directory for the shm fabric: {source}")]
    ShmDirectory {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open node {node} of the {fabric} fabric: {source}")]
    OpenFabric {
        fabric: &'static str,
        node: NodeId,
        #[source]
        source: rdma_transport::Error,
    },
    #[error("cannot register the benchmark's memory: {source}")]
    Register {
        #[source]
        source: rdma_transport::Error,
    },
    #[error("cannot connect to node {node}: {source}")]
    Connect {
        node: NodeId,
        #[source]
        source: rdma_transport::Error,
    },
    #[error("node {node} advertises no benchmark buffer (is it a `farm rdma-bench` server?)")]
    NoPeerBuffer { node: NodeId },
    #[error("{what} failed: {source}")]
    Fabric {
        what: String,
        #[source]
        source: rdma_transport::Error,
    },
    #[error("{what}: nothing after {waited:?}")]
    Timeout { what: String, waited: Duration },
    #[error("control protocol: {0}")]
    Protocol(String),
    #[error("data check failed: {0}")]
    DataMismatch(String),
    #[error("cannot start the server thread: {source}")]
    SpawnServer {
        #[source]
        source: std::io::Error,
    },
    #[error("the server thread panicked")]
    ServerPanicked,
    #[error("cannot write {path}: {source}")]
    WriteReport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
