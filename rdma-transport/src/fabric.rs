//! The backend-independent interface: a [`Fabric`] per node, an [`Endpoint`]
//! per (node, peer) pair.

use std::sync::Arc;
use std::time::Duration;

use crate::access::Access;
use crate::error::Result;
use crate::mr::{Backing, MemoryRegion};
use crate::op::{NodeId, Op, RemoteRegion};

/// Which fabric: the one type every layer names it with (cluster files,
/// reports and command lines spell it `shm` or `verbs`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FabricKind {
    /// Shared memory between the nodes of one host (the default).
    #[default]
    Shm,
    /// RDMA verbs: NICs and soft-RoCE (cargo feature `verbs`).
    Verbs,
}

impl FabricKind {
    pub const ALL: [FabricKind; 2] = [FabricKind::Shm, FabricKind::Verbs];

    pub fn name(self) -> &'static str {
        match self {
            FabricKind::Shm => "shm",
            FabricKind::Verbs => "verbs",
        }
    }
}

impl std::fmt::Display for FabricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fabric name that is neither `shm` nor `verbs`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fabric {0:?}: use \"shm\" or \"verbs\"")]
pub struct UnknownFabric(pub String);

impl std::str::FromStr for FabricKind {
    type Err = UnknownFabric;

    fn from_str(name: &str) -> std::result::Result<FabricKind, UnknownFabric> {
        FabricKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownFabric(name.to_string()))
    }
}

/// One node's attachment to the fabric: its registered memory, its doorbell,
/// and the means to connect to peers. Shared by the node's threads.
pub trait Fabric: Send + Sync {
    fn node(&self) -> NodeId;
    fn kind(&self) -> FabricKind;

    /// Maps `backing` and registers it with `access`. Peers can address the
    /// result by its [`MemoryRegion::rkey`] once it is registered with a
    /// remote flag.
    fn register(&self, backing: Backing, access: Access) -> Result<Arc<MemoryRegion>>;

    /// A reliable connected endpoint from this node to `peer`, for one
    /// thread's use. Each call makes a new one (a new queue pair on verbs).
    fn connect(&self, peer: NodeId) -> Result<Box<dyn Endpoint>>;

    /// Blocks until a peer's [`Op::WriteNotify`] reached this node or
    /// `timeout` passes; returns how many notifications arrived (0 on
    /// timeout). Notifications that arrive while nobody waits are counted
    /// for the next call, so a wake-up is never lost.
    fn wait_notified(&self, timeout: Duration) -> Result<u64>;

    /// A counter that moves (wrapping) whenever a peer's
    /// [`Op::WriteNotify`] reaches this node, read without waiting or
    /// consuming anything; `None` where the backend cannot tell cheaply.
    /// Threads that poll between other work compare it with the value they
    /// last acted on, to skip polling when nothing was notified.
    fn notification_counter(&self) -> Option<u64> {
        None
    }

    /// Housekeeping that must go on while this node's threads block on
    /// something else (verbs: re-post the receives that notifications
    /// consumed, or peers' notifications stall). Threads that wait for
    /// anything other than the fabric call it now and then. Cheap.
    fn progress(&self) -> Result<()> {
        Ok(())
    }
}

/// A connected endpoint to one peer (an RC queue pair on verbs).
///
/// Requests are posted in batches; within a batch only the last is
/// signaled, and [`Endpoint::wait`] returns once every posted request has
/// completed. On a reliable connection requests complete in order, so the
/// last completion covers the others.
pub trait Endpoint: Send {
    fn peer(&self) -> NodeId;

    /// Validates every request of `batch` (nothing is posted if one is bad)
    /// and posts them as one chain.
    fn post(&mut self, batch: &[Op]) -> Result<()>;

    /// Waits until everything posted has completed, or fails with
    /// [`crate::Error::Timeout`] after `timeout`. A completion error breaks
    /// the endpoint (as it moves a queue pair to the error state).
    fn wait(&mut self, timeout: Duration) -> Result<()>;

    /// Requests posted and not yet completed.
    fn outstanding(&self) -> usize;

    /// The peer's registrations with remote access, as it advertises them
    /// now (verbs: asked over the control channel; shm: read from the
    /// peer's directory). How a client finds memory it was not told about.
    fn remote_regions(&mut self) -> Result<Vec<RemoteRegion>>;

    /// `post` then `wait`.
    fn execute(&mut self, batch: &[Op], timeout: Duration) -> Result<()> {
        self.post(batch)?;
        self.wait(timeout)
    }
}
