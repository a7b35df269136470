//! The embedded API: a [`Cluster`] of nodes in this process, each with its
//! server thread, and [`Node`] handles that begin transactions.
//!
//! ```no_run
//! use farm_core::{Cluster, ClusterConfig, Outcome};
//! let cluster = Cluster::start(ClusterConfig::default())?;
//! let node = cluster.node(0);
//! let addr = node.run(|txn| txn.alloc(&7u64.to_le_bytes()))?;
//! let value = node.run(|txn| {
//!     let value: u64 = txn.read_pod(addr)?;
//!     txn.write_pod(addr, &(value + 1))?;
//!     Ok(value + 1)
//! })?;
//! assert_eq!(value, 8);
//! # Ok::<(), farm_core::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{Access, Backing, Fabric, NodeId};

use crate::config::{ClusterConfig, FabricChoice, Placement};
use crate::error::{Error, Result};
use crate::node::{Directory, NodeShared, Server};
use crate::region;
use crate::ring;
use crate::txn::{flush_truncations, AbortReason, Outcome, Txn, TxnError};

/// A handle on a node of this process (of an in-process cluster, or a
/// `farm node` process's own); clones are the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<NodeShared>,
}

impl Node {
    pub(crate) fn from_shared(shared: Arc<NodeShared>) -> Node {
        Node { shared }
    }

    pub fn id(&self) -> usize {
        self.shared.id
    }

    pub fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    /// Begins a transaction coordinated by this node.
    pub fn begin(&self) -> Result<Txn> {
        Txn::begin(self.shared.clone())
    }

    /// Runs `body` in a transaction and commits it, retrying on conflict
    /// with bounded exponential backoff. Errors end the loop.
    pub fn run<T>(&self, mut body: impl FnMut(&mut Txn) -> Result<T, TxnError>) -> Result<T> {
        let mut backoff = Duration::from_micros(1);
        loop {
            let mut txn = self.begin()?;
            match body(&mut txn) {
                Ok(value) => match txn.commit()? {
                    Outcome::Committed => return Ok(value),
                    Outcome::Aborted(_) => {}
                },
                Err(TxnError::Conflict(_)) => txn.abort(),
                Err(TxnError::Failed(error)) => return Err(error),
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(2));
        }
    }

    /// Like [`Node::run`] but without retry: one attempt, its outcome.
    pub fn try_once<T>(
        &self,
        body: impl FnOnce(&mut Txn) -> Result<T, TxnError>,
    ) -> Result<(Outcome, Option<T>)> {
        let mut txn = self.begin()?;
        match body(&mut txn) {
            Ok(value) => {
                let outcome = txn.commit()?;
                Ok((outcome, (outcome == Outcome::Committed).then_some(value)))
            }
            Err(TxnError::Conflict(reason)) => {
                txn.abort();
                Ok((Outcome::Aborted(reason), None))
            }
            Err(TxnError::Failed(error)) => Err(error),
        }
    }

    /// Processes the records waiting in this node's rings, unless another
    /// thread is doing so. Threads that run transactions back to back call
    /// it between them, as FaRM's threads do (each polls rings and runs
    /// transactions); see [`Node::poller`].
    /// Cheap when nothing was sent here since the last poll.
    pub fn poll(&self) {
        self.shared.poll_if_notified();
    }

    /// Registers this thread as one that calls [`Node::poll`] between
    /// transactions, until the guard is dropped. While any is registered,
    /// the node's server thread stops sleeping on the fabric's doorbell, so
    /// records sent here need no wake-up: it naps and checks now and then.
    /// A thread that holds the guard and stops polling only makes records
    /// wait for those naps (100 µs), nothing worse.
    pub fn poller(&self) -> Poller<'_> {
        self.shared.pollers.fetch_add(1, Ordering::AcqRel);
        Poller { node: self }
    }

    /// Sends the TRUNCATE records every idle context of this node holds.
    pub fn flush_truncations(&self) -> Result<()> {
        let mut contexts = Vec::new();
        while let Some(context) = self.shared.take_idle_context() {
            contexts.push(context);
        }
        let mut result = Ok(());
        for mut context in contexts {
            if result.is_ok() {
                result = flush_truncations(&self.shared, &mut context);
            }
            self.shared.return_context(context);
        }
        result
    }
}

/// See [`Node::poller`].
pub struct Poller<'a> {
    node: &'a Node,
}

impl Drop for Poller<'_> {
    fn drop(&mut self) {
        self.node.shared.pollers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Nodes running in this process, with their data directory.
pub struct Cluster {
    nodes: Vec<Node>,
    servers: Vec<JoinHandle<()>>,
    data_dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl Cluster {
    pub fn start(config: ClusterConfig) -> Result<Cluster> {
        config.validate()?;
        let (temporary, data_dir) = match &config.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temporary =
                    tempfile::Builder::new()
                        .prefix("farm-")
                        .tempdir()
                        .map_err(|source| Error::File {
                            what: "create a temporary directory",
                            path: std::env::temp_dir(),
                            source,
                        })?;
                let path = temporary.path().to_path_buf();
                (Some(temporary), path)
            }
        };
        let placement = Placement {
            nodes: config.nodes,
            copies: config.copies,
            regions_per_node: config.regions_per_node,
        };
        let fabrics = open_fabrics(&config, &data_dir)?;
        let mut shared = Vec::new();
        let mut directory = Directory {
            inbox_keys: Vec::new(),
            region_keys: Vec::new(),
        };
        for (id, fabric) in fabrics.into_iter().enumerate() {
            let memory = NodeMemory::open(id, fabric.as_ref(), &placement, &config, &data_dir)?;
            directory.inbox_keys.push(memory.inbox.rkey());
            directory.region_keys.push(memory.region_keys());
            shared.push(Arc::new(NodeShared::new(
                id,
                placement.clone(),
                config.faults,
                fabric,
                memory.inbox,
                memory.replicas,
            )?));
        }
        let mut servers = Vec::new();
        for node in &shared {
            node.directory
                .set(directory.clone())
                .expect("directory set once");
        }
        for node in &shared {
            servers.push(spawn_server(node)?);
        }
        Ok(Cluster {
            nodes: shared.into_iter().map(|shared| Node { shared }).collect(),
            servers,
            data_dir,
            _temporary: temporary,
        })
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Flushes every node's pending truncations and waits until every ring
    /// is drained: then every backup's replica equals its primary's.
    pub fn quiesce(&self, timeout: Duration) -> Result<()> {
        for node in &self.nodes {
            node.flush_truncations()?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let before: u64 = self.processed();
            std::thread::sleep(Duration::from_millis(20));
            if self.processed() == before && self.rings_idle() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Config("cluster did not quiesce in time".into()));
            }
        }
    }

    fn processed(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.shared.stats.records_processed.load(Ordering::Relaxed))
            .sum()
    }

    fn rings_idle(&self) -> bool {
        self.nodes.iter().all(|n| n.shared.rings_idle())
    }

    /// Stops the server threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for node in &self.nodes {
            node.shared.stop.store(true, Ordering::Release);
        }
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
    }

    /// Switches injected protocol faults on every node (tests only).
    pub fn set_faults(&self, faults: crate::config::Faults) {
        for node in &self.nodes {
            node.shared.set_faults(faults);
        }
    }

    /// Aborts counted by reason are the callers' business; this is for
    /// tests that want to know a node saw corrupt records.
    pub fn corrupt_records(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.shared.stats.corrupt_records.load(Ordering::Relaxed))
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node's registered memory: its inbox and its replicas of the regions
/// it holds, mapped from the files of `data_dir/node-<id>`.
pub struct NodeMemory {
    pub inbox: Arc<rdma_transport::MemoryRegion>,
    pub replicas: Vec<Option<Arc<rdma_transport::MemoryRegion>>>,
}

impl NodeMemory {
    pub fn open(
        id: usize,
        fabric: &dyn Fabric,
        placement: &Placement,
        config: &ClusterConfig,
        data_dir: &Path,
    ) -> Result<NodeMemory> {
        let dir = data_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).map_err(|source| Error::File {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let inbox = fabric.register(
            Backing::File {
                path: dir.join("inbox"),
                len: ring::inbox_bytes(config.nodes),
            },
            Access::ALL,
        )?;
        let mut replicas = Vec::new();
        for region in 0..placement.regions() as u16 {
            if placement.holds(id, region) {
                let mr = fabric.register(
                    Backing::File {
                        path: dir.join(format!("region-{region}")),
                        len: config.region_bytes,
                    },
                    Access::ALL,
                )?;
                region::format(&mr, region)?;
                replicas.push(Some(mr));
            } else {
                replicas.push(None);
            }
        }
        Ok(NodeMemory { inbox, replicas })
    }

    pub fn region_keys(&self) -> Vec<Option<u32>> {
        self.replicas
            .iter()
            .map(|mr| mr.as_ref().map(|mr| mr.rkey()))
            .collect()
    }
}

/// Starts a node's server thread.
pub fn spawn_server(node: &Arc<NodeShared>) -> Result<JoinHandle<()>> {
    let server = Arc::new(std::sync::Mutex::new(Server::new(node.clone())?));
    node.server
        .set(Arc::downgrade(&server))
        .map_err(|_| Error::Config(format!("node {} already has a server", node.id)))?;
    let id = node.id;
    std::thread::Builder::new()
        .name(format!("farm-node-{id}"))
        .spawn(move || Server::run(server))
        .map_err(|source| Error::File {
            what: "spawn the server thread of",
            path: PathBuf::from(format!("node-{id}")),
            source,
        })
}

fn open_fabrics(config: &ClusterConfig, data_dir: &Path) -> Result<Vec<Arc<dyn Fabric>>> {
    match &config.fabric {
        FabricChoice::Shm => (0..config.nodes)
            .map(|id| {
                Ok(Arc::new(ShmFabric::open(ShmConfig {
                    dir: data_dir.join("shm"),
                    node: NodeId(id as u16),
                })?) as Arc<dyn Fabric>)
            })
            .collect(),
        FabricChoice::Verbs { device, gid_index } => {
            open_verbs(config.nodes, device.clone(), *gid_index)
        }
    }
}

#[cfg(feature = "verbs")]
fn open_verbs(
    nodes: usize,
    device: Option<String>,
    gid_index: Option<u8>,
) -> Result<Vec<Arc<dyn Fabric>>> {
    use rdma_transport::verbs::{VerbsConfig, VerbsFabric};
    let mut fabrics = Vec::new();
    for id in 0..nodes {
        fabrics.push(VerbsFabric::open(VerbsConfig {
            node: NodeId(id as u16),
            device: device.clone(),
            port: 1,
            gid_index,
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            peers: Vec::new(),
        })?);
    }
    let addresses: Vec<_> = fabrics.iter().map(|f| f.listen_address()).collect();
    for fabric in &fabrics {
        for (id, address) in addresses.iter().enumerate() {
            fabric.set_peer(NodeId(id as u16), *address);
        }
    }
    Ok(fabrics
        .into_iter()
        .map(|f| Arc::new(f) as Arc<dyn Fabric>)
        .collect())
}

#[cfg(not(feature = "verbs"))]
fn open_verbs(_: usize, _: Option<String>, _: Option<u8>) -> Result<Vec<Arc<dyn Fabric>>> {
    Err(Error::Config(
        "this build has no verbs fabric: build with `--features verbs`".into(),
    ))
}

/// Re-exported for callers that count aborts by reason.
pub type Reason = AbortReason;
