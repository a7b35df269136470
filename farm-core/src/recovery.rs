//! Restart after every node process died at once (kill -9 of the whole
//! cluster, a power loss): nothing acknowledged may be lost.
//!
//! What survives is what FaRM keeps in non-volatile memory: the region
//! files and the rings, whose records stay until retired (a LOCK until its
//! transaction committed or aborted at this primary, a COMMIT-BACKUP until
//! truncated). A restarting node
//! 1. replays each incoming ring from its persisted retired position
//!    through the participant's handlers in replay mode
//!    ([`crate::participant::Mode::Replay`]): LOCKs are re-taken or found
//!    taken, COMMIT-PRIMARY installs, ABORT unlocks, TRUNCATE applies
//!    backups; replay is idempotent because every install is
//!    version-guarded;
//! 2. shares its evidence of commit with the others: the transactions
//!    whose COMMIT-BACKUP it holds and whose COMMIT-PRIMARY or TRUNCATE it
//!    saw (a coordinator writes COMMIT-BACKUP only after every lock was
//!    granted and validation passed, so any such record means
//!    "committed", FaRM SOSP'15 §5.3);
//! 3. decides every LOCK still in doubt by that evidence (install or
//!    unlock), applies every COMMIT-BACKUP it holds, and clears its rings;
//! 4. once every primary has decided, copies each region it backs from the
//!    primary (a backup may lack a COMMIT-BACKUP of a transaction that
//!    committed through another replica's evidence).
//!
//! An acknowledged commit had every COMMIT-BACKUP and at least one
//! COMMIT-PRIMARY in a ring, so step 2 finds it and step 3 installs it.
//! This module walks rings and moves evidence; what a record means is the
//! participant's alone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdma_transport::{MemoryRegion, NodeId, Op, RemoteAddr};

use crate::config::Faults;
use crate::error::Result;
use crate::node::contexts::READ_AREA_BYTES;
use crate::node::NodeShared;
use crate::participant::{Env, Incoming, Mode, Participant};
use crate::region::Replicas;
use crate::ring::{Polled, RingReceiver, CORRUPT_GRACE};
use crate::txn_id::TxnId;

/// What replaying the rings left undecided.
pub(crate) struct Replayed {
    participant: Participant,
    receivers: Vec<RingReceiver>,
    pub(crate) records: u64,
}

fn env(replicas: &Replicas) -> Env<'_> {
    Env {
        replicas,
        allocators: None,
        faults: Faults::default(),
        stats: None,
    }
}

/// Step 1: replays every incoming ring of this node (in a cluster of
/// `nodes` nodes, in `configuration`).
///
/// # Errors
/// A record that decodes but names what this node cannot hold
/// ([`crate::Error::Corrupt`]); memory errors.
pub(crate) fn replay(
    nodes: usize,
    configuration: u32,
    inbox: &Arc<MemoryRegion>,
    replicas: &Replicas,
) -> Result<Replayed> {
    let mut replayed = Replayed {
        participant: Participant::new(Mode::Replay, configuration),
        receivers: Vec::new(),
        records: 0,
    };
    let env = env(replicas);
    let mut buffer = Vec::new();
    for sender in 0..nodes {
        let mut receiver = RingReceiver::new(sender, inbox.clone());
        loop {
            let mut polled = receiver.poll(&mut buffer);
            if matches!(polled, Ok(Polled::Empty)) {
                // The end of what the dead sender completed. A record that
                // does not decode gets a grace period in `poll`; with the
                // sender dead it will not complete, so wait it out once.
                std::thread::sleep(CORRUPT_GRACE / 4);
                polled = receiver.poll(&mut buffer);
            }
            let Ok(Polled::Record { position, record }) = polled else {
                break;
            };
            replayed.records += 1;
            let incoming = Incoming {
                ring: sender,
                position,
                record,
            };
            replayed.participant.step(&env, &incoming)?;
        }
        replayed.receivers.push(receiver);
    }
    Ok(replayed)
}

impl Replayed {
    /// Step 2: the transactions this node knows committed.
    pub(crate) fn evidence(&self) -> Vec<TxnId> {
        self.participant.evidence()
    }

    /// Locks still in doubt after the replay.
    pub(crate) fn in_doubt(&self) -> usize {
        self.participant.in_doubt()
    }

    /// Step 3: decides the LOCKs in doubt by the cluster's evidence,
    /// applies held COMMIT-BACKUPs, clears the rings. Returns, per sender,
    /// the ring position it resumes at.
    pub(crate) fn resolve(
        mut self,
        evidence: &HashSet<TxnId>,
        replicas: &Replicas,
    ) -> Result<Vec<u64>> {
        self.participant.resolve(&env(replicas), evidence)?;
        replicas.flush()?;
        Ok(self
            .receivers
            .iter_mut()
            .map(RingReceiver::reset_after_recovery)
            .collect())
    }
}

/// Step 4: copies every region this node backs from its primary, with
/// one-sided READs. Runs before any transaction starts.
///
/// # Errors
/// The fabric's, when a primary cannot be read.
pub(crate) fn copy_from_primaries(node: &NodeShared) -> Result<()> {
    let mut context = node.take_context()?;
    let result = (|| {
        let view = context.view.clone();
        for region in 0..view.config.regions() as u16 {
            if !view.config.backups(region).any(|backup| backup == node.id) {
                continue;
            }
            let primary = view.config.primary(region);
            let key = view.directory.region_key(primary, region)?;
            let replica = node
                .replicas
                .get(region)
                .expect("a backup holds its region");
            let mut chunk = vec![0u8; READ_AREA_BYTES as usize];
            let mut offset = 0;
            while offset < replica.len() {
                let len = (replica.len() - offset).min(READ_AREA_BYTES);
                let op = Op::Read {
                    local: context.scratch.slice(0, len as u32)?,
                    remote: RemoteAddr {
                        node: NodeId(primary as u16),
                        key,
                        offset,
                    },
                };
                context.endpoints[primary].execute(&[op], Duration::from_secs(30))?;
                context.scratch.read(0, &mut chunk[..len as usize])?;
                replica.write(offset, &chunk[..len as usize])?;
                offset += len;
            }
        }
        Ok(())
    })();
    node.return_context(context);
    result
}
