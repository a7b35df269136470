//! What a reconfiguration changes under a node: its configuration and
//! the directory of every node's memory.

use crate::config::Configuration;
use crate::error::{Error, Result};

/// Remote keys of every node's inbox and region replicas, the same on
/// every node (exchanged at start-up).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// `inbox_keys[node]`: the key of `node`'s inbox.
    pub inbox_keys: Vec<u32>,
    /// `region_keys[node][region]`: the key of `node`'s replica of
    /// `region`, `None` where it holds none.
    pub region_keys: Vec<Vec<Option<u32>>>,
}

impl Directory {
    /// The key of `node`'s replica of `region`.
    ///
    /// # Errors
    /// [`Error::Peer`] when the directory has none: the placement says the
    /// node holds the region, so its start-up part was wrong.
    pub fn region_key(&self, node: usize, region: u16) -> Result<u32> {
        self.region_keys
            .get(node)
            .and_then(|keys| keys.get(usize::from(region)))
            .copied()
            .flatten()
            .ok_or_else(|| {
                Error::Peer(format!(
                    "node {node} advertised no memory for region {region}"
                ))
            })
    }
}

/// What a node acts on that a reconfiguration changes: the configuration
/// and where every node's memory is. Transactions take a snapshot when
/// they begin; reconfiguration swaps it while no commit runs.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) config: Configuration,
    pub(crate) directory: Directory,
}

impl View {
    /// The inbox key of `node`.
    pub(crate) fn inbox_key(&self, node: usize) -> u32 {
        self.directory.inbox_keys[node]
    }
}
