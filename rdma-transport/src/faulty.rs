//! A fault-injecting wrapper over any fabric, for tests (DESIGN.md's
//! third fabric): it forwards everything to the fabric it wraps, except
//! what its [`FaultPlan`] says to break. The plan is shared and switchable
//! at run time, so a test can load correctly and then cut a link.
//!
//! Faults so far: cut a link (every post from one node to another fails
//! with [`Error::Injected`], as if the peer were gone). The plan carries a
//! seed, for the randomized faults to come, so that a failing run prints
//! what reproduces it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::access::Access;
use crate::error::{Error, Result};
use crate::fabric::{Endpoint, Fabric, FabricKind};
use crate::mr::{Backing, MemoryRegion};
use crate::op::{NodeId, Op, RemoteRegion};

/// Nodes a plan covers (links from each to each).
const PLAN_NODES: usize = 64;

/// What to break, shared by every node's [`FaultyFabric`].
pub struct FaultPlan {
    seed: u64,
    /// `cut[from * PLAN_NODES + to]`: posts from `from` to `to` fail.
    cut: Vec<AtomicBool>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut: Vec<(usize, usize)> = (0..PLAN_NODES * PLAN_NODES)
            .filter(|i| self.cut[*i].load(Ordering::Relaxed))
            .map(|i| (i / PLAN_NODES, i % PLAN_NODES))
            .collect();
        f.debug_struct("FaultPlan")
            .field("seed", &self.seed)
            .field("cut", &cut)
            .finish()
    }
}

impl FaultPlan {
    /// A plan that breaks nothing yet; `seed` drives its randomized faults.
    pub fn new(seed: u64) -> Arc<FaultPlan> {
        Arc::new(FaultPlan {
            seed,
            cut: (0..PLAN_NODES * PLAN_NODES)
                .map(|_| AtomicBool::new(false))
                .collect(),
        })
    }

    /// The seed that reproduces this plan's faults.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn link(&self, from: NodeId, to: NodeId) -> Option<&AtomicBool> {
        let (from, to) = (usize::from(from.0), usize::from(to.0));
        (from < PLAN_NODES && to < PLAN_NODES).then(|| &self.cut[from * PLAN_NODES + to])
    }

    /// Cuts (or mends) the link from `from` to `to`: posts on it fail.
    pub fn cut(&self, from: NodeId, to: NodeId, cut: bool) {
        if let Some(link) = self.link(from, to) {
            // Relaxed: tests switch faults between operations; an operation
            // racing the switch may see either setting.
            link.store(cut, Ordering::Relaxed);
        }
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.link(from, to)
            .is_some_and(|link| link.load(Ordering::Relaxed))
    }
}

/// A node's fabric with a [`FaultPlan`] in the way.
pub struct FaultyFabric {
    inner: Arc<dyn Fabric>,
    plan: Arc<FaultPlan>,
}

impl FaultyFabric {
    pub fn new(inner: Arc<dyn Fabric>, plan: Arc<FaultPlan>) -> FaultyFabric {
        FaultyFabric { inner, plan }
    }
}

impl Fabric for FaultyFabric {
    fn node(&self) -> NodeId {
        self.inner.node()
    }

    fn kind(&self) -> FabricKind {
        self.inner.kind()
    }

    fn register(&self, backing: Backing, access: Access) -> Result<Arc<MemoryRegion>> {
        self.inner.register(backing, access)
    }

    fn connect(&self, peer: NodeId) -> Result<Box<dyn Endpoint>> {
        Ok(Box::new(FaultyEndpoint {
            inner: self.inner.connect(peer)?,
            plan: self.plan.clone(),
            from: self.inner.node(),
        }))
    }

    fn wait_notified(&self, timeout: Duration) -> Result<u64> {
        self.inner.wait_notified(timeout)
    }

    fn notification_counter(&self) -> Option<u64> {
        self.inner.notification_counter()
    }

    fn progress(&self) -> Result<()> {
        self.inner.progress()
    }
}

struct FaultyEndpoint {
    inner: Box<dyn Endpoint>,
    plan: Arc<FaultPlan>,
    from: NodeId,
}

impl Endpoint for FaultyEndpoint {
    fn peer(&self) -> NodeId {
        self.inner.peer()
    }

    fn post(&mut self, batch: &[Op]) -> Result<()> {
        let to = self.inner.peer();
        if self.plan.is_cut(self.from, to) {
            return Err(Error::Injected {
                what: "a cut link refused a post",
                from: self.from,
                to,
            });
        }
        self.inner.post(batch)
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.inner.wait(timeout)
    }

    fn outstanding(&self) -> usize {
        self.inner.outstanding()
    }

    fn remote_regions(&mut self) -> Result<Vec<RemoteRegion>> {
        self.inner.remote_regions()
    }
}
