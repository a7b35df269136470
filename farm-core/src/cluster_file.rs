//! The cluster file (TOML) that `farm node` processes share.
//!
//! ```toml
//! fabric = "shm"            # or "verbs"
//! data_dir = "/var/lib/farm" # node i keeps its files in data_dir/node-i
//! copies = 3
//! regions_per_node = 1
//! region_bytes = 16777216
//! # verbs only:
//! # device = "mlx5_0"
//! # gid_index = 3
//!
//! [[node]]
//! id = 0
//! bootstrap = "10.0.0.1:7600"  # TCP: start-up exchange through node 0
//! verbs = "10.0.0.1:7700"      # verbs handshakes (verbs only)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, FabricChoice, Faults};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub fabric: String,
    pub data_dir: PathBuf,
    #[serde(default = "default_copies")]
    pub copies: usize,
    #[serde(default = "default_regions_per_node")]
    pub regions_per_node: usize,
    #[serde(default = "default_region_bytes")]
    pub region_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_index: Option<u8>,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: usize,
    pub bootstrap: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbs: Option<SocketAddr>,
}

fn default_copies() -> usize {
    3
}
fn default_regions_per_node() -> usize {
    1
}
fn default_region_bytes() -> u64 {
    16 << 20
}

impl ClusterFile {
    pub fn load(path: &Path) -> Result<ClusterFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            what: "read the cluster file",
            path: path.to_path_buf(),
            source,
        })?;
        let file: ClusterFile = toml::from_str(&text)
            .map_err(|error| Error::Config(format!("{}: {error}", path.display())))?;
        file.check()?;
        Ok(file)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a cluster file serializes")
    }

    /// Checks what serde cannot: ids 0..n each once, verbs addresses when
    /// the fabric is verbs, and the engine's own limits.
    pub fn check(&self) -> Result<()> {
        for (index, node) in self.nodes.iter().enumerate() {
            if node.id != index {
                return Err(Error::Config(format!(
                    "nodes must be listed with ids 0, 1, 2, … in order; entry {index} has id {}",
                    node.id
                )));
            }
            if self.fabric == "verbs" && node.verbs.is_none() {
                return Err(Error::Config(format!(
                    "node {} needs a `verbs` address for the verbs fabric",
                    node.id
                )));
            }
        }
        match self.fabric.as_str() {
            "shm" | "verbs" => {}
            other => {
                return Err(Error::Config(format!(
                    "unknown fabric {other:?}: use \"shm\" or \"verbs\""
                )))
            }
        }
        self.engine_config(Faults::default()).validate()
    }

    pub fn engine_config(&self, faults: Faults) -> ClusterConfig {
        ClusterConfig {
            nodes: self.nodes.len(),
            copies: self.copies,
            regions_per_node: self.regions_per_node,
            region_bytes: self.region_bytes,
            data_dir: Some(self.data_dir.clone()),
            fabric: if self.fabric == "verbs" {
                FabricChoice::Verbs {
                    device: self.device.clone(),
                    gid_index: self.gid_index,
                }
            } else {
                FabricChoice::Shm
            },
            faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterFile> {
        let file: ClusterFile = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        file.check()?;
        Ok(file)
    }

    #[test]
    fn good_file_round_trips() {
        let text = r#"
            fabric = "shm"
            data_dir = "/tmp/x"
            [[node]]
            id = 0
            bootstrap = "127.0.0.1:7600"
            [[node]]
            id = 1
            bootstrap = "127.0.0.1:7601"
            [[node]]
            id = 2
            bootstrap = "127.0.0.1:7602"
        "#;
        let file = parse(text).unwrap();
        assert_eq!(
            (file.nodes.len(), file.copies, file.region_bytes),
            (3, 3, 16 << 20)
        );
        let again = parse(&file.to_toml()).unwrap();
        assert_eq!(again.nodes[2].bootstrap, file.nodes[2].bootstrap);
    }

    #[test]
    fn malformed_files_get_clear_errors() {
        let cases = [
            ("fabric = \"shm\"\ndata_dir = \"/x\"\nnode = []\ncolour = 1", "unknown field"),
            ("fabric = \"ib\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "unknown fabric"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\n[[node]]\nid = 1\nbootstrap = \"127.0.0.1:1\"", "in order"),
            ("fabric = \"verbs\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "needs a `verbs`"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"nowhere\"", "socket address"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\ncopies = 3\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "copies"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{text:?} gave {error:?}, expected it to mention {expected:?}"
            );
        }
    }
}
