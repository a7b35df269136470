//! Starting one node of a multi-process cluster, step by step; the cluster
//! crate runs the rounds between the steps (every node's keys, the
//! cluster's evidence of commit, where every ring resumes).
//!
//! 1. [`NodeStartup::open`]: map the memory files (a node whose files
//!    exist is restarting);
//! 2. [`NodeStartup::keys`]: what the others need to address this node's
//!    memory;
//! 3. [`NodeStartup::replay`] and [`NodeStartup::resolve`]: restart
//!    recovery ([`crate::recovery`]) with the cluster's evidence;
//! 4. [`NodeStartup::set_ring_heads`]: where each receiver resumes this
//!    node's rings;
//! 5. [`NodeStartup::serve`]: start the server thread; then, after a
//!    restart, [`copy_from_primaries`] once every primary has decided.

use std::collections::HashSet;
use std::sync::Arc;

use rdma_transport::Fabric;

use crate::cluster::{node_dir, Node, NodeMemory, ServingNode};
use crate::config::{ClusterConfig, Faults, Placement, RetryBudget};
use crate::error::Result;
use crate::node::{Directory, NodeShared, View};
use crate::recovery::{self, Replayed};
use crate::ring;
use crate::txn_id::TxnId;

/// A node's memory, opened and not serving yet.
pub struct NodeStartup {
    id: usize,
    placement: Placement,
    retry: RetryBudget,
    lock_wait: crate::LockWait,
    fabric: Arc<dyn Fabric>,
    memory: NodeMemory,
    restarted: bool,
    replayed: Option<Replayed>,
}

/// What a node's peers need to address its memory: the remote keys of its
/// inbox and of its replica of each region (`None` where it holds none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeKeys {
    pub inbox: u32,
    pub regions: Vec<Option<u32>>,
}

/// What replaying a restarted node's rings found.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    pub records: u64,
    /// LOCKs whose transaction the cluster's evidence must decide.
    pub in_doubt: usize,
    /// Transactions this node knows committed.
    pub evidence: Vec<TxnId>,
}

impl NodeStartup {
    /// Opens node `id`'s memory files under the configuration's data
    /// directory, on `fabric`.
    ///
    /// # Errors
    /// An invalid configuration (see [`ClusterConfig::validate`]), or one
    /// with no data directory; file and fabric errors.
    pub fn open(id: usize, config: &ClusterConfig, fabric: Arc<dyn Fabric>) -> Result<NodeStartup> {
        config.validate()?;
        let data_dir = config.required_data_dir()?;
        let placement = config.placement();
        // A node whose files exist restarts: it recovers before serving.
        let restarted = node_dir(data_dir, id).join("inbox").exists();
        let memory = NodeMemory::open(
            id,
            fabric.as_ref(),
            &placement,
            config.region_bytes,
            data_dir,
            config.resident_regions,
        )?;
        Ok(NodeStartup {
            id,
            placement,
            retry: config.retry,
            lock_wait: config.lock_wait,
            fabric,
            memory,
            restarted,
            replayed: None,
        })
    }

    /// True when the node's files were there before: it is restarting.
    pub fn restarted(&self) -> bool {
        self.restarted
    }

    pub fn keys(&self) -> NodeKeys {
        NodeKeys {
            inbox: self.memory.inbox.rkey(),
            regions: self.memory.replicas.keys(),
        }
    }

    /// Replays the node's incoming rings (see [`crate::recovery`]).
    ///
    /// # Errors
    /// A corrupt record that cannot be applied.
    pub fn replay(&mut self) -> Result<ReplaySummary> {
        let replayed = recovery::replay(
            self.placement.nodes,
            1,
            &self.memory.inbox,
            &self.memory.replicas,
        )?;
        let summary = ReplaySummary {
            records: replayed.records,
            in_doubt: replayed.in_doubt(),
            evidence: replayed.evidence(),
        };
        self.replayed = Some(replayed);
        Ok(summary)
    }

    /// Decides the locks in doubt by the cluster's `evidence`; returns,
    /// per sender, the ring position it resumes at.
    ///
    /// # Panics
    /// Before [`NodeStartup::replay`].
    pub fn resolve(&mut self, evidence: &HashSet<TxnId>) -> Result<Vec<u64>> {
        let replayed = self.replayed.take().expect("replay comes before resolve");
        replayed.resolve(evidence, &self.memory.replicas)
    }

    /// Records where each receiver resumes the ring this node sends it:
    /// `heads[receiver]`.
    pub fn set_ring_heads(&self, heads: &[u64]) {
        for (receiver, position) in heads.iter().enumerate() {
            ring::set_published_head(&self.memory.inbox, receiver, *position);
        }
    }

    /// Starts serving with every node's keys in `directory`.
    ///
    /// # Errors
    /// Errors of opening the allocators or connecting the server.
    pub fn serve(self, directory: Directory, faults: Faults) -> Result<ServingNode> {
        let view = View {
            config: self.placement,
            directory,
        };
        let shared = Arc::new(NodeShared::new(
            self.id,
            view,
            (faults, self.retry),
            self.fabric,
            self.memory.inbox,
            self.memory.replicas,
        )?);
        let serving = ServingNode::start(shared)?;
        serving.node().set_lock_wait(self.lock_wait);
        Ok(serving)
    }
}

/// After a restart, once every primary has decided: copies every region
/// `node` backs from its primary.
///
/// # Errors
/// The fabric's.
pub fn copy_from_primaries(node: &Node) -> Result<()> {
    recovery::copy_from_primaries(node.shared())
}
