//! Restart after every node process died at once (kill -9 of the whole
//! cluster): nothing acknowledged may be lost.
//!
//! What survives is what FaRM keeps in non-volatile memory: the region
//! files and the rings, whose records stay until retired (a LOCK until its
//! transaction committed or aborted at this primary, a COMMIT-BACKUP until
//! truncated). A restarting node
//! 1. replays each incoming ring from its persisted retired position, as
//!    the server would have (LOCKs are re-taken or found taken, COMMIT-PRIMARY
//!    installs, ABORT unlocks, TRUNCATE applies backups); replay is
//!    idempotent because every install is version-guarded;
//! 2. shares its evidence of commit with the others: the transactions
//!    whose COMMIT-BACKUP it holds and whose COMMIT-PRIMARY it saw. A
//!    coordinator writes COMMIT-BACKUP only after every lock was granted
//!    and validation passed, so any such record means "committed" (FaRM
//!    SOSP'15 §5.3);
//! 3. decides every LOCK still in doubt by that evidence (install or
//!    unlock), applies every COMMIT-BACKUP it holds, and clears its rings;
//! 4. once every primary has decided, copies each region it backs from the
//!    primary (a backup may lack a COMMIT-BACKUP of a transaction that
//!    committed through another replica's evidence).
//!
//! An acknowledged commit had every COMMIT-BACKUP and at least one
//! COMMIT-PRIMARY in a ring, so step 2 finds it and step 3 installs it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdma_transport::{MemoryRegion, NodeId, Op, RemoteAddr};

use crate::error::{Error, Result};
use crate::node::{
    install_if_newer, parse_entries, unlock_entry, Entry, NodeShared, READ_AREA_BYTES,
};
use crate::record::{self, Kind, PayloadReader};
use crate::region;
use crate::ring::{Polled, RingReceiver};

/// What replaying the rings left undecided.
pub struct Replayed {
    locks: HashMap<u64, Vec<Entry>>,
    backups: HashMap<u64, Vec<Entry>>,
    committed: HashSet<u64>,
    receivers: Vec<RingReceiver>,
    pub records: u64,
}

/// Takes the locks of a replayed LOCK: already ours (taken before the
/// crash) or free at the expected version. Anything else means the LOCK was
/// refused or its transaction already finished here: no lock then.
fn relock(replicas: &[Option<Arc<MemoryRegion>>], entries: &[Entry]) -> Result<bool> {
    let mut taken = Vec::new();
    for entry in entries {
        let word = region::header_word(
            crate::node::replica_of(replicas, entry.addr)?,
            entry.addr.offset(),
        )?;
        let free = entry.expected.with_lock(false).encode();
        let ours = entry.expected.with_lock(true).encode();
        let now = word.load(Ordering::Acquire);
        if now == ours {
            continue;
        }
        if now == free
            && word
                .compare_exchange(free, ours, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            taken.push(entry);
            continue;
        }
        // Refused: give back what this replay took (locks found taken
        // before the crash belong to this LOCK too, so release them all).
        for entry in entries {
            let word = region::header_word(
                crate::node::replica_of(replicas, entry.addr)?,
                entry.addr.offset(),
            )?;
            let _ = word.compare_exchange(ours, free, Ordering::AcqRel, Ordering::Acquire);
        }
        return Ok(false);
    }
    Ok(true)
}

/// Step 1: replays every incoming ring of this node.
pub fn replay(
    nodes: usize,
    inbox: &Arc<MemoryRegion>,
    replicas: &[Option<Arc<MemoryRegion>>],
) -> Result<Replayed> {
    let mut replayed = Replayed {
        locks: HashMap::new(),
        backups: HashMap::new(),
        committed: HashSet::new(),
        receivers: Vec::new(),
        records: 0,
    };
    let mut buffer = Vec::new();
    for sender in 0..nodes {
        let mut receiver = RingReceiver::new(sender, inbox.clone());
        loop {
            let position = match receiver.poll(&mut buffer) {
                Ok(Polled::Record { position, .. }) => position,
                // The end of what the dead sender completed. A record that
                // does not parse gets a grace period in `poll`; with the
                // sender dead it will not complete, so wait it out once.
                Ok(Polled::Empty) => {
                    std::thread::sleep(crate::ring::CORRUPT_GRACE / 4);
                    match receiver.poll(&mut buffer) {
                        Ok(Polled::Record { position, .. }) => position,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
            replayed.records += 1;
            let parsed = record::parse(&buffer, position)
                .map_err(|why| Error::RingCorrupt(why.to_string()))?;
            let txid = parsed.txid;
            let malformed = |why: &str| {
                Error::RingCorrupt(format!("replaying the ring from node {sender}: {why}"))
            };
            match parsed.kind {
                Kind::Lock => {
                    let entries = parse_entries(parsed.payload).map_err(malformed)?;
                    if relock(replicas, &entries)? {
                        replayed.locks.insert(txid, entries);
                    }
                }
                Kind::CommitPrimary => {
                    replayed.committed.insert(txid);
                    if let Some(entries) = replayed.locks.remove(&txid) {
                        for entry in &entries {
                            install_if_newer(replicas, entry)?;
                        }
                    }
                }
                Kind::Abort => {
                    if let Some(entries) = replayed.locks.remove(&txid) {
                        for entry in &entries {
                            unlock_entry(replicas, entry)?;
                        }
                    }
                }
                Kind::CommitBackup => {
                    replayed
                        .backups
                        .insert(txid, parse_entries(parsed.payload).map_err(malformed)?);
                }
                Kind::Truncate => {
                    let mut reader = PayloadReader::new(parsed.payload);
                    let count = reader.u64().map_err(malformed)?;
                    for _ in 0..count {
                        let truncated = reader.u64().map_err(malformed)?;
                        replayed.committed.insert(truncated);
                        if let Some(entries) = replayed.backups.remove(&truncated) {
                            for entry in &entries {
                                install_if_newer(replicas, entry)?;
                            }
                        }
                    }
                }
                Kind::LockReply | Kind::Pad => {}
            }
        }
        replayed.receivers.push(receiver);
    }
    Ok(replayed)
}

impl Replayed {
    /// Step 2: the transactions this node knows committed.
    pub fn evidence(&self) -> Vec<u64> {
        let mut evidence: Vec<u64> = self
            .committed
            .iter()
            .chain(self.backups.keys())
            .copied()
            .collect();
        evidence.sort_unstable();
        evidence.dedup();
        evidence
    }

    /// Locks still in doubt after the replay.
    pub fn in_doubt(&self) -> usize {
        self.locks.len()
    }

    /// Step 3: decides the LOCKs in doubt by the cluster's evidence,
    /// applies held COMMIT-BACKUPs, clears the rings. Returns, per sender,
    /// the ring position it resumes at.
    pub fn resolve(
        mut self,
        evidence: &HashSet<u64>,
        replicas: &[Option<Arc<MemoryRegion>>],
    ) -> Result<Vec<u64>> {
        for (txid, entries) in self.locks.drain() {
            for entry in &entries {
                if evidence.contains(&txid) {
                    install_if_newer(replicas, entry)?;
                } else {
                    unlock_entry(replicas, entry)?;
                }
            }
        }
        for (_, entries) in self.backups.drain() {
            for entry in &entries {
                install_if_newer(replicas, entry)?;
            }
        }
        for replica in replicas.iter().flatten() {
            replica.flush()?;
        }
        Ok(self
            .receivers
            .iter_mut()
            .map(RingReceiver::reset_after_recovery)
            .collect())
    }
}

/// Step 4: copies every region this node backs from its primary, with
/// one-sided READs. Runs before any transaction starts.
pub fn copy_from_primaries(node: &Arc<NodeShared>) -> Result<()> {
    let mut context = node.take_context()?;
    let result = (|| {
        for region_id in 0..node.placement.regions() as u16 {
            if !node
                .placement
                .backups(region_id)
                .any(|backup| backup == node.id)
            {
                continue;
            }
            let primary = node.placement.primary(region_id);
            let key =
                node.directory().region_keys[primary][usize::from(region_id)].ok_or_else(|| {
                    Error::Config(format!("node {primary} has no key for region {region_id}"))
                })?;
            let replica = node.replicas[usize::from(region_id)]
                .as_ref()
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
