//! Addresses and work requests.

use std::fmt;
use std::sync::Arc;

use crate::access::Access;
use crate::error::{Error, Result};
use crate::mr::MemoryRegion;

/// A node of the cluster. FaRM's clusters are up to a few hundred machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A byte of a peer's registered memory: which node, which registration
/// (its remote key), and the offset inside that registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RemoteAddr {
    pub node: NodeId,
    pub key: u32,
    pub offset: u64,
}

impl RemoteAddr {
    pub fn offset_by(self, bytes: u64) -> RemoteAddr {
        RemoteAddr {
            offset: self.offset + bytes,
            ..self
        }
    }
}

/// A range of local registered memory, the source or target of a work
/// request. It keeps its registration alive: an endpoint holds the slices of
/// the requests it has posted until their completion has been polled, so the
/// memory cannot go away under the NIC.
#[derive(Clone)]
pub struct LocalSlice {
    pub mr: Arc<MemoryRegion>,
    pub offset: u64,
    pub len: u32,
}

impl fmt::Debug for LocalSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LocalSlice(lkey {:#x}, {}+{})",
            self.mr.lkey(),
            self.offset,
            self.len
        )
    }
}

/// One work request. Atomics take an 8-byte local slice that receives the
/// value the remote word held before the operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// One-sided RDMA READ of `local.len` bytes from `remote` into `local`.
    Read {
        local: LocalSlice,
        remote: RemoteAddr,
    },
    /// One-sided RDMA WRITE of `local` to `remote`.
    Write {
        local: LocalSlice,
        remote: RemoteAddr,
    },
    /// A WRITE that also wakes the receiver if it is blocked in
    /// [`crate::Fabric::wait_notified`] (verbs: RDMA WRITE_WITH_IMM; shm: a
    /// futex on the receiver's doorbell). The data is visible to the receiver
    /// when it wakes.
    WriteNotify {
        local: LocalSlice,
        remote: RemoteAddr,
    },
    /// 8-byte compare-and-swap: if the remote word equals `expected` it
    /// becomes `swap`; the old value lands in `local`.
    CompareSwap {
        local: LocalSlice,
        remote: RemoteAddr,
        expected: u64,
        swap: u64,
    },
    /// 8-byte fetch-and-add (wrapping); the old value lands in `local`.
    FetchAdd {
        local: LocalSlice,
        remote: RemoteAddr,
        add: u64,
    },
}

/// What a peer advertised about one of its registrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    pub key: u32,
    /// The registration's base address in the peer's address space (verbs
    /// needs it; shm ignores it).
    pub addr: u64,
    pub len: u64,
    pub access: Access,
}

impl Op {
    pub fn local(&self) -> &LocalSlice {
        match self {
            Op::Read { local, .. }
            | Op::Write { local, .. }
            | Op::WriteNotify { local, .. }
            | Op::CompareSwap { local, .. }
            | Op::FetchAdd { local, .. } => local,
        }
    }

    pub fn remote(&self) -> RemoteAddr {
        match self {
            Op::Read { remote, .. }
            | Op::Write { remote, .. }
            | Op::WriteNotify { remote, .. }
            | Op::CompareSwap { remote, .. }
            | Op::FetchAdd { remote, .. } => *remote,
        }
    }

    fn is_atomic(&self) -> bool {
        matches!(self, Op::CompareSwap { .. } | Op::FetchAdd { .. })
    }

    /// What the target registration must grant.
    pub fn remote_access_needed(&self) -> Access {
        match self {
            Op::Read { .. } => Access::REMOTE_READ,
            Op::Write { .. } | Op::WriteNotify { .. } => Access::REMOTE_WRITE,
            Op::CompareSwap { .. } | Op::FetchAdd { .. } => Access::REMOTE_ATOMIC,
        }
    }

    /// What the local registration must grant: the NIC writes into the
    /// target of a READ and the result of an atomic.
    pub fn local_access_needed(&self) -> Access {
        match self {
            Op::Read { .. } | Op::CompareSwap { .. } | Op::FetchAdd { .. } => Access::LOCAL_WRITE,
            Op::Write { .. } | Op::WriteNotify { .. } => Access::NONE,
        }
    }

    /// Checks everything that can be checked before posting: the peer, the
    /// local range and its access, atomics' size and alignment, and the
    /// remote range against what the peer advertised. Both backends call it,
    /// so they reject exactly the same requests.
    pub fn validate(&self, peer: NodeId, target: &RemoteRegion) -> Result<()> {
        let local = self.local();
        let remote = self.remote();
        if remote.node != peer {
            return Err(Error::WrongPeer {
                peer,
                addressed: remote.node,
            });
        }
        let len = u64::from(local.len);
        if self.is_atomic() {
            if local.len != 8 {
                return Err(Error::InvalidArgument(format!(
                    "an atomic operation needs an 8-byte local slice, got {} bytes",
                    local.len
                )));
            }
            if !remote.offset.is_multiple_of(8)
                || !target.addr.wrapping_add(remote.offset).is_multiple_of(8)
                || !local.offset.is_multiple_of(8)
            {
                return Err(Error::Misaligned {
                    offset: remote.offset,
                    local_offset: local.offset,
                });
            }
        }
        let local_len = local.mr.len();
        if local
            .offset
            .checked_add(len)
            .is_none_or(|end| end > local_len)
        {
            return Err(Error::LocalOutOfRange {
                offset: local.offset,
                len,
                region_len: local_len,
            });
        }
        let local_needed = self.local_access_needed();
        if !local.mr.access().contains(local_needed) {
            return Err(Error::LocalPermission {
                needed: local_needed,
                granted: local.mr.access(),
            });
        }
        if remote
            .offset
            .checked_add(len)
            .is_none_or(|end| end > target.len)
        {
            return Err(Error::RemoteOutOfRange {
                node: remote.node,
                key: remote.key,
                offset: remote.offset,
                len,
                region_len: target.len,
            });
        }
        let needed = self.remote_access_needed();
        if !target.access.contains(needed) {
            return Err(Error::RemotePermission {
                node: remote.node,
                key: remote.key,
                needed,
                granted: target.access,
            });
        }
        Ok(())
    }
}
