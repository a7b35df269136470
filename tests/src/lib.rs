//! Cross-crate integration tests of farm-rs live in `tests/`; this library
//! holds what they share.

use farm_core::{Cluster, ClusterConfig, Faults};

/// A three-node, three-copy shm cluster with small regions.
pub fn cluster_with(faults: Faults) -> Cluster {
    Cluster::start(ClusterConfig {
        region_bytes: 4 << 20,
        faults,
        ..ClusterConfig::default()
    })
    .expect("start cluster")
}
