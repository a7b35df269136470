//! Cross-crate integration tests of farm-rs live in `tests/`; this library
//! holds what they (and the `farm` command's tests) share.

use std::path::{Path, PathBuf};

use farm_cluster::{ClusterFile, NodeEntry};
use farm_core::{Cluster, ClusterConfig, FabricKind, Faults};

/// A three-node, three-copy shm cluster with small regions.
pub fn cluster_with(faults: Faults) -> Cluster {
    Cluster::start(ClusterConfig {
        region_bytes: 4 << 20,
        faults,
        ..ClusterConfig::default()
    })
    .expect("start cluster")
}

/// A loopback port free now (the test starts node processes by hand, as a
/// user with a cluster file would; `farm_cluster::LocalCluster` reserves
/// ports without a race).
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

/// Writes DIR/cluster.toml: `nodes` shm nodes on loopback ports, data in
/// DIR/data, three copies.
pub fn shm_cluster_file(dir: &Path, nodes: usize, region_bytes: u64) -> (PathBuf, ClusterFile) {
    let file = ClusterFile {
        fabric: FabricKind::Shm,
        data_dir: dir.join("data"),
        copies: 3,
        regions_per_node: 1,
        region_bytes,
        device: None,
        gid_index: None,
        lease_ms: farm_cluster::cluster_file::LEASE_MS_DEFAULT,
        config_store: farm_cluster::StoreAddress::Embedded,
        nodes: (0..nodes)
            .map(|id| NodeEntry {
                id,
                bootstrap: free_port(),
                verbs: None,
            })
            .collect(),
    };
    let path = dir.join("cluster.toml");
    file.write(&path).expect("write the cluster file");
    (path, file)
}

/// `FARM node --quiet --config CONFIG --id ID`, with no standard input or
/// output (standard error is the caller's to set), as a user starts one
/// node of a cluster file.
pub fn node_command(farm: &str, config: &Path, id: usize) -> std::process::Command {
    let mut command = std::process::Command::new(farm);
    command
        .args(["node", "--quiet", "--config"])
        .arg(config)
        .args(["--id", &id.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    command
}
