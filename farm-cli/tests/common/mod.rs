//! Helpers the `farm` binary's integration tests share.

use std::path::{Path, PathBuf};

use farm_cluster::{ClusterFile, NodeEntry};
use farm_core::FabricKind;

pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Writes DIR/cluster.toml: `nodes` shm nodes on loopback ports, data in
/// DIR/data, three copies.
pub fn cluster_file(dir: &Path, nodes: usize, region_bytes: u64) -> (PathBuf, ClusterFile) {
    let file = ClusterFile {
        fabric: FabricKind::Shm,
        data_dir: dir.join("data"),
        copies: 3,
        regions_per_node: 1,
        region_bytes,
        device: None,
        gid_index: None,
        nodes: (0..nodes)
            .map(|id| NodeEntry {
                id,
                bootstrap: free_port(),
                verbs: None,
            })
            .collect(),
    };
    let path = dir.join("cluster.toml");
    std::fs::write(&path, file.to_toml()).unwrap();
    (path, file)
}
