//! What tests need to look inside a node (feature `test-support`): the
//! bytes of its replicas. Not for applications: a replica's bytes are
//! written by peers at any time.

use std::sync::Arc;

use rdma_transport::MemoryRegion;

use crate::cluster::Node;

/// `node`'s replica of `region`, if it holds one.
pub fn replica(node: &Node, region: u16) -> Option<Arc<MemoryRegion>> {
    node.shared().replicas.get(region).cloned()
}

/// A three-node, three-copy shm cluster with regions of `region_bytes`
/// bytes, in a temporary directory.
///
/// # Panics
/// When it cannot start: a test has nothing to do then.
pub fn cluster(region_bytes: u64) -> crate::Cluster {
    crate::Cluster::start(crate::ClusterConfig {
        region_bytes,
        ..crate::ClusterConfig::default()
    })
    .expect("start a test cluster")
}

/// Allocates `count` objects on node `node` of `cluster`, one transaction
/// each, object `i` holding the text "node {node} object {i}": their
/// addresses.
///
/// # Panics
/// When an allocation fails.
pub fn objects(cluster: &crate::Cluster, node: usize, count: usize) -> Vec<crate::Addr> {
    (0..count)
        .map(|i| {
            cluster
                .node(node)
                .run(|txn| txn.alloc(format!("node {node} object {i}").as_bytes()))
                .expect("allocate a test object")
        })
        .collect()
}
