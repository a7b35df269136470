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
//!
//! A node of a multi-process cluster (one `farm node` process per node)
//! starts through [`crate::startup::NodeStartup`] instead, which the
//! cluster crate drives.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdma_transport::faulty::FaultyFabric;
use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{Access, Backing, Fabric, FabricKind, MemoryRegion, NodeId};

use crate::codec::inbox::inbox_bytes;
use crate::config::{ClusterConfig, Configuration, Faults, Placement, RetryBudget, VerbsDevice};
use crate::coordinator::send_truncations;
use crate::error::TxnError;
use crate::error::{Error, Result};
use crate::node::inbox::InboxPoller;
use crate::node::{Directory, NodeShared, NodeStats, View};
use crate::outcome::Outcome;
use crate::reconfiguration::{decide, Decisions, RecoveryReport};
use crate::region::{self, Replicas};
use crate::server::Server;
use crate::txn::Txn;
use crate::txn_id::TxnId;

/// The future of [`Node::run_async`]: the transaction's result.
pub struct RunAsync<T> {
    state: RunState<T>,
}

enum RunState<T> {
    Running(crate::task::Task<Result<T>>),
    /// The task's stack could not be mapped: the first poll says so.
    Failed(Error),
    Done,
}

impl<T: 'static> std::future::Future for RunAsync<T> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        use std::task::Poll;
        let step = match &mut self.state {
            RunState::Running(task) => task.step(),
            RunState::Failed(_) => {
                let RunState::Failed(error) = std::mem::replace(&mut self.state, RunState::Done)
                else {
                    unreachable!("matched above")
                };
                return Poll::Ready(Err(error));
            }
            RunState::Done => panic!("RunAsync polled after it completed"),
        };
        match step {
            Some(result) => {
                self.state = RunState::Done;
                Poll::Ready(result)
            }
            None => {
                // Paused at a wait: look again on the executor's next round.
                context.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

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

    pub(crate) fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    pub fn id(&self) -> usize {
        self.shared.id
    }

    /// The configuration this node is in now: where every region's
    /// replicas are.
    pub fn placement(&self) -> Arc<Configuration> {
        Arc::new(self.shared.view().config.clone())
    }

    /// The node's counters.
    pub fn stats(&self) -> &NodeStats {
        &self.shared.stats
    }

    /// Free slots of size class `class` in `region`, if this node is its
    /// primary (0 otherwise, and for a class that does not exist).
    pub fn free_slots(&self, region: u16, class: u8) -> usize {
        self.shared.allocators.free_slots(region, class)
    }

    /// Begins a transaction coordinated by this node.
    ///
    /// # Errors
    /// [`Error::ShutDown`] once the node stops; [`Error::TooManyContexts`]
    /// when [`crate::limits::CONTEXTS_MAX`] transactions run on it already.
    pub fn begin(&self) -> Result<Txn> {
        Txn::begin(self.shared.clone())
    }

    /// Runs `body` in a transaction and commits it, retrying on conflict
    /// with bounded exponential backoff. Errors end the loop.
    ///
    /// # Errors
    /// The first error of `body` or of a commit;
    /// [`Error::RetriesExhausted`] when the node's retry budget
    /// ([`crate::config::RetryBudget`]) is spent.
    pub fn run<T>(&self, body: impl FnMut(&mut Txn) -> Result<T, TxnError>) -> Result<T> {
        self.run_with(self.shared.retry, body)
    }

    /// [`Node::run`] with another retry budget.
    ///
    /// # Errors
    /// As [`Node::run`].
    pub fn run_with<T>(
        &self,
        budget: RetryBudget,
        mut body: impl FnMut(&mut Txn) -> Result<T, TxnError>,
    ) -> Result<T> {
        let mut backoff = Duration::from_micros(1);
        let started = Instant::now();
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            let mut txn = self.begin()?;
            let reason = match body(&mut txn) {
                Ok(value) => match txn.commit()? {
                    Outcome::Committed => return Ok(value),
                    Outcome::Aborted(reason) => reason,
                },
                Err(TxnError::Conflict(reason)) => {
                    txn.abort();
                    reason
                }
                Err(TxnError::Failed(error)) => return Err(error),
            };
            let waited = started.elapsed();
            if attempts >= budget.attempts_max || waited >= budget.time_max {
                return Err(Error::RetriesExhausted {
                    attempts,
                    waited,
                    last: reason,
                });
            }
            // In a task, the thread's other transactions run meanwhile.
            crate::task::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(2));
        }
    }

    /// The async form of [`Node::run`]: the transaction runs as a task
    /// ([`crate::task`]) that this future steps each time it is polled. At
    /// each wait (a LOCK answer, a locked object, a fabric completion, a
    /// retry's back-off) it returns `Pending` and wakes itself at once, so
    /// the executor runs its other futures meanwhile; nothing blocks the
    /// executor's thread but the steps themselves. The future is not
    /// `Send` (the task's stack stays on the thread that first polled it):
    /// spawn it on a local executor. Which form to use when: see
    /// [`crate::worker`].
    ///
    /// # Errors
    /// As [`Node::run`], and [`Error::TaskStack`] when the task's stack
    /// cannot be mapped.
    pub fn run_async<T: 'static>(
        &self,
        body: impl FnMut(&mut Txn) -> Result<T, TxnError> + 'static,
    ) -> RunAsync<T> {
        crate::task::install_fabric_hook();
        let node = self.clone();
        RunAsync {
            state: match crate::task::Task::new(move || node.run(body)) {
                Ok(task) => RunState::Running(task),
                Err(error) => RunState::Failed(error),
            },
        }
    }

    /// Like [`Node::run`] but without retry: one attempt, its outcome.
    ///
    /// # Errors
    /// As [`Node::run`].
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
    /// transactions); see [`Node::poller`]. Cheap when nothing was sent
    /// here since the last poll.
    pub fn poll(&self) {
        self.shared
            .hook
            .poll_if_notified(self.shared.fabric.as_ref());
    }

    /// Registers this thread as one that calls [`Node::poll`] between
    /// transactions, until the guard is dropped. While any is registered,
    /// the node's server thread stops sleeping on the fabric's doorbell, so
    /// records sent here need no wake-up: it naps and checks now and then.
    /// A thread that holds the guard and stops polling only makes records
    /// wait for those naps (100 µs), nothing worse.
    pub fn poller(&self) -> Poller<'_> {
        self.shared.hook.pollers.fetch_add(1, Ordering::AcqRel);
        Poller { node: self }
    }

    /// Sends the TRUNCATE records this node has queued.
    ///
    /// # Errors
    /// The send path's.
    pub fn flush_truncations(&self) -> Result<()> {
        let mut context = self.shared.take_context()?;
        let view = context.view.clone();
        let result = send_truncations(
            &self.shared,
            &view,
            &context.scratch,
            &mut context.endpoints,
            &mut context.record,
        );
        self.shared.return_context(context);
        result
    }

    /// True when every ring this node sends on has been fully retired by
    /// its receiver (as the receivers last told us).
    pub fn rings_idle(&self) -> bool {
        self.shared.rings_idle()
    }

    /// The rings this node sends on to members of its configuration that
    /// their receivers have not fully retired, as (receiver node, bytes
    /// still held); empty when [`Node::rings_idle`].
    pub fn busy_rings(&self) -> Vec<(usize, u64)> {
        self.shared.busy_rings()
    }

    /// Switches injected protocol faults on this node (tests only).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// How this node's coordinators wait for LOCK answers from now on
    /// ([`crate::LockWait`]; [`ClusterConfig::lock_wait`] sets it at start).
    pub fn set_lock_wait(&self, wait: crate::LockWait) {
        self.shared
            .lock_spins
            .store(wait.spins(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Bounds the transactions this node runs at once to `max` from now
    /// on (`None`, the default: unbounded). A [`Node::begin`] beyond the
    /// bound waits until a running transaction of the node commits, aborts
    /// or is dropped: pausing in a task ([`crate::Worker`]), yielding on a
    /// plain thread, and polling the node's rings meanwhile. Transactions
    /// begun before a change keep their slot (or lack of one).
    ///
    /// Use it when a node has more client threads or tasks than its cores
    /// keep busy: on the 2-core development host, TATP over three
    /// in-process shm nodes with 8 client threads of 2 tasks per node
    /// gave 0.95–1.00 M tx/s unbounded and 1.03–1.16 M with at most 2 per
    /// node, in three interleaved sweeps each (see the README, "Not there
    /// yet"). Over verbs, where a transaction waits for the network rather
    /// than for a core, the bound has not been measured.
    ///
    /// A thread that holds open transactions and begins more than the
    /// bound allows waits on itself: its [`Node::begin`] fails with
    /// [`crate::Error::InFlightFull`] after ten seconds.
    pub fn set_max_in_flight(&self, max: Option<std::num::NonZeroUsize>) {
        self.shared.admission.set_max(max);
    }
}

/// See [`Node::poller`].
pub struct Poller<'a> {
    node: &'a Node,
}

impl Drop for Poller<'_> {
    fn drop(&mut self) {
        self.node.shared.hook.pollers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A node that serves: its handle and its server thread, stopped on drop.
///
/// A configuration change (FaRM SOSP'15 §5.2–5.3) drives every surviving
/// member through four calls, each after every member finished the one
/// before: [`ServingNode::fence`], [`ServingNode::report`],
/// [`ServingNode::apply`], [`ServingNode::resume`]. A configuration
/// manager makes those calls over the network; [`Cluster::remove_nodes`]
/// makes them in-process.
pub struct ServingNode {
    node: Node,
    server: Arc<Mutex<Server>>,
    thread: Option<JoinHandle<()>>,
}

impl ServingNode {
    /// Starts the server thread of `shared`.
    pub(crate) fn start(shared: Arc<NodeShared>) -> Result<ServingNode> {
        let server = Arc::new(Mutex::new(Server::new(shared.clone())?));
        let poller: Arc<Mutex<dyn InboxPoller>> = server.clone();
        assert!(
            shared.hook.install(Arc::downgrade(&poller)),
            "a node has one server"
        );
        let id = shared.id;
        let thread_server = server.clone();
        let handle = std::thread::Builder::new()
            .name(format!("farm-node-{id}"))
            .spawn(move || Server::run(thread_server))
            .map_err(|source| Error::File {
                what: "spawn the server thread of",
                path: PathBuf::from(format!("node-{id}")),
                source,
            })?;
        Ok(ServingNode {
            node: Node::from_shared(shared),
            server,
            thread: Some(handle),
        })
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A handle that carries out configuration changes on this node (see
    /// [`NodeControl`]); clones are the same node.
    pub fn control(&self) -> NodeControl {
        NodeControl {
            node: self.node.clone(),
            server: self.server.clone(),
        }
    }

    /// The receiving side of every ring of this node that still holds
    /// records or has retired space its sender was not told about, one
    /// line each (positions, the oldest unretired records, the LOCKs and
    /// COMMIT-BACKUPs held from it): what to print when a drain times out.
    pub fn describe_rings(&self) -> Vec<String> {
        self.server.lock().expect("server lock").describe_rings()
    }

    /// See [`NodeControl::set_managed`].
    pub fn set_managed(&self, managed: bool) {
        self.control().set_managed(managed);
    }

    /// See [`NodeControl::fence`].
    ///
    /// # Errors
    /// As [`NodeControl::fence`].
    pub fn fence(&self) -> Result<()> {
        self.control().fence()
    }

    /// See [`NodeControl::report`].
    ///
    /// # Errors
    /// As [`NodeControl::report`].
    pub fn report(&self) -> Result<RecoveryReport> {
        self.control().report()
    }

    /// See [`NodeControl::apply`].
    ///
    /// # Errors
    /// As [`NodeControl::apply`].
    pub fn apply(&self, new: &Configuration, decisions: &Decisions) -> Result<()> {
        self.control().apply(new, decisions)
    }

    /// See [`NodeControl::resume`].
    pub fn resume(&self) {
        self.control().resume();
    }

    /// Stops serving as a failed node would: the gate closes for good (its
    /// commits park, its new transactions wait) and the server thread
    /// ends. Its peers learn of it only through a configuration change.
    pub fn crash(&mut self) {
        self.node.shared.gate.abandon();
        self.stop();
    }

    /// Stops the server thread; transactions begun after this fail with
    /// [`Error::ShutDown`].
    pub fn stop(&mut self) {
        self.node.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ServingNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a configuration manager drives on one node during a configuration
/// change (FaRM SOSP'15 §5.2–5.3): [`NodeControl::fence`],
/// [`NodeControl::report`], [`NodeControl::apply`], [`NodeControl::resume`],
/// each called on every surviving member after every member finished the
/// one before. Cloneable, for the threads of a membership agent.
#[derive(Clone)]
pub struct NodeControl {
    node: Node,
    server: Arc<Mutex<Server>>,
}

impl NodeControl {
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The protocol faults this node injects now (tests only).
    pub fn faults(&self) -> crate::Faults {
        self.node.shared.faults()
    }

    /// Sets when this node's lease ends (FaRM SOSP'15 §5.1; `None`: it has
    /// none): from then on, until renewed, its commits abort with
    /// [`crate::AbortReason::Unavailable`] before sending anything, and a
    /// read-only commit that validated fails at its commit point.
    pub fn set_lease_until(&self, until: Option<Instant>) {
        self.node.shared.gate.set_lease_until(until);
    }

    /// Says whether a membership agent (leases and a configuration
    /// manager) watches this node: then a commit that loses a peer parks
    /// for recovery's decision instead of failing at once.
    pub fn set_managed(&self, managed: bool) {
        self.node.shared.gate.set_managed(managed);
    }

    /// NEW-CONFIG, first half (FaRM SOSP'15 §5.2 "apply the new
    /// configuration ... block"): closes the node's gate and waits until
    /// none of its commits runs: each finished, aborted, or parked for
    /// recovery's decision. New transactions wait at `begin`. The node
    /// sends no ring record from now until [`ServingNode::resume`].
    ///
    /// # Errors
    /// [`Error::Timeout`] when commits still run after
    /// [`crate::limits::RECOVERY_WAIT_MS`] (the gate stays closed).
    pub fn fence(&self) -> Result<()> {
        let gate = &self.node.shared.gate;
        gate.close();
        let waited = Duration::from_millis(crate::limits::RECOVERY_WAIT_MS);
        if !gate.wait_quiet(waited) {
            return Err(Error::Timeout {
                what: "this node's commits to stop for a configuration change",
                waited,
            });
        }
        Ok(())
    }

    /// Drains the node's rings (every member is fenced: nothing more
    /// arrives) and reports what recovery needs (SOSP'15 §5.3 "drain logs",
    /// "find recovering transactions"): the LOCKs and COMMIT-BACKUPs it
    /// holds and the commits it parked.
    ///
    /// # Errors
    /// A record that cannot be applied.
    pub fn report(&self) -> Result<RecoveryReport> {
        let mut server = self.server.lock().expect("server lock");
        server.drain()?;
        let (locks, backups) = server.held();
        Ok(RecoveryReport {
            node: self.node.id(),
            locks,
            backups,
            parked: self.node.shared.gate.parked(),
            truncated: server.truncated(),
        })
    }

    /// Applies configuration `new` and recovery's `decisions` for this node
    /// (SOSP'15 §5.3 "replicate transaction state", "decide"; §5.5
    /// allocator recovery): settles every held LOCK and COMMIT-BACKUP,
    /// installs the committed writes it lacks, answers its parked commits,
    /// drops queued truncations (settled already), rebuilds the allocator
    /// of every region it became primary of, and switches to `new` (records
    /// of older configurations are ignored from now on).
    ///
    /// # Errors
    /// File errors of the installs; [`Error::Config`] when `new` makes this
    /// node primary of a region it holds no replica of.
    pub fn apply(&self, new: &Configuration, decisions: &Decisions) -> Result<()> {
        let shared = &self.node.shared;
        // What came over the wire is checked before anything is locked or
        // changed (regression: a configuration with an empty replica list
        // panicked here with the server lock held, and the node stopped
        // serving its rings).
        new.check()?;
        let regions = shared.view().config.regions();
        if new.regions() != regions {
            return Err(Error::Config(format!(
                "configuration {} has {} regions, this cluster {regions}",
                new.id,
                new.regions()
            )));
        }
        let region_bytes = shared.replicas.region_bytes();
        if let Some((entry, why)) = decisions.installs.iter().find_map(|entry| {
            let why = if let Err(why) = crate::region::check_slot(entry.addr, region_bytes) {
                why
            } else if entry.payload.len()
                > crate::codec::object::capacity(crate::region::class_bytes(entry.addr.class()))
            {
                "a payload larger than its slot"
            } else if entry.new.locked {
                "a locked header"
            } else {
                return None;
            };
            Some((entry, why))
        }) {
            return Err(Error::Config(format!(
                "configuration {}'s decisions install {}: {why}",
                new.id, entry.addr
            )));
        }
        let committed: std::collections::HashSet<TxnId> =
            decisions.committed.iter().copied().collect();
        // The server lock is held until the view is switched: a record of
        // the old configuration that arrives after the settle must be
        // ignored as stale, not taken in the old configuration and held
        // after the settle with nobody left to decide it (regression: a
        // COMMIT-BACKUP held that way was never retired, and its ring
        // never drained again; found over verbs in the soft-RoCE VM with
        // `farm check --nemesis kill`).
        let mut server = self.server.lock().expect("server lock");
        server.settle(&committed, new)?;
        for entry in &decisions.installs {
            if shared.replicas.get(entry.addr.region()).is_some() {
                shared.replicas.install_if_newer(entry)?;
            }
        }
        let _ = shared.truncations.take();
        let parked: Vec<(TxnId, bool)> = shared
            .gate
            .parked()
            .into_iter()
            .map(|(txid, _)| (txid, committed.contains(&txid)))
            .collect();
        shared.gate.decide(parked);
        for region in new.primaried_by(shared.id) {
            let mr = shared.replicas.get(region).ok_or_else(|| {
                Error::Config(format!(
                    "configuration {} makes node {} primary of region {region}, of which it holds no replica",
                    new.id, shared.id
                ))
            })?;
            shared.allocators.promote(region, mr)?;
        }
        let directory = shared.view().directory.clone();
        shared.set_view(View {
            config: new.clone(),
            directory,
        });
        // The server's next pass starts by taking the new view.
        drop(server);
        Ok(())
    }

    /// Takes `joiner` back as a new incarnation with fresh memory whose
    /// remote keys are `inbox` and `regions` (`regions[r]`: its replica of
    /// region `r`, if any): the rings to and from it start afresh at
    /// position 0, what this node remembers of its old transactions is
    /// forgotten, endpoints to it are remade, and the directory points at
    /// its new memory. FaRM SOSP'15 §5 has a restarted machine join as a
    /// new member; this is each member's half of that, called with the
    /// gate closed (between [`NodeControl::fence`] and
    /// [`NodeControl::resume`]) and after [`NodeControl::apply`] of the
    /// configuration that has it.
    ///
    /// # Errors
    /// [`Error::Config`] when `joiner` is not a node slot of the cluster or
    /// `regions` does not have one entry per region.
    pub fn admit(&self, joiner: usize, inbox: u32, regions: &[Option<u32>]) -> Result<()> {
        let shared = &self.node.shared;
        let view = shared.view();
        if joiner >= shared.nodes || joiner == shared.id {
            return Err(Error::Config(format!(
                "node {} cannot admit node {joiner}: not another node of {}",
                shared.id, shared.nodes
            )));
        }
        if regions.len() != view.config.regions() {
            return Err(Error::Config(format!(
                "node {joiner} advertised keys for {} regions; the cluster has {}",
                regions.len(),
                view.config.regions()
            )));
        }
        self.server.lock().expect("server lock").admit(joiner);
        shared.rejoined(joiner);
        let mut directory = view.directory.clone();
        directory.inbox_keys[joiner] = inbox;
        directory.region_keys[joiner] = regions.to_vec();
        shared.set_view(View {
            config: view.config.clone(),
            directory,
        });
        Ok(())
    }

    /// The remote keys of every node's memory as this node knows them
    /// (what a joining node needs to reach the others).
    pub fn directory(&self) -> crate::Directory {
        self.node.shared.view().directory.clone()
    }

    /// NEW-CONFIG-COMMIT (SOSP'15 §5.2): opens the gate; transactions go
    /// on in the new configuration.
    pub fn resume(&self) {
        self.node.shared.gate.open();
    }
}

/// Nodes running in this process, with their data directory.
pub struct Cluster {
    nodes: Vec<ServingNode>,
    handles: Vec<Node>,
    /// Nodes failed with [`Cluster::fail_node`].
    failed: Vec<usize>,
    fault_plan: Option<Arc<rdma_transport::faulty::FaultPlan>>,
    data_dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `config.nodes` nodes in this process, each with its memory
    /// files in the data directory (a fresh temporary one when the
    /// configuration names none).
    ///
    /// # Errors
    /// An invalid configuration (see [`ClusterConfig::validate`]); file and fabric
    /// errors while the nodes open their memory.
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
                            what: "create a temporary directory in",
                            path: std::env::temp_dir(),
                            source,
                        })?;
                let path = temporary.path().to_path_buf();
                (Some(temporary), path)
            }
        };
        let placement = config.placement();
        let fabrics = open_fabrics(&config, &data_dir)?;
        let mut memories = Vec::new();
        let mut directory = Directory::default();
        for (id, fabric) in fabrics.into_iter().enumerate() {
            let memory = NodeMemory::open(
                id,
                fabric.as_ref(),
                &placement,
                config.region_bytes,
                &data_dir,
                config.resident_regions,
            )?;
            directory.inbox_keys.push(memory.inbox.rkey());
            directory.region_keys.push(memory.replicas.keys());
            memories.push((fabric, memory));
        }
        let mut nodes = Vec::new();
        for (id, (fabric, memory)) in memories.into_iter().enumerate() {
            let view = View {
                config: placement.clone(),
                directory: directory.clone(),
            };
            nodes.push(ServingNode::start(Arc::new(NodeShared::new(
                id,
                view,
                (config.faults, config.retry),
                fabric,
                memory.inbox,
                memory.replicas,
            )?))?);
        }
        let neighbours: Vec<_> = nodes
            .iter()
            .map(|n: &ServingNode| Arc::downgrade(&n.node().shared))
            .collect();
        for node in &nodes {
            node.node().shared.set_neighbours(neighbours.clone());
            node.node().set_lock_wait(config.lock_wait);
        }
        Ok(Cluster {
            handles: nodes.iter().map(|n| n.node().clone()).collect(),
            nodes,
            failed: Vec::new(),
            fault_plan: config.fault_plan.clone(),
            data_dir,
            _temporary: temporary,
        })
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.handles[id]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.handles
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Fails node `id` as a crash would: it stops serving (see
    /// [`ServingNode::crash`]) and, when the cluster has a fault plan,
    /// every link to and from it is cut. Its memory stays as the crash
    /// left it. Nothing else changes until [`Cluster::remove_nodes`].
    ///
    /// # Panics
    /// For a node that does not exist.
    pub fn fail_node(&mut self, id: usize) {
        self.nodes[id].crash();
        if let Some(plan) = &self.fault_plan {
            for other in 0..self.nodes.len() {
                let (a, b) = (
                    rdma_transport::NodeId(id as u16),
                    rdma_transport::NodeId(other as u16),
                );
                plan.cut(a, b, true);
                plan.cut(b, a, true);
            }
        }
        if !self.failed.contains(&id) {
            self.failed.push(id);
        }
    }

    /// Reconfigures around the failed nodes `failed`, as a configuration
    /// manager does (FaRM SOSP'15 §5.2–5.3), with every step in this
    /// process: the next configuration (a surviving backup becomes primary
    /// of each region a failed node was primary of), NEW-CONFIG to every
    /// survivor (fence), drained rings and reports, decisions
    /// ([`crate::reconfiguration::decide`]), apply, NEW-CONFIG-COMMIT
    /// (resume). Returns the new configuration.
    ///
    /// # Errors
    /// [`Error::Config`] when a region would lose every replica, or no
    /// member would be left; the steps' errors (every survivor is resumed
    /// anyway, in whatever configuration it reached).
    pub fn remove_nodes(&mut self, failed: &[usize]) -> Result<Arc<Configuration>> {
        let survivors: Vec<usize> = (0..self.nodes.len())
            .filter(|id| !failed.contains(id) && !self.failed.contains(id))
            .collect();
        let Some(&first) = survivors.first() else {
            return Err(Error::Config("no node would be left".into()));
        };
        let old = self.handles[first].shared.view().config.clone();
        let manager = if failed.contains(&old.manager) || self.failed.contains(&old.manager) {
            first
        } else {
            old.manager
        };
        let gone: Vec<usize> = (0..self.nodes.len())
            .filter(|id| !survivors.contains(id))
            .collect();
        let new = old.without(&gone, manager).ok_or_else(|| {
            Error::Config(format!(
                "removing nodes {gone:?} would leave a region with no replica"
            ))
        })?;
        let result = (|| {
            for &id in &survivors {
                self.nodes[id].fence()?;
            }
            let mut reports = Vec::new();
            for &id in &survivors {
                reports.push(self.nodes[id].report()?);
            }
            let decisions = decide(&old, &new, &reports);
            for &id in &survivors {
                let decided = decisions.get(&id).cloned().unwrap_or_default();
                self.nodes[id].apply(&new, &decided)?;
            }
            Ok(())
        })();
        for &id in &survivors {
            self.nodes[id].resume();
        }
        result.map(|()| Arc::new(new))
    }

    /// Flushes every node's pending truncations and waits until every ring
    /// is drained: then every backup's replica equals its primary's.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the cluster does not go quiet within
    /// `timeout`; the send path's errors.
    pub fn quiesce(&self, timeout: Duration) -> Result<()> {
        let live: Vec<&Node> = self
            .handles
            .iter()
            .filter(|n| !self.failed.contains(&n.id()))
            .collect();
        for node in &live {
            node.flush_truncations()?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let before: u64 = self.processed();
            std::thread::sleep(Duration::from_millis(20));
            if self.processed() == before && live.iter().all(|n| n.rings_idle()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "the cluster's quiescence",
                    waited: timeout,
                });
            }
        }
    }

    fn processed(&self) -> u64 {
        self.handles
            .iter()
            .map(|n| n.stats().records_processed.load(Ordering::Relaxed))
            .sum()
    }

    /// Stops the server threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for node in &self.handles {
            node.shared.stop.store(true, Ordering::Release);
        }
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// Says on every node that failures are reconfigured around (see
    /// [`ServingNode::set_managed`]): what a cluster whose failures
    /// [`Cluster::remove_nodes`] handles wants.
    pub fn set_managed(&self, managed: bool) {
        for node in &self.nodes {
            node.set_managed(managed);
        }
    }

    /// Switches injected protocol faults on every node (tests only).
    pub fn set_faults(&self, faults: Faults) {
        for node in &self.handles {
            node.set_faults(faults);
        }
    }

    /// Corrupt records the nodes saw (for tests that corrupt rings).
    pub fn corrupt_records(&self) -> u64 {
        self.handles
            .iter()
            .map(|n| n.stats().corrupt_records.load(Ordering::Relaxed))
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
pub(crate) struct NodeMemory {
    pub(crate) inbox: Arc<MemoryRegion>,
    pub(crate) replicas: Replicas,
}

impl NodeMemory {
    pub(crate) fn open(
        id: usize,
        fabric: &dyn Fabric,
        placement: &Placement,
        region_bytes: u64,
        data_dir: &Path,
        resident: bool,
    ) -> Result<NodeMemory> {
        let dir = node_dir(data_dir, id);
        std::fs::create_dir_all(&dir).map_err(|source| Error::File {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let inbox = fabric.register(
            Backing::File {
                path: dir.join("inbox"),
                len: inbox_bytes(placement.nodes),
            },
            Access::ALL,
        )?;
        let mut replicas = Vec::new();
        for region in 0..placement.regions() as u16 {
            if placement.holds(id, region) {
                let mr = fabric.register(
                    Backing::File {
                        path: dir.join(format!("region-{region}")),
                        len: region_bytes,
                    },
                    Access::ALL,
                )?;
                if resident {
                    mr.make_resident()?;
                }
                region::format(&mr, region)?;
                replicas.push(Some(mr));
            } else {
                replicas.push(None);
            }
        }
        Ok(NodeMemory {
            inbox,
            replicas: Replicas::new(replicas),
        })
    }
}

/// Where node `id` keeps its files.
pub(crate) fn node_dir(data_dir: &Path, id: usize) -> PathBuf {
    data_dir.join(format!("node-{id}"))
}

fn open_fabrics(config: &ClusterConfig, data_dir: &Path) -> Result<Vec<Arc<dyn Fabric>>> {
    let fabrics = match config.fabric {
        FabricKind::Shm => (0..config.nodes)
            .map(|id| open_shm(data_dir, id))
            .collect::<Result<Vec<_>>>()?,
        FabricKind::Verbs => open_verbs_local(config.nodes, &config.verbs)?,
    };
    Ok(match &config.fault_plan {
        None => fabrics,
        // Tests break the fabric on purpose through the plan.
        Some(plan) => fabrics
            .into_iter()
            .map(|fabric| Arc::new(FaultyFabric::new(fabric, plan.clone())) as Arc<dyn Fabric>)
            .collect(),
    })
}

/// Node `id` of the shm fabric whose files are under `data_dir`.
pub(crate) fn open_shm(data_dir: &Path, id: usize) -> Result<Arc<dyn Fabric>> {
    Ok(Arc::new(ShmFabric::open(ShmConfig {
        dir: data_dir.join("shm"),
        node: NodeId(id as u16),
    })?))
}

/// `nodes` verbs nodes of this process, each listening on loopback.
#[cfg(feature = "verbs")]
fn open_verbs_local(nodes: usize, verbs: &VerbsDevice) -> Result<Vec<Arc<dyn Fabric>>> {
    use rdma_transport::verbs::{VerbsConfig, VerbsFabric};
    let mut fabrics = Vec::new();
    for id in 0..nodes {
        fabrics.push(VerbsFabric::open(VerbsConfig {
            node: NodeId(id as u16),
            device: verbs.device.clone(),
            port: 1,
            gid_index: verbs.gid_index,
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
fn open_verbs_local(_: usize, _: &VerbsDevice) -> Result<Vec<Arc<dyn Fabric>>> {
    Err(Error::FabricNotBuilt { fabric: "verbs" })
}
