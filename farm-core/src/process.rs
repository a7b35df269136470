//! One node as its own process (`farm node`): it opens its fabric and its
//! memory files, exchanges remote keys with the other nodes through the
//! [`crate::bootstrap`] rounds, and serves.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{Fabric, NodeId};
use serde_json::{json, Value};

use crate::bootstrap::Bootstrap;
use crate::cluster::{spawn_server, Node, NodeMemory};
use crate::cluster_file::ClusterFile;
use crate::config::{Faults, Placement};
use crate::error::{Error, Result};
use crate::node::{Directory, NodeShared};
use crate::{recovery, ring};
use std::collections::HashSet;

pub struct NodeProcess {
    pub node: Node,
    pub file: ClusterFile,
    bootstrap: Bootstrap,
    server: Option<JoinHandle<()>>,
}

impl NodeProcess {
    pub fn start(file: ClusterFile, id: usize, faults: Faults) -> Result<NodeProcess> {
        file.check()?;
        let config = file.engine_config(faults);
        let Some(entry) = file.nodes.get(id) else {
            return Err(Error::Config(format!("the cluster file has no node {id}")));
        };
        let placement = Placement {
            nodes: config.nodes,
            copies: config.copies,
            regions_per_node: config.regions_per_node,
        };
        let fabric: Arc<dyn Fabric> = match file.fabric.as_str() {
            "verbs" => open_verbs(&file, id)?,
            _ => Arc::new(ShmFabric::open(ShmConfig {
                dir: file.data_dir.join("shm"),
                node: NodeId(id as u16),
            })?),
        };
        // A node whose files exist restarts: it recovers before serving.
        let restarted = file
            .data_dir
            .join(format!("node-{id}"))
            .join("inbox")
            .exists();
        let memory = NodeMemory::open(id, fabric.as_ref(), &placement, &config, &file.data_dir)?;
        let addresses: Vec<_> = file.nodes.iter().map(|n| n.bootstrap).collect();
        let _ = entry;
        let mut bootstrap = Bootstrap::join(id, &addresses)?;
        let parts = bootstrap.exchange(
            "directory",
            json!({ "inbox": memory.inbox.rkey(), "regions": memory.region_keys() }),
        )?;
        let mut directory = Directory::default();
        for (node, part) in parts.iter().enumerate() {
            let bad = || {
                Error::Config(format!(
                    "bootstrap: node {node} sent a malformed directory part: {part:.80}"
                ))
            };
            directory
                .inbox_keys
                .push(part["inbox"].as_u64().ok_or_else(bad)? as u32);
            let regions = part["regions"].as_array().ok_or_else(bad)?;
            directory.region_keys.push(
                regions
                    .iter()
                    .map(|key| key.as_u64().map(|k| k as u32))
                    .collect(),
            );
        }
        // Recovery (see crate::recovery): replay, share evidence, decide,
        // agree where every ring resumes.
        let replayed = recovery::replay(config.nodes, &memory.inbox, &memory.replicas)?;
        let parts = bootstrap.exchange(
            "recovery",
            json!({ "restarted": restarted, "evidence": replayed.evidence(), "in_doubt": replayed.in_doubt() }),
        )?;
        let any_restarted = parts.iter().any(|part| part["restarted"] == true);
        let evidence: HashSet<u64> = parts
            .iter()
            .flat_map(|part| part["evidence"].as_array().cloned().unwrap_or_default())
            .filter_map(|txid| txid.as_u64())
            .collect();
        if restarted {
            eprintln!(
                "farm node {id}: restarted: replayed {} records, {} locks in doubt, {} committed transactions known to the cluster",
                replayed.records,
                replayed.in_doubt(),
                evidence.len()
            );
        }
        let resume = replayed.resolve(&evidence, &memory.replicas)?;
        let parts = bootstrap.exchange("ring-heads", json!(resume))?;
        for (receiver, part) in parts.iter().enumerate() {
            let position = part[id].as_u64().ok_or_else(|| {
                Error::Config(format!(
                    "bootstrap: node {receiver} sent malformed ring heads"
                ))
            })?;
            ring::set_published_head(&memory.inbox, receiver, position)?;
        }
        let shared = Arc::new(NodeShared::new(
            id,
            placement,
            faults,
            fabric,
            memory.inbox,
            memory.replicas,
        )?);
        shared.directory.set(directory).expect("directory set once");
        let server = spawn_server(&shared)?;
        if any_restarted {
            // Every primary decided before the ring-heads round; copy.
            recovery::copy_from_primaries(&shared)?;
        }
        // Nobody sends before every node serves (and has its copies).
        bootstrap.exchange("serving", Value::Null)?;
        Ok(NodeProcess {
            node: Node::from_shared(shared),
            file,
            bootstrap,
            server: Some(server),
        })
    }

    /// A start-up style round for callers (workload set-up, barriers).
    pub fn exchange(&mut self, round: &str, part: Value) -> Result<Vec<Value>> {
        self.bootstrap.exchange(round, part)
    }

    /// How long rounds wait for the other nodes (see
    /// [`Bootstrap::set_wait`]): `None` while serving a driver's commands.
    pub fn set_round_wait(&mut self, timeout: Option<std::time::Duration>) -> Result<()> {
        self.bootstrap.set_wait(timeout)
    }

    /// Tells node 0 why this node gives up (see [`Bootstrap::report_failure`]).
    pub fn report_failure(&mut self, error: &dyn std::fmt::Display) {
        self.bootstrap.report_failure(&error.to_string());
    }

    /// Node 0: why other nodes gave up (see [`Bootstrap::failures`]).
    pub fn failures(&mut self, wait: std::time::Duration) -> Vec<String> {
        self.bootstrap.failures(wait)
    }

    /// Node 0: the next driver connection (see [`Bootstrap::accept_driver`]).
    pub fn accept_driver(&mut self) -> Result<(std::net::TcpStream, std::net::SocketAddr)> {
        self.bootstrap.accept_driver()
    }

    /// Waits until every ring this node sends on is drained; then a final
    /// barrier, so that no node leaves while others still talk to it.
    pub fn finish(mut self) -> Result<()> {
        self.drain()?;
        self.bootstrap.exchange("finished", Value::Null)?;
        self.stop();
        Ok(())
    }

    /// Sends pending truncations and waits until every ring this node
    /// sends on has been retired by its receiver.
    pub fn drain(&self) -> Result<()> {
        self.node.flush_truncations()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.node.shared().rings_idle() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Config("rings did not drain in time".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.node.shared().stop.store(true, Ordering::Release);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(feature = "verbs")]
fn open_verbs(file: &ClusterFile, id: usize) -> Result<Arc<dyn Fabric>> {
    use rdma_transport::verbs::{VerbsConfig, VerbsFabric};
    let address =
        |n: &crate::cluster_file::NodeEntry| n.verbs.expect("checked by ClusterFile::check");
    let fabric = VerbsFabric::open(VerbsConfig {
        node: NodeId(id as u16),
        device: file.device.clone(),
        port: 1,
        gid_index: file.gid_index,
        listen: address(&file.nodes[id]),
        peers: file
            .nodes
            .iter()
            .map(|n| (NodeId(n.id as u16), address(n)))
            .collect(),
    })?;
    Ok(Arc::new(fabric))
}

#[cfg(not(feature = "verbs"))]
fn open_verbs(_: &ClusterFile, _: usize) -> Result<Arc<dyn Fabric>> {
    Err(Error::Config(
        "this build has no verbs fabric: build with `--features verbs`".into(),
    ))
}
