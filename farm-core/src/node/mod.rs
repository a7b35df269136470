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

pub(crate) mod contexts;
pub(crate) mod inbox;
pub(crate) mod send;
pub(crate) mod truncation;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rdma_transport::{Endpoint, Fabric, MemoryRegion};

use self::contexts::{Context, ContextPool};
use self::inbox::InboxHook;
use self::send::{Destination, SendPath};
use self::truncation::TruncationQueue;
use crate::allocator::Allocators;
use crate::config::{Faults, Placement, RetryBudget};
use crate::error::{Error, Result};
use crate::region::Replicas;

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
}

/// The state of one node that its server thread and its application
/// threads share.
pub(crate) struct NodeShared {
    pub(crate) id: usize,
    pub(crate) placement: Placement,
    /// Injected protocol faults; switchable at run time (tests load
    /// correctly, then break the protocol).
    faults: AtomicU8,
    /// The configuration this node is in (FaRM SOSP'15 §5); records carry
    /// it.
    pub(crate) configuration: u32,
    /// How long `Node::run` retries.
    pub(crate) retry: RetryBudget,
    pub(crate) fabric: Arc<dyn Fabric>,
    pub(crate) inbox: Arc<MemoryRegion>,
    pub(crate) replicas: Replicas,
    pub(crate) allocators: Allocators,
    pub(crate) directory: OnceLock<Directory>,
    send: SendPath,
    pub(crate) contexts: ContextPool,
    pub(crate) truncations: TruncationQueue,
    pub(crate) hook: InboxHook,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: NodeStats,
    /// The last corrupt record seen, for people.
    pub(crate) last_corruption: Mutex<Option<String>>,
}

impl NodeShared {
    pub(crate) fn new(
        id: usize,
        placement: Placement,
        (faults, retry): (Faults, RetryBudget),
        fabric: Arc<dyn Fabric>,
        inbox: Arc<MemoryRegion>,
        replicas: Replicas,
    ) -> Result<NodeShared> {
        let allocators = Allocators::open(&replicas, |region| placement.primary(region) == id)?;
        Ok(NodeShared {
            id,
            send: SendPath::new(id, placement.nodes, &inbox),
            truncations: TruncationQueue::new(placement.nodes),
            placement,
            faults: AtomicU8::new(faults.bits()),
            configuration: 1,
            retry,
            fabric,
            inbox,
            replicas,
            allocators,
            directory: OnceLock::new(),
            contexts: ContextPool::default(),
            hook: InboxHook::new(),
            stop: AtomicBool::new(false),
            stats: NodeStats::default(),
            last_corruption: Mutex::new(None),
        })
    }

    pub(crate) fn faults(&self) -> Faults {
        Faults::from_bits(self.faults.load(Ordering::Relaxed))
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        self.faults.store(faults.bits(), Ordering::Relaxed);
    }

    pub(crate) fn directory(&self) -> &Directory {
        self.directory
            .get()
            .expect("the directory is set before the node serves")
    }

    /// A context for a transaction of this node.
    ///
    /// # Errors
    /// [`Error::ShutDown`] once the node stops; see [`ContextPool::take`].
    pub(crate) fn take_context(&self) -> Result<Context> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::ShutDown(self.id));
        }
        self.contexts
            .take(self.id, self.fabric.as_ref(), self.placement.nodes)
    }

    pub(crate) fn return_context(&self, context: Context) {
        self.contexts.give_back(context);
    }

    /// Appends the record in `record` to the ring of `target` (see
    /// [`SendPath::send`]).
    pub(crate) fn send(
        &self,
        target: usize,
        record: &mut Vec<u8>,
        scratch: &Arc<MemoryRegion>,
        endpoint: &mut dyn Endpoint,
        notify: bool,
    ) -> Result<()> {
        let destination = Destination {
            target,
            inbox_key: self.directory().inbox_keys[target],
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

    /// True when every ring this node sends on has been retired.
    pub(crate) fn rings_idle(&self) -> bool {
        self.send.rings_idle()
    }
}
