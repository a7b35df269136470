//! The pool of transaction contexts of a node: what a transaction needs to
//! talk to the cluster (one endpoint per node, registered scratch memory
//! for READs and for staging records), made on first use and reused.
//! [`CONTEXTS_MAX`] bounds them, and with them the transactions a node
//! runs at once.

use std::sync::{Arc, Mutex};

use rdma_transport::{Access, Backing, Endpoint, Fabric, MemoryRegion, NodeId};

use super::view::View;
use crate::error::{Error, Result};
use crate::limits::{CONTEXTS_MAX, RECORD_BYTES_MAX};

/// Scratch layout of a context: a READ area, then one staging area per
/// node (a PAD word, then the record).
pub(crate) const READ_AREA_BYTES: u64 = 64 * 1024;
/// Bytes before a staged record: room for the PAD word written ahead of it.
pub(crate) const STAGING_PAD_BYTES: u64 = 8;
const STAGING_BYTES: u64 = RECORD_BYTES_MAX as u64 + 64;

/// Offset of the staging area for records to `target` in a scratch region.
pub(crate) fn staging_offset(target: usize) -> u64 {
    READ_AREA_BYTES + target as u64 * STAGING_BYTES
}

/// Bytes of the scratch region of a node in a cluster of `nodes` nodes.
pub(crate) fn scratch_bytes(nodes: usize) -> u64 {
    staging_offset(nodes)
}

/// A pooled transaction context.
pub(crate) struct Context {
    pub(crate) index: usize,
    pub(crate) endpoints: Vec<Box<dyn Endpoint>>,
    pub(crate) scratch: Arc<MemoryRegion>,
    /// The sequence number of the context's last transaction.
    pub(crate) sequence: u32,
    /// The record being built (reused: no allocation per transaction).
    pub(crate) record: Vec<u8>,
    /// The configuration and directory the transaction runs in (taken when
    /// the context is).
    pub(crate) view: Arc<View>,
    /// The node's view serial when `view` was taken: a commit goes on only
    /// while it is unchanged (see [`crate::node::gate`]).
    pub(crate) view_serial: u64,
    /// The incarnation of each peer that `endpoints` were made for (see
    /// [`crate::node::NodeShared::peer_generation`]).
    pub(crate) generations: Vec<u64>,
}

/// A thread's links to every node: one endpoint per node, and registered
/// scratch memory for them.
pub(crate) struct Links {
    pub(crate) endpoints: Vec<Box<dyn Endpoint>>,
    pub(crate) scratch: Arc<MemoryRegion>,
}

/// Endpoints to every node of `nodes`, and scratch memory for them. A
/// node that cannot be reached now (it failed, and the configuration has
/// not changed yet, or it never will be a member again) gets an endpoint
/// whose every post fails: transactions that need it abort or park, and
/// the others go on.
pub(crate) fn connect_all(fabric: &dyn Fabric, nodes: usize) -> Result<Links> {
    let endpoints = (0..nodes)
        .map(|node| connect_one(fabric, node))
        .collect::<Vec<_>>();
    let scratch = fabric.register(
        Backing::Anonymous {
            len: scratch_bytes(nodes),
        },
        Access::LOCAL_WRITE,
    )?;
    Ok(Links { endpoints, scratch })
}

/// An endpoint to `node`, or one whose every post fails when it cannot be
/// reached now.
pub(crate) fn connect_one(fabric: &dyn Fabric, node: usize) -> Box<dyn Endpoint> {
    let peer = NodeId(node as u16);
    fabric
        .connect(peer)
        .unwrap_or_else(|_| Box::new(Unreachable { peer }))
}

/// The endpoint to a peer that could not be connected.
struct Unreachable {
    peer: NodeId,
}

impl Endpoint for Unreachable {
    fn peer(&self) -> NodeId {
        self.peer
    }

    fn post(&mut self, _: &[rdma_transport::Op]) -> rdma_transport::error::Result<()> {
        Err(rdma_transport::Error::PeerUnreachable { node: self.peer })
    }

    fn wait(&mut self, _: std::time::Duration) -> rdma_transport::error::Result<()> {
        Ok(())
    }

    fn outstanding(&self) -> usize {
        0
    }

    fn remote_regions(
        &mut self,
    ) -> rdma_transport::error::Result<Vec<rdma_transport::op::RemoteRegion>> {
        Err(rdma_transport::Error::PeerUnreachable { node: self.peer })
    }
}

#[derive(Default)]
pub(crate) struct ContextPool {
    idle: Mutex<Vec<Context>>,
    made: Mutex<usize>,
}

impl ContextPool {
    /// An idle context, or a new one (node `node` of `nodes`) holding
    /// `view()`, read after the view serial `view_serial` was.
    ///
    /// # Errors
    /// [`Error::TooManyContexts`] when [`CONTEXTS_MAX`] are in use; the
    /// fabric's error when connecting fails.
    pub(crate) fn take(
        &self,
        node: usize,
        fabric: &dyn Fabric,
        nodes: usize,
        view_serial: u64,
        view: impl FnOnce() -> Arc<View>,
    ) -> Result<Context> {
        if let Some(context) = self.take_idle() {
            return Ok(context);
        }
        let index = {
            let mut made = self.made.lock().expect("context pool lock");
            if *made >= CONTEXTS_MAX {
                return Err(Error::TooManyContexts {
                    node,
                    max: CONTEXTS_MAX,
                });
            }
            *made += 1;
            *made - 1
        };
        let Links { endpoints, scratch } = connect_all(fabric, nodes)?;
        Ok(Context {
            index,
            endpoints,
            scratch,
            sequence: 0,
            record: Vec::with_capacity(RECORD_BYTES_MAX),
            view: view(),
            view_serial,
            generations: vec![0; nodes],
        })
    }

    /// A pooled context, if one is idle (never makes one).
    pub(crate) fn take_idle(&self) -> Option<Context> {
        self.idle.lock().expect("context pool lock").pop()
    }

    pub(crate) fn give_back(&self, context: Context) {
        self.idle.lock().expect("context pool lock").push(context);
    }
}
