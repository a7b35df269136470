//! The cluster file (TOML) that `farm node` processes and their drivers
//! share.
//!
//! ```toml
//! fabric = "shm"             # or "verbs"
//! data_dir = "/var/lib/farm" # node i keeps its files in data_dir/node-i
//! copies = 3
//! regions_per_node = 1
//! region_bytes = 16777216
//! lease_ms = 2000            # membership leases (FaRM SOSP'15 §5.1)
//! config_store = "embedded"  # the default: a file in data_dir, one host;
//!                            # or "zk://host:port[,host:port]/path": ZooKeeper
//! # verbs only:
//! # device = "mlx5_0"
//! # gid_index = 3
//!
//! [[node]]
//! id = 0
//! bootstrap = "10.0.0.1:7600"  # TCP: start-up rounds through node 0, drivers
//! verbs = "10.0.0.1:7700"      # verbs handshakes (verbs only)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use farm_core::{ClusterConfig, FabricKind, Faults, VerbsDevice};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::zookeeper::StoreAddress;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub fabric: FabricKind,
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
    /// The lease time of the membership agents, in milliseconds: a node
    /// whose lease at the configuration manager is not renewed for this
    /// long is removed from the configuration (FaRM SOSP'15 §5.1).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Where configurations are agreed (FaRM SOSP'15 §5.2): `embedded` (the
    /// default; a file in `data_dir`, so node processes on one host) or
    /// `zk://host:port[,host:port…]/path` (a ZooKeeper ensemble).
    #[serde(default, skip_serializing_if = "StoreAddress::is_embedded")]
    pub config_store: StoreAddress,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: usize,
    pub bootstrap: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbs: Option<SocketAddr>,
}

/// The default lease time; see the README's "Failures" for how it was
/// chosen.
pub const LEASE_MS_DEFAULT: u64 = 2_000;
/// The shortest lease a cluster file may ask for.
pub const LEASE_MS_MIN: u64 = 5;
/// The longest.
pub const LEASE_MS_MAX: u64 = 60_000;

fn default_lease_ms() -> u64 {
    LEASE_MS_DEFAULT
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
    /// Reads and checks the cluster file at `path`.
    ///
    /// # Errors
    /// [`Error::File`] when it cannot be read; [`Error::ClusterFile`]
    /// naming the field when it does not parse or is inconsistent.
    pub fn load(path: &Path) -> Result<ClusterFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            what: "read the cluster file",
            path: path.to_path_buf(),
            source,
        })?;
        ClusterFile::parse(&text).map_err(|why| Error::ClusterFile {
            path: path.to_path_buf(),
            why,
        })
    }

    /// Parses and checks a cluster file's text.
    ///
    /// # Errors
    /// What is wrong with it, in words.
    pub fn parse(text: &str) -> std::result::Result<ClusterFile, String> {
        let file: ClusterFile = toml::from_str(text).map_err(|error| error.to_string())?;
        file.check()?;
        Ok(file)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a cluster file serializes")
    }

    /// Writes the file to `path`.
    ///
    /// # Errors
    /// [`Error::File`].
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_toml()).map_err(|source| Error::File {
            what: "write the cluster file",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks what serde cannot: ids 0..n each once, verbs addresses when
    /// the fabric is verbs, a well-formed `config_store`, and the engine's
    /// own limits.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&self.lease_ms) {
            return Err(format!(
                "lease_ms must be {LEASE_MS_MIN} to {LEASE_MS_MAX} milliseconds, got {}",
                self.lease_ms
            ));
        }
        // Parsed when read; checked again for a file built in code.
        let written = self.config_store.to_string();
        if StoreAddress::parse(&written).map_err(|why| format!("config_store: {why}"))?
            != self.config_store
        {
            return Err(format!(
                "config_store: {:?} is written {written:?}, which reads back as another store",
                self.config_store
            ));
        }
        for (index, node) in self.nodes.iter().enumerate() {
            if node.id != index {
                return Err(format!(
                    "nodes must be listed with ids 0, 1, 2, … in order; entry {index} has id {}",
                    node.id
                ));
            }
            if self.fabric == FabricKind::Verbs && node.verbs.is_none() {
                return Err(format!(
                    "node {} needs a `verbs` address for the verbs fabric",
                    node.id
                ));
            }
        }
        self.engine_config(Faults::default())
            .validate()
            .map_err(|error| error.to_string())
    }

    /// The verbs device the nodes use.
    pub fn verbs(&self) -> VerbsDevice {
        VerbsDevice {
            device: self.device.clone(),
            gid_index: self.gid_index,
        }
    }

    /// The engine's configuration of this cluster.
    pub fn engine_config(&self, faults: Faults) -> ClusterConfig {
        ClusterConfig {
            nodes: self.nodes.len(),
            copies: self.copies,
            regions_per_node: self.regions_per_node,
            region_bytes: self.region_bytes,
            data_dir: Some(self.data_dir.clone()),
            fabric: self.fabric,
            verbs: self.verbs(),
            faults,
            ..ClusterConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let file = ClusterFile::parse(text).unwrap();
        assert_eq!(
            (file.nodes.len(), file.copies, file.region_bytes),
            (3, 3, 16 << 20)
        );
        let again = ClusterFile::parse(&file.to_toml()).unwrap();
        assert_eq!(again, file);
        // The default store is left out, so older readers take the file.
        assert_eq!(file.config_store, StoreAddress::Embedded);
        assert!(!file.to_toml().contains("config_store"));
        let text = format!("config_store = \"zk://zk-1:2181,zk-2:2181/farm/a\"\n{text}");
        let file = ClusterFile::parse(&text).unwrap();
        assert_eq!(
            file.config_store,
            StoreAddress::ZooKeeper {
                servers: "zk-1:2181,zk-2:2181".into(),
                path: "/farm/a".into()
            }
        );
        assert_eq!(ClusterFile::parse(&file.to_toml()).unwrap(), file);
    }

    #[test]
    fn malformed_files_get_clear_errors() {
        let cases = [
            ("fabric = \"shm\"\ndata_dir = \"/x\"\nnode = []\ncolour = 1", "unknown field"),
            ("fabric = \"ib\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "unknown variant"),
            // Regression: a misspelt fabric used to mean shm, silently.
            ("fabric = \"shmm\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "expected `shm` or `verbs`"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\n[[node]]\nid = 1\nbootstrap = \"127.0.0.1:1\"", "in order"),
            ("fabric = \"verbs\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "needs a `verbs`"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\n[[node]]\nid = 0\nbootstrap = \"nowhere\"", "socket address"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\ncopies = 3\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "copies"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\nconfig_store = \"zk://127.0.0.1:2181\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "no znode path"),
            ("fabric = \"shm\"\ndata_dir = \"/x\"\nconfig_store = \"zookeeper\"\n[[node]]\nid = 0\nbootstrap = \"127.0.0.1:1\"", "\"embedded\" or \"zk://"),
        ];
        for (text, expected) in cases {
            let error = ClusterFile::parse(text).unwrap_err();
            assert!(
                error.contains(expected),
                "{text:?} gave {error:?}, expected it to mention {expected:?}"
            );
        }
    }
}
