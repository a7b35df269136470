//! The pool of transaction contexts of a node: what a transaction needs to
//! talk to the cluster (one endpoint per node, registered scratch memory
//! for READs and for staging records), made on first use and reused.
//! [`CONTEXTS_MAX`] bounds them, and with them the transactions a node
//! runs at once.

use std::sync::{Arc, Mutex};

use rdma_transport::{Access, Backing, Endpoint, Fabric, MemoryRegion, NodeId};

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
}

/// A thread's links to every node: one endpoint per node, and registered
/// scratch memory for them.
pub(crate) struct Links {
    pub(crate) endpoints: Vec<Box<dyn Endpoint>>,
    pub(crate) scratch: Arc<MemoryRegion>,
}

/// Endpoints to every node of `nodes`, and scratch memory for them.
pub(crate) fn connect_all(fabric: &dyn Fabric, nodes: usize) -> Result<Links> {
    let endpoints = (0..nodes)
        .map(|node| fabric.connect(NodeId(node as u16)))
        .collect::<Result<Vec<_>, _>>()?;
    let scratch = fabric.register(
        Backing::Anonymous {
            len: scratch_bytes(nodes),
        },
        Access::LOCAL_WRITE,
    )?;
    Ok(Links { endpoints, scratch })
}

#[derive(Default)]
pub(crate) struct ContextPool {
    idle: Mutex<Vec<Context>>,
    made: Mutex<usize>,
}

impl ContextPool {
    /// An idle context, or a new one (node `node` of `nodes`).
    ///
    /// # Errors
    /// [`Error::TooManyContexts`] when [`CONTEXTS_MAX`] are in use; the
    /// fabric's error when connecting fails.
    pub(crate) fn take(&self, node: usize, fabric: &dyn Fabric, nodes: usize) -> Result<Context> {
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
