//! Cluster configuration and region placement.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::limits::{COPIES_MAX, NODES_MAX, REGION_HEADER_BYTES, SLAB_BYTES};

/// Which fabric the nodes talk over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FabricChoice {
    /// Shared memory between the nodes of this host (the default).
    Shm,
    /// RDMA verbs; nodes of one process each listen on 127.0.0.1:0.
    Verbs {
        device: Option<String>,
        gid_index: Option<u8>,
    },
}

/// Protocol faults a test can switch on to show that the checker catches
/// them. Off in every real configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The coordinator skips VALIDATE: read-only objects are not re-checked.
    pub skip_validation: bool,
    /// Primaries answer LOCK with success without taking the lock.
    pub skip_lock: bool,
}

impl Faults {
    pub fn bits(self) -> u8 {
        u8::from(self.skip_validation) | (u8::from(self.skip_lock) << 1)
    }

    pub fn from_bits(bits: u8) -> Faults {
        Faults {
            skip_validation: bits & 1 != 0,
            skip_lock: bits & 2 != 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    /// Replicas of every region: one primary and `copies - 1` backups.
    pub copies: usize,
    pub regions_per_node: usize,
    pub region_bytes: u64,
    /// Where region files and logs live; a fresh temporary directory when
    /// `None`.
    pub data_dir: Option<PathBuf>,
    pub fabric: FabricChoice,
    pub faults: Faults,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            copies: 3,
            regions_per_node: 1,
            region_bytes: 16 << 20,
            data_dir: None,
            fabric: FabricChoice::Shm,
            faults: Faults::default(),
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(Error::Config(format!(
                "nodes must be 1 to {NODES_MAX}, got {}",
                self.nodes
            )));
        }
        if self.copies == 0 || self.copies > COPIES_MAX || self.copies > self.nodes {
            return Err(Error::Config(format!(
                "copies must be 1 to min({COPIES_MAX}, nodes = {}), got {}",
                self.nodes, self.copies
            )));
        }
        if self.regions_per_node == 0 || self.nodes * self.regions_per_node > usize::from(u16::MAX)
        {
            return Err(Error::Config("regions_per_node must be at least 1".into()));
        }
        let minimum = u64::from(REGION_HEADER_BYTES + SLAB_BYTES);
        if self.region_bytes < minimum || self.region_bytes > u64::from(u32::MAX) {
            return Err(Error::Config(format!(
                "region_bytes must be {minimum} to {} bytes, got {}",
                u32::MAX,
                self.region_bytes
            )));
        }
        Ok(())
    }
}

/// Which nodes hold each region: `replicas(r)[0]` is the primary, the rest
/// are backups, all distinct. Region r is primaried on node r / regions
/// per node, its backups on the following nodes (FaRM spreads them with
/// consistent hashing; a fixed rotation is enough until reconfiguration).
#[derive(Clone, Debug)]
pub struct Placement {
    pub nodes: usize,
    pub copies: usize,
    pub regions_per_node: usize,
}

impl Placement {
    pub fn regions(&self) -> usize {
        self.nodes * self.regions_per_node
    }

    pub fn replicas(&self, region: u16) -> impl Iterator<Item = usize> + '_ {
        let primary = usize::from(region) / self.regions_per_node;
        (0..self.copies).map(move |k| (primary + k) % self.nodes)
    }

    pub fn primary(&self, region: u16) -> usize {
        usize::from(region) / self.regions_per_node
    }

    pub fn backups(&self, region: u16) -> impl Iterator<Item = usize> + '_ {
        self.replicas(region).skip(1)
    }

    pub fn holds(&self, node: usize, region: u16) -> bool {
        self.replicas(region).any(|n| n == node)
    }

    /// Regions whose primary is `node`.
    pub fn primaried_by(&self, node: usize) -> impl Iterator<Item = u16> {
        let per = self.regions_per_node;
        (node * per..(node + 1) * per).map(|r| r as u16)
    }
}
