//! A node's shared state: its memory (inbox, region replicas, allocators),
//! where every peer's memory is (the [`Directory`]), and the parts its
//! threads share, each in its own module: the pool of transaction
//! contexts ([`contexts`]), the lazy truncation queue ([`truncation`]),
//! the send path of its rings ([`send`]) and the polling of its inbox
//! ([`inbox`]).
//!
//! The coordinator ([`crate::coordinator`]) and the participant
//! ([`crate::participant`]) both stand on this state; it knows neither.
//! Threads: the server thread ([`crate::server`]) polls the rings,
//! spinning briefly and then blocking on the fabric's doorbell
//! ([`Fabric::wait_notified`]), so an idle node burns no CPU; application
//! threads run transactions in pooled contexts and poll their LOCK answers
//! in the inbox, helping the server while they wait.

pub(crate) mod admission;
pub(crate) mod contexts;
pub(crate) mod gate;
pub(crate) mod inbox;
pub(crate) mod send;
pub(crate) mod truncation;
pub(crate) mod view;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use rdma_transport::{Endpoint, Fabric, MemoryRegion};

use self::contexts::{Context, ContextPool};
use self::gate::Gate;
use self::inbox::InboxHook;
use self::send::{Destination, SendPath};
use self::truncation::TruncationQueue;
pub use self::view::Directory;
pub(crate) use self::view::View;
use crate::allocator::Allocators;
use crate::config::{Faults, RetryBudget};
use crate::error::{Error, Result};
use crate::region::Replicas;

/// Counters a node keeps about itself.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub records_processed: AtomicU64,
    pub corrupt_records: AtomicU64,
    pub lock_records: AtomicU64,
    pub truncated: AtomicU64,
    /// Object copies rejected because their footer did not match.
    pub torn_reads: AtomicU64,
    /// Object copies rejected because the object was locked.
    pub locked_reads: AtomicU64,
    /// Records of an earlier configuration, retired unread.
    pub stale_records: AtomicU64,
}

/// The state of one node that its server thread and its application
/// threads share.
pub(crate) struct NodeShared {
    pub(crate) id: usize,
    /// Node slots of the cluster (what rings and inboxes are sized for).
    pub(crate) nodes: usize,
    view: RwLock<Arc<View>>,
    /// Counts view changes, so that a holder of a snapshot can tell it is
    /// old without taking the lock.
    view_serial: AtomicU64,
    /// Injected protocol faults; switchable at run time (tests load
    /// correctly, then break the protocol).
    faults: AtomicU8,
    /// How long `Node::run` retries.
    pub(crate) retry: RetryBudget,
    /// Polls a coordinator spins before it yields while it waits for LOCK
    /// answers ([`crate::LockWait::spins`]).
    pub(crate) lock_spins: std::sync::atomic::AtomicU32,
    pub(crate) fabric: Arc<dyn Fabric>,
    pub(crate) inbox: Arc<MemoryRegion>,
    pub(crate) replicas: Replicas,
    pub(crate) allocators: Allocators,
    send: SendPath,
    pub(crate) contexts: ContextPool,
    /// The bound on transactions in flight ([`admission`]).
    pub(crate) admission: admission::Admission,
    pub(crate) truncations: TruncationQueue,
    pub(crate) hook: InboxHook,
    /// The other nodes of an in-process cluster, by id (set once, by
    /// [`crate::Cluster::start`]): a client waiting for a LOCK answer runs
    /// the primary's server pass itself (see [`NodeShared::help_node`]).
    neighbours: OnceLock<Vec<Weak<NodeShared>>>,
    /// Closed while the configuration changes.
    pub(crate) gate: Gate,
    /// Each peer's incarnation as this node knows it: bumped when a peer
    /// rejoins, so that endpoints made for the dead one are remade.
    peer_generations: Vec<AtomicU64>,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: NodeStats,
    /// The last corrupt record seen, for people.
    pub(crate) last_corruption: Mutex<Option<String>>,
}

impl NodeShared {
    pub(crate) fn new(
        id: usize,
        view: View,
        (faults, retry): (Faults, RetryBudget),
        fabric: Arc<dyn Fabric>,
        inbox: Arc<MemoryRegion>,
        replicas: Replicas,
    ) -> Result<NodeShared> {
        let nodes = view.config.nodes;
        let allocators = Allocators::open(&replicas, |region| view.config.primary(region) == id)?;
        Ok(NodeShared {
            id,
            nodes,
            send: SendPath::new(id, nodes, &inbox),
            truncations: TruncationQueue::new(nodes),
            view: RwLock::new(Arc::new(view)),
            view_serial: AtomicU64::new(0),
            faults: AtomicU8::new(faults.bits()),
            retry,
            lock_spins: std::sync::atomic::AtomicU32::new(crate::LockWait::Spin.spins()),
            fabric,
            inbox,
            replicas,
            allocators,
            contexts: ContextPool::default(),
            admission: admission::Admission::new(),
            hook: InboxHook::new(),
            neighbours: OnceLock::new(),
            gate: Gate::new(),
            peer_generations: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
            stats: NodeStats::default(),
            last_corruption: Mutex::new(None),
        })
    }

    /// Makes `nodes` (every node of an in-process cluster, by id) this
    /// node's neighbours; false if it had some already.
    pub(crate) fn set_neighbours(&self, nodes: Vec<Weak<NodeShared>>) -> bool {
        self.neighbours.set(nodes).is_ok()
    }

    /// Runs node `id`'s server over the ring from this node (the records
    /// this node sent it), from this thread, if node `id` is this node or
    /// lives in this process, still serves, and no other thread is running
    /// its server. In an in-process cluster this is FaRM's "whoever polls
    /// next processes it" (NSDI'14 §3): a coordinator spinning for a LOCK
    /// answer processes the LOCK at the primary itself instead of waiting
    /// for the primary's server thread to get a core (on this 2-core box
    /// that wait was most of the LOCK phase). Node processes have no
    /// neighbours: their servers are in other processes.
    pub(crate) fn help_node(&self, id: usize) {
        if id == self.id {
            self.hook.help_sender(self.id);
            return;
        }
        let Some(node) = self.neighbours.get().and_then(|n| n.get(id)) else {
            return;
        };
        if let Some(node) = node.upgrade() {
            if !node.stop.load(Ordering::Acquire) {
                node.hook.help_sender(self.id);
            }
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        Faults::from_bits(self.faults.load(Ordering::Relaxed))
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        self.faults.store(faults.bits(), Ordering::Relaxed);
    }

    /// The configuration and directory now.
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.read().expect("view lock").clone()
    }

    /// Switches to another configuration and directory (reconfiguration,
    /// with no commit running).
    pub(crate) fn set_view(&self, view: View) {
        *self.view.write().expect("view lock") = Arc::new(view);
        // Release: pairs with the Acquire in `view_serial`; whoever sees the
        // new count finds the new view under the lock.
        self.view_serial.fetch_add(1, Ordering::Release);
    }

    /// Changes when the view does (see [`NodeShared::set_view`]).
    pub(crate) fn view_serial(&self) -> u64 {
        self.view_serial.load(Ordering::Acquire)
    }

    /// A context for a transaction of this node.
    ///
    /// # Errors
    /// [`Error::ShutDown`] once the node stops; see [`ContextPool::take`].
    pub(crate) fn take_context(&self) -> Result<Context> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::ShutDown(self.id));
        }
        // The serial first: a change between the two reads makes the
        // snapshot look old (a needless retry), never new.
        let serial = self.view_serial();
        let mut context =
            self.contexts
                .take(self.id, self.fabric.as_ref(), self.nodes, serial, || {
                    self.view()
                })?;
        for (peer, seen) in context.generations.iter_mut().enumerate() {
            let now = self.peer_generation(peer);
            if *seen != now {
                context.endpoints[peer] = contexts::connect_one(self.fabric.as_ref(), peer);
                *seen = now;
            }
        }
        // The view the context kept from its last transaction is still
        // the node's while the serial is the same: no lock and no
        // reference count per transaction (+0.6% TATP, 3 interleaved runs).
        if context.view_serial != serial {
            context.view = self.view();
            context.view_serial = serial;
        }
        Ok(context)
    }

    /// The incarnation of `peer` this node knows (0 until it rejoins).
    pub(crate) fn peer_generation(&self, peer: usize) -> u64 {
        self.peer_generations[peer].load(Ordering::Acquire)
    }

    /// Takes `peer` as a new incarnation (it rejoined with fresh memory):
    /// the ring to it starts afresh, and endpoints to it are remade as
    /// they are next used. Call with the gate closed.
    pub(crate) fn rejoined(&self, peer: usize) {
        self.send.reset(self.id, peer, &self.inbox);
        self.peer_generations[peer].fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn return_context(&self, context: Context) {
        self.contexts.give_back(context);
    }

    /// Appends the record in `record` to the ring of `target` (see
    /// [`SendPath::send`]).
    pub(crate) fn send(
        &self,
        view: &View,
        target: usize,
        record: &mut Vec<u8>,
        scratch: &Arc<MemoryRegion>,
        endpoint: &mut dyn Endpoint,
        notify: bool,
    ) -> Result<()> {
        let destination = Destination {
            target,
            inbox_key: view.inbox_key(target),
        };
        self.send.send(
            self.fabric.as_ref(),
            destination,
            record,
            scratch,
            endpoint,
            notify,
        )
    }

    /// Runs one pass of the inbox poller if no other thread is running it.
    pub(crate) fn help(&self) {
        self.hook.help();
    }

    /// True when every ring this node sends on to a member of its
    /// configuration has been retired.
    pub(crate) fn rings_idle(&self) -> bool {
        self.busy_rings().is_empty()
    }

    /// The rings to members that still hold records, as (receiver, bytes).
    pub(crate) fn busy_rings(&self) -> Vec<(usize, u64)> {
        let view = self.view();
        self.send.busy_rings(|target| view.config.is_member(target))
    }
}
