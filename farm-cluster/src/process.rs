//! One node as its own process (`farm node`): it opens its fabric and its
//! memory files, meets the other nodes in start-up rounds through node 0
//! (remote keys, restart evidence, ring heads), and serves.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_core::startup::copy_from_primaries;
use farm_core::{Directory, Faults, Node, NodeStartup, ServingNode, TxnId};
use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{Fabric, FabricKind, NodeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::Bootstrap;
use crate::cluster_file::ClusterFile;
use crate::error::{Error, Result};
use crate::launcher::inherited_listener;
use crate::membership::{confirm_admission, request_admission, Admission, Agent, Contact, Sockets};
use crate::protocol::ClusterShape;
use crate::zookeeper::open_store;

/// A node's part of the directory round.
#[derive(Serialize, Deserialize)]
struct KeysPart {
    inbox: u32,
    regions: Vec<Option<u32>>,
    /// Where its membership agent listens.
    contact: Contact,
}

/// A node's part of the recovery round.
#[derive(Serialize, Deserialize)]
struct RecoveryPart {
    restarted: bool,
    /// Transactions it knows committed (their ids' words).
    evidence: Vec<u64>,
    in_doubt: usize,
}

/// A node that rejoined a running cluster after its process died (see
/// [`rejoin`]): it serves as a member, holds replicas again, and takes no
/// part in drivers' requests (those run through the start-up session it
/// missed).
pub struct JoinedNode {
    /// Dropped first: its threads stop before the node does.
    agent: Option<Agent>,
    serving: ServingNode,
}

impl JoinedNode {
    pub fn node(&self) -> &Node {
        self.serving.node()
    }

    /// The configuration this node is in now.
    pub fn configuration(&self) -> Option<farm_core::config::Configuration> {
        self.agent.as_ref().map(Agent::configuration)
    }
}

impl Drop for JoinedNode {
    fn drop(&mut self) {
        self.agent = None;
        self.serving.stop();
    }
}

/// What the store says about a node (re)starting.
pub enum Start {
    /// The cluster starts (configuration 1, or none stored): the start-up
    /// rounds through node 0.
    Rounds,
    /// The cluster runs in a later configuration without this node: rejoin.
    Rejoin,
}

/// How node `id` starts: by the rounds with every other node, or, when the
/// store's configuration is a later one, by rejoining the running cluster.
/// A node the store still names waits (up to `wait`) until the
/// configuration manager removed it.
///
/// # Errors
/// The store's; [`Error::Peer`] when the node is still a member after
/// `wait`.
pub fn how_to_start(file: &ClusterFile, id: usize, wait: Duration) -> Result<Start> {
    if id == 0 {
        return Ok(Start::Rounds);
    }
    let store = open_store(&file.config_store, &file.data_dir)?;
    let deadline = Instant::now() + wait;
    loop {
        match store.load()? {
            // A later configuration whose manager answers: the cluster runs.
            // (After a whole-cluster restart nobody answers at the stored
            // contact, and node 0 starts the store afresh.)
            Some(stored) if stored.id > 1 && !manager_answers(store.as_ref(), &stored) => {
                return Ok(Start::Rounds)
            }
            Some(stored) if stored.id > 1 && !stored.is_member(id) => return Ok(Start::Rejoin),
            Some(stored) if stored.id > 1 && Instant::now() < deadline => {
                // Restarted before the others noticed it died.
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(stored) if stored.id > 1 => {
                return Err(Error::peer(
                    format!("node {id}"),
                    format!(
                        "configuration {} still has this node after {wait:?}: is another process of it running?",
                        stored.id
                    ),
                ))
            }
            _ => return Ok(Start::Rounds),
        }
    }
}

/// Whether the manager of `stored` listens at the contact it published.
fn manager_answers(
    store: &dyn crate::membership::ConfigStore,
    stored: &farm_core::config::Configuration,
) -> bool {
    match store.contact(stored.manager) {
        Ok(Some(contact)) => {
            std::net::TcpStream::connect_timeout(&contact.control, Duration::from_secs(1)).is_ok()
        }
        _ => false,
    }
}

/// Starts node `id` afresh and has the configuration manager admit it to
/// the running cluster (FaRM SOSP'15 §5; see
/// [`crate::membership::request_admission`]): its old files go (what it
/// held was decided and re-replicated when it was removed), it opens new
/// memory, asks to be admitted, serves in the configuration that has it,
/// copies the regions it backs from their primaries (every member is
/// fenced meanwhile), and starts its membership agent.
///
/// # Errors
/// File, fabric and engine errors; [`Error::Peer`] when no configuration
/// manager admits it within a minute.
pub fn rejoin(file: ClusterFile, id: usize, faults: Faults) -> Result<JoinedNode> {
    let Some(entry) = file.nodes.get(id) else {
        return Err(Error::ClusterFile {
            path: "the cluster file".into(),
            why: format!("it has no node {id}"),
        });
    };
    let old = file.data_dir.join(format!("node-{id}"));
    match std::fs::remove_dir_all(&old) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::File {
                what: "remove the old files of",
                path: old,
                source,
            })
        }
    }
    let config = file.engine_config(faults);
    let fabric = open_fabric(&file, id)?;
    let startup = NodeStartup::open(id, &config, fabric)?;
    let sockets = Sockets::bind(entry.bootstrap.ip())?;
    let store = open_store(&file.config_store, &file.data_dir)?;
    let keys = startup.keys();
    let admission = Admission {
        node: id,
        inbox: keys.inbox,
        regions: keys.regions,
        contact: sockets.contact()?,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (admitted, stream) = loop {
        match request_admission(store.as_ref(), &admission) {
            Ok(answer) => break answer,
            Err(error) if Instant::now() < deadline => {
                eprintln!("farm node {id}: not admitted yet ({error}); asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(error),
        }
    };
    let directory = Directory {
        inbox_keys: admitted.inbox_keys,
        region_keys: admitted.region_keys,
    };
    let serving = startup.serve(directory, faults)?;
    let control = serving.control();
    control.apply(&admitted.configuration, &Default::default())?;
    control.set_managed(true);
    let started = Instant::now();
    copy_from_primaries(serving.node())?;
    let agent = Agent::start(
        id,
        control,
        store,
        (admitted.configuration.clone(), admitted.contacts),
        sockets,
        Duration::from_millis(file.lease_ms),
        config.placement(),
    )?;
    if let Err(error) = confirm_admission(stream) {
        // The CM died after it stored the configuration that has this
        // node: this node is a member with its copies, and its agent
        // answers the next manager, which finishes the change.
        eprintln!(
            "farm node {id}: the configuration manager did not acknowledge ({error}); serving on as a member"
        );
    }
    eprintln!(
        "farm node {id}: rejoined in configuration {} (copies made in {} ms)",
        admitted.configuration.id,
        started.elapsed().as_millis()
    );
    Ok(JoinedNode {
        agent: Some(agent),
        serving,
    })
}

pub struct NodeProcess {
    /// Dropped first: its threads stop before the node does.
    agent: Option<Agent>,
    serving: ServingNode,
    pub file: ClusterFile,
    bootstrap: Bootstrap,
}

impl NodeProcess {
    /// Starts node `id` of the cluster `file` describes: memory, rounds,
    /// restart recovery when its files exist, then serving.
    ///
    /// # Errors
    /// [`Error::ClusterFile`] when the file has no node `id`; the engine's
    /// and the rounds' errors.
    pub fn start(file: ClusterFile, id: usize, faults: Faults) -> Result<NodeProcess> {
        file.check().map_err(|why| Error::ClusterFile {
            path: "the cluster file".into(),
            why,
        })?;
        let Some(entry) = file.nodes.get(id) else {
            return Err(Error::ClusterFile {
                path: "the cluster file".into(),
                why: format!("it has no node {id} (nodes 0 to {})", file.nodes.len() - 1),
            });
        };
        let config = file.engine_config(faults);
        let fabric = open_fabric(&file, id)?;
        let mut startup = NodeStartup::open(id, &config, fabric)?;
        let restarted = startup.restarted();
        let listener = if id == 0 {
            inherited_listener(crate::launcher::BOOTSTRAP_FD_VARIABLE, entry.bootstrap)?
        } else {
            None
        };
        let mut bootstrap = Bootstrap::join(id, &ClusterShape::of(&file), listener)?;
        let sockets = Sockets::bind(entry.bootstrap.ip())?;

        let keys = startup.keys();
        let parts = bootstrap.exchange(
            "directory",
            &KeysPart {
                inbox: keys.inbox,
                regions: keys.regions,
                contact: sockets.contact()?,
            },
        )?;
        let mut directory = Directory::default();
        let mut contacts = Vec::new();
        for part in parts {
            directory.inbox_keys.push(part.inbox);
            directory.region_keys.push(part.regions);
            contacts.push(part.contact);
        }
        // The store (the cluster file's `config_store`) starts at
        // configuration 1 (restart recovery, below, assumes it; see the
        // README).
        let store = open_store(&file.config_store, &file.data_dir)?;
        if id == 0 {
            store.reset(&config.placement())?;
        }

        // Restart recovery (see farm_core::recovery): replay, share
        // evidence, decide, agree where every ring resumes.
        let summary = startup.replay()?;
        let parts = bootstrap.exchange(
            "recovery",
            &RecoveryPart {
                restarted,
                evidence: summary.evidence.iter().map(|t| t.encode()).collect(),
                in_doubt: summary.in_doubt,
            },
        )?;
        let any_restarted = parts.iter().any(|part| part.restarted);
        let evidence: HashSet<TxnId> = parts
            .iter()
            .flat_map(|part| part.evidence.iter().map(|word| TxnId::decode(*word)))
            .collect();
        if restarted {
            eprintln!(
                "farm node {id}: restarted: replayed {} records, {} locks in doubt, {} committed transactions known to the cluster",
                summary.records,
                summary.in_doubt,
                evidence.len()
            );
        }
        let resume = startup.resolve(&evidence)?;
        let parts: Vec<Vec<u64>> = bootstrap.exchange("ring-heads", &resume)?;
        let mut heads = Vec::with_capacity(parts.len());
        for (receiver, part) in parts.iter().enumerate() {
            heads.push(*part.get(id).ok_or_else(|| {
                Error::peer(
                    format!("node {receiver}"),
                    format!("sent {} ring heads for {} nodes", part.len(), parts.len()),
                )
            })?);
        }
        startup.set_ring_heads(&heads);
        let serving = startup.serve(directory, faults)?;
        if any_restarted {
            // Every primary decided before the ring-heads round; copy.
            copy_from_primaries(serving.node())?;
        }
        // Nobody sends before every node serves (and has its copies).
        bootstrap.exchange("serving", &())?;
        let agent = Agent::start(
            id,
            serving.control(),
            store,
            (config.placement(), contacts),
            sockets,
            Duration::from_millis(file.lease_ms),
            config.placement(),
        )?;
        // From now on a node that dies leaves the rounds; the others go on.
        bootstrap.tolerate_departures();
        Ok(NodeProcess {
            agent: Some(agent),
            serving,
            file,
            bootstrap,
        })
    }

    pub fn node(&self) -> &Node {
        self.serving.node()
    }

    pub fn id(&self) -> usize {
        self.bootstrap.id()
    }

    /// A round with the other node processes (workload set-up, barriers).
    ///
    /// # Errors
    /// See [`Bootstrap::exchange`].
    pub fn exchange<T: Serialize + DeserializeOwned>(
        &mut self,
        round: &str,
        part: &T,
    ) -> Result<Vec<T>> {
        self.bootstrap.exchange(round, part)
    }

    /// A round whose parts only node 0 learns (see [`Bootstrap::gather`]).
    ///
    /// # Errors
    /// See [`Bootstrap::exchange`].
    pub fn gather<T: Serialize + DeserializeOwned>(
        &mut self,
        round: &str,
        part: &T,
    ) -> Result<Option<Vec<T>>> {
        self.bootstrap.gather(round, part)
    }

    /// [`NodeProcess::gather`] of parts kept as JSON text (see
    /// [`Bootstrap::gather_payloads`]).
    ///
    /// # Errors
    /// See [`Bootstrap::exchange`].
    pub fn gather_payloads(
        &mut self,
        round: &str,
        part: crate::protocol::Payload,
    ) -> Result<Option<Vec<crate::protocol::Payload>>> {
        self.bootstrap.gather_payloads(round, part)
    }

    /// How long rounds wait for the other nodes (see
    /// [`Bootstrap::set_wait`]): `None` while serving a driver's commands.
    ///
    /// # Errors
    /// See [`Bootstrap::set_wait`].
    pub fn set_round_wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.bootstrap.set_wait(timeout)
    }

    /// Tells node 0 why this node gives up (see [`Bootstrap::report_failure`]).
    pub fn report_failure(&mut self, error: &dyn std::fmt::Display) {
        self.bootstrap.report_failure(&error.to_string());
    }

    /// Node 0: why other nodes gave up (see [`Bootstrap::failures`]).
    pub fn failures(&mut self, wait: Duration) -> Vec<String> {
        self.bootstrap.failures(wait)
    }

    /// Node 0: the next driver connection (see [`Bootstrap::accept_driver`]).
    ///
    /// # Errors
    /// See [`Bootstrap::accept_driver`].
    pub fn accept_driver(&mut self) -> Result<(std::net::TcpStream, SocketAddr)> {
        self.bootstrap.accept_driver()
    }

    /// Waits until every ring this node sends on is drained; then a final
    /// barrier, so that no node leaves while others still talk to it.
    ///
    /// # Errors
    /// See [`NodeProcess::drain`]; the barrier's.
    pub fn finish(mut self) -> Result<()> {
        self.drain()?;
        self.bootstrap.exchange("finished", &())?;
        self.agent = None;
        self.serving.stop();
        Ok(())
    }

    /// The reconfigurations this node managed (see
    /// [`crate::membership::Event`]).
    pub fn membership_events(&self) -> Vec<crate::membership::Event> {
        self.agent.as_ref().map(Agent::events).unwrap_or_default()
    }

    /// Sends pending truncations and waits until every ring this node
    /// sends on has been retired by its receiver.
    ///
    /// # Errors
    /// [`farm_core::Error::Timeout`] after a minute.
    pub fn drain(&self) -> Result<()> {
        self.node().flush_truncations()?;
        let waited = Duration::from_secs(60);
        let deadline = Instant::now() + waited;
        while !self.node().rings_idle() {
            if Instant::now() > deadline {
                for (receiver, bytes) in self.node().busy_rings() {
                    eprintln!(
                        "farm node {}: the ring to node {receiver} still holds {bytes} bytes",
                        self.id()
                    );
                }
                for line in self.serving.describe_rings() {
                    eprintln!("farm node {}: {line}", self.id());
                }
                return Err(farm_core::Error::Timeout {
                    what: "draining this node's rings",
                    waited,
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// Node `id`'s fabric: shm under the data directory, or verbs on the
/// file's device, listening at its `verbs` address (on the socket a
/// launcher handed down, when there is one).
fn open_fabric(file: &ClusterFile, id: usize) -> Result<Arc<dyn Fabric>> {
    match file.fabric {
        FabricKind::Shm => Ok(Arc::new(ShmFabric::open(ShmConfig {
            dir: file.data_dir.join("shm"),
            node: NodeId(id as u16),
        })?)),
        FabricKind::Verbs => open_verbs(file, id),
    }
}

#[cfg(feature = "verbs")]
fn open_verbs(file: &ClusterFile, id: usize) -> Result<Arc<dyn Fabric>> {
    use rdma_transport::verbs::{VerbsConfig, VerbsFabric};
    let address = |n: &crate::cluster_file::NodeEntry| {
        n.verbs.ok_or_else(|| Error::ClusterFile {
            path: "the cluster file".into(),
            why: format!("node {} needs a `verbs` address", n.id),
        })
    };
    let config = VerbsConfig {
        node: NodeId(id as u16),
        device: file.device.clone(),
        port: 1,
        gid_index: file.gid_index,
        listen: address(&file.nodes[id])?,
        peers: file
            .nodes
            .iter()
            .map(|n| Ok((NodeId(n.id as u16), address(n)?)))
            .collect::<Result<_>>()?,
    };
    let fabric = match inherited_listener(crate::launcher::VERBS_FD_VARIABLE, config.listen)? {
        Some(listener) => VerbsFabric::open_with_listener(config, listener)?,
        None => VerbsFabric::open(config)?,
    };
    Ok(Arc::new(fabric))
}

#[cfg(not(feature = "verbs"))]
fn open_verbs(_: &ClusterFile, _: usize) -> Result<Arc<dyn Fabric>> {
    Err(farm_core::Error::FabricNotBuilt { fabric: "verbs" }.into())
}
