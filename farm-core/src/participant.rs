//! The participant's side of FaRM's commit protocol (SOSP'15 §4): what a
//! primary or a backup does with each record a coordinator appends to its
//! ring. One handler per record kind:
//!
//! | record | handler | at | effect |
//! | --- | --- | --- | --- |
//! | LOCK | [`Participant::on_lock`] | primary | CAS-lock every object at the version read; answer yes or no |
//! | COMMIT-BACKUP | [`Participant::on_commit_backup`] | backup | keep the new values until TRUNCATE |
//! | COMMIT-PRIMARY | [`Participant::on_commit_primary`] | primary | install the locked writes, bump versions, unlock |
//! | ABORT | [`Participant::on_abort`] | primary | release the locks of the LOCK |
//! | TRUNCATE | [`Participant::on_truncate`] | backup | apply the kept values; forget them |
//!
//! [`Participant::step`] is the one table from record kinds to handlers;
//! the server ([`crate::server`]) and restart recovery
//! ([`crate::recovery`]) both go through it. In [`Mode::Replay`] (after a
//! restart, replaying the rings that survived in the inbox file) the
//! handlers send no answers, find locks taken before the crash or take
//! them again, and remember which transactions are known to have
//! committed. Handlers never send: they say what the caller must do in
//! [`Effects`] (retire records, answer a LOCK).
//!
//! Every handler first checks that the record came from where it says:
//! its sender is the ring's sender, its transaction is that node's, and
//! it is of this node's configuration. A record that passed its checksum
//! but fails these, or names an object this node cannot hold, is corrupt:
//! it is reported and never applied.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::allocator::Allocators;
use crate::codec::object;
use crate::codec::record::{Entry, Kind, Record};
use crate::codec::DecodeError;
use crate::config::Faults;
use crate::error::{Error, Result};
use crate::node::NodeStats;
use crate::reconfiguration::Held;
use crate::region::{check_slot, class_bytes, Replicas};
use crate::txn_id::TxnId;

/// How the handlers act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A serving node: answer LOCKs, install at COMMIT-PRIMARY.
    Serve,
    /// Replaying surviving rings after a restart: no answers, locks
    /// re-taken or found, every install version-guarded (replay is
    /// idempotent), committed transactions remembered as evidence.
    Replay,
}

/// What a handler asks of its caller once it returns.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Records now retired: (ring, position).
    pub(crate) retire: Vec<(usize, u64)>,
    /// The answer to a LOCK: (coordinator, transaction, granted).
    pub(crate) reply: Option<(usize, TxnId, bool)>,
}

/// What the handlers act on.
pub(crate) struct Env<'a> {
    pub(crate) replicas: &'a Replicas,
    /// A serving primary's allocators: committed frees give slots back.
    pub(crate) allocators: Option<&'a Allocators>,
    pub(crate) faults: Faults,
    pub(crate) stats: Option<&'a NodeStats>,
}

/// A record as it came: from the ring of node `ring`, at `position`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Incoming<'a> {
    pub(crate) ring: usize,
    pub(crate) position: u64,
    pub(crate) record: Record<'a>,
}

impl Incoming<'_> {
    fn corrupt(&self, source: DecodeError) -> Error {
        corrupt(self.ring, self.position, source)
    }
}

/// A LOCK this node granted, kept until COMMIT-PRIMARY or ABORT.
struct PendingLock {
    ring: usize,
    position: u64,
    /// Every region the transaction writes (for recovery).
    regions: Vec<u16>,
    entries: Vec<Entry>,
    /// False under the `skip_lock` fault: nothing to unlock then.
    locked: bool,
}

/// A COMMIT-BACKUP kept until TRUNCATE.
struct PendingBackup {
    ring: usize,
    position: u64,
    regions: Vec<u16>,
    entries: Vec<Entry>,
}

/// A participant's state: the LOCKs and COMMIT-BACKUPs it holds.
pub(crate) struct Participant {
    mode: Mode,
    configuration: u32,
    locks: HashMap<TxnId, PendingLock>,
    backups: HashMap<TxnId, PendingBackup>,
    /// Replay only: transactions known to have committed (a COMMIT-PRIMARY
    /// or a TRUNCATE was seen).
    committed: HashSet<TxnId>,
    /// The last [`TRUNCATED_REMEMBERED`] transactions each coordinator
    /// truncated here: evidence of commit for recovery once their
    /// COMMIT-BACKUP is gone from this node (see [`Participant::held`]).
    truncated: HashMap<usize, std::collections::VecDeque<TxnId>>,
    effects: Effects,
    /// Emptied entry lists and payload buffers of finished LOCKs and
    /// COMMIT-BACKUPs, for the next records. A record is decoded by
    /// whichever thread polls the ring (a client thread helping, or the
    /// server) and freed by another at COMMIT-PRIMARY or TRUNCATE; with
    /// malloc that free queued on the decoding thread's arena lock
    /// (SmallBank, `perf record -e sched:sched_switch`). Reused here,
    /// they are allocated once.
    spare: Spare,
}

/// See [`Participant::spare`]: at most [`SPARE_MAX`] of each.
#[derive(Default)]
struct Spare {
    entries: Vec<Vec<Entry>>,
    payloads: Vec<Vec<u8>>,
    regions: Vec<Vec<u16>>,
}

const SPARE_MAX: usize = 1024;

impl Spare {
    /// Keeps what `entries` and `regions` hold, emptied.
    fn keep(&mut self, mut entries: Vec<Entry>, mut regions: Vec<u16>) {
        for entry in entries.drain(..) {
            if self.payloads.len() < SPARE_MAX {
                self.payloads.push(entry.payload);
            }
        }
        if self.entries.len() < SPARE_MAX {
            self.entries.push(entries);
        }
        regions.clear();
        if self.regions.len() < SPARE_MAX {
            self.regions.push(regions);
        }
    }
}

/// Truncated transactions a participant remembers per coordinator: more
/// than one TRUNCATE pass of a coordinator holds (they are at most a few
/// records of [`crate::codec::record::TRUNCATE_TXIDS_MAX`] each), so a
/// coordinator that dies in the middle of a pass leaves its evidence.
pub(crate) const TRUNCATED_REMEMBERED: usize = 4096;

fn corrupt(ring: usize, position: u64, source: DecodeError) -> Error {
    Error::Corrupt {
        what: format!("record in the ring from node {ring} at position {position}"),
        source,
    }
}

impl Participant {
    pub(crate) fn new(mode: Mode, configuration: u32) -> Participant {
        Participant {
            mode,
            configuration,
            locks: HashMap::new(),
            backups: HashMap::new(),
            committed: HashSet::new(),
            truncated: HashMap::new(),
            effects: Effects::default(),
            spare: Spare::default(),
        }
    }

    /// Forgets everything about transactions `coordinator` coordinated: it
    /// rejoined as a new incarnation whose transaction ids start again
    /// (its old transactions were all decided when it was removed).
    pub(crate) fn forget_coordinator(&mut self, coordinator: usize) {
        self.truncated.remove(&coordinator);
        self.locks.retain(|txid, _| txid.node() != coordinator);
        self.backups.retain(|txid, _| txid.node() != coordinator);
        self.committed.retain(|txid| txid.node() != coordinator);
    }

    /// The configuration whose records it takes.
    pub(crate) fn configuration(&self) -> u32 {
        self.configuration
    }

    /// Takes records of configuration `id` from now on.
    pub(crate) fn set_configuration(&mut self, id: u32) {
        self.configuration = id;
    }

    /// What the last handler asked for.
    pub(crate) fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Handles one record from the ring of `ring` at `position`: the table
    /// from record kinds to handlers.
    pub(crate) fn step(&mut self, env: &Env, incoming: &Incoming) -> Result<()> {
        self.effects.retire.clear();
        self.effects.reply = None;
        if let Some(stats) = env.stats {
            stats.records_processed.fetch_add(1, Ordering::Relaxed);
        }
        if incoming.record.configuration < self.configuration {
            // Sent in an earlier configuration and arriving after this node
            // applied a newer one (FaRM SOSP'15 §5.2: records of a stale
            // configuration are ignored): retired unread, counted.
            if let Some(stats) = env.stats {
                stats.stale_records.fetch_add(1, Ordering::Relaxed);
            }
            self.retire(incoming.ring, incoming.position);
            return Ok(());
        }
        match incoming.record.kind {
            Kind::Lock => self.on_lock(env, incoming),
            Kind::CommitBackup => self.on_commit_backup(env, incoming),
            Kind::CommitPrimary => self.on_commit_primary(env, incoming),
            Kind::Abort => self.on_abort(env, incoming),
            Kind::Truncate => self.on_truncate(env, incoming),
            // The ring skips PADs, and `Record::decode` refuses one.
            Kind::Pad => Err(incoming.corrupt(DecodeError::Invalid {
                what: "record",
                why: "a PAD where a record was expected",
            })),
        }
    }

    /// The record came from where it says, in this configuration.
    fn check_origin(&self, incoming: &Incoming) -> Result<()> {
        let Incoming { ring, record, .. } = *incoming;
        let why = if record.sender != ring {
            "its sender is not the node whose ring it is in"
        } else if record.configuration != self.configuration {
            "it is of another configuration"
        } else if record.kind != Kind::Truncate && record.txid.node() != ring {
            "its transaction is not coordinated by its sender"
        } else if record.kind != Kind::Truncate && !record.txid.is_valid() {
            "its transaction id names no context"
        } else {
            return Ok(());
        };
        Err(incoming.corrupt(DecodeError::Invalid {
            what: "record",
            why,
        }))
    }

    /// The object writes of a LOCK or COMMIT-BACKUP, each naming a slot of
    /// a region this node holds, with a payload that fits the slot.
    fn entries(&mut self, env: &Env, incoming: &Incoming) -> Result<Vec<Entry>> {
        let region_bytes = env.replicas.region_bytes();
        let mut entries = self.spare.entries.pop().unwrap_or_default();
        for entry in incoming.record.entries().map_err(|e| incoming.corrupt(e))? {
            let entry = entry.map_err(|e| incoming.corrupt(e))?;
            let why = if env.replicas.get(entry.addr.region()).is_none() {
                Some("names a region this node holds no replica of")
            } else if let Err(why) = check_slot(entry.addr, region_bytes) {
                Some(why)
            } else if entry.payload.len() > object::capacity(class_bytes(entry.addr.class())) {
                Some("its payload exceeds its slot")
            } else if entry.expected.locked || entry.new.locked {
                Some("carries a locked header")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(incoming.corrupt(DecodeError::Invalid {
                    what: "record entry",
                    why,
                }));
            }
            let mut payload = self.spare.payloads.pop().unwrap_or_default();
            payload.clear();
            payload.extend_from_slice(entry.payload);
            entries.push(Entry {
                addr: entry.addr,
                expected: entry.expected,
                new: entry.new,
                payload,
            });
        }
        Ok(entries)
    }

    /// The regions a LOCK or COMMIT-BACKUP says its transaction writes.
    fn regions(&mut self, incoming: &Incoming) -> Result<Vec<u16>> {
        let mut regions = self.spare.regions.pop().unwrap_or_default();
        regions.extend(incoming.record.regions().map_err(|e| incoming.corrupt(e))?);
        Ok(regions)
    }

    fn retire(&mut self, ring: usize, position: u64) {
        self.effects.retire.push((ring, position));
    }

    /// LOCK (SOSP'15 §4 step 1): lock every written object at the version
    /// the coordinator read, all or nothing, and answer. Replay: take the
    /// locks again (or find them taken before the crash); no answer.
    pub(crate) fn on_lock(&mut self, env: &Env, incoming: &Incoming) -> Result<()> {
        self.check_origin(incoming)?;
        let (ring, record) = (incoming.ring, incoming.record);
        if let Some(stats) = env.stats {
            stats.lock_records.fetch_add(1, Ordering::Relaxed);
        }
        let entries = self.entries(env, incoming)?;
        let (granted, locked) = match self.mode {
            Mode::Serve if env.faults.skip_lock => (true, false),
            Mode::Serve => {
                let granted = env.replicas.try_lock(&entries)?;
                (granted, granted)
            }
            Mode::Replay => {
                let granted = env.replicas.relock(&entries)?;
                (granted, granted)
            }
        };
        if granted {
            let regions = self.regions(incoming)?;
            self.locks.insert(
                record.txid,
                PendingLock {
                    ring,
                    position: incoming.position,
                    regions,
                    entries,
                    locked,
                },
            );
        } else {
            self.spare.keep(entries, Vec::new());
            self.retire(ring, incoming.position);
        }
        if self.mode == Mode::Serve {
            self.effects.reply = Some((ring, record.txid, granted));
        }
        Ok(())
    }

    /// COMMIT-BACKUP (step 3): keep the new values until TRUNCATE. The
    /// backup's CPU only files it; the coordinator waited for the fabric's
    /// acknowledgement alone.
    pub(crate) fn on_commit_backup(&mut self, env: &Env, incoming: &Incoming) -> Result<()> {
        self.check_origin(incoming)?;
        let (ring, record) = (incoming.ring, incoming.record);
        let entries = self.entries(env, incoming)?;
        let regions = self.regions(incoming)?;
        self.backups.insert(
            record.txid,
            PendingBackup {
                ring,
                position: incoming.position,
                regions,
                entries,
            },
        );
        Ok(())
    }

    /// COMMIT-PRIMARY (step 4): install the writes locked by the
    /// transaction's LOCK, with new versions, and unlock them.
    pub(crate) fn on_commit_primary(&mut self, env: &Env, incoming: &Incoming) -> Result<()> {
        self.check_origin(incoming)?;
        let (ring, record) = (incoming.ring, incoming.record);
        if self.mode == Mode::Replay {
            self.committed.insert(record.txid);
        }
        self.install_locked(env, record.txid)?;
        self.retire(ring, incoming.position);
        Ok(())
    }

    /// ABORT: release the locks of the transaction's LOCK, leaving the
    /// objects as they were.
    pub(crate) fn on_abort(&mut self, env: &Env, incoming: &Incoming) -> Result<()> {
        self.check_origin(incoming)?;
        let (ring, record) = (incoming.ring, incoming.record);
        self.release_locked(env, record.txid)?;
        self.retire(ring, incoming.position);
        Ok(())
    }

    /// TRUNCATE (step 5): the named transactions are done everywhere:
    /// apply their COMMIT-BACKUP values and forget them.
    pub(crate) fn on_truncate(&mut self, env: &Env, incoming: &Incoming) -> Result<()> {
        self.check_origin(incoming)?;
        let (ring, record) = (incoming.ring, incoming.record);
        let truncated = record.truncated().map_err(|e| incoming.corrupt(e))?;
        for txid in truncated {
            if txid.node() != ring {
                return Err(incoming.corrupt(DecodeError::Invalid {
                    what: "TRUNCATE",
                    why: "names a transaction its sender did not coordinate",
                }));
            }
            if self.mode == Mode::Replay {
                self.committed.insert(txid);
            }
            let remembered = self.truncated.entry(ring).or_default();
            if remembered.len() == TRUNCATED_REMEMBERED {
                remembered.pop_front();
            }
            remembered.push_back(txid);
            self.apply_backup(env, txid)?;
        }
        self.retire(ring, incoming.position);
        Ok(())
    }

    /// The commit half of COMMIT-PRIMARY, also the decision "committed" of
    /// a restart.
    fn install_locked(&mut self, env: &Env, txid: TxnId) -> Result<()> {
        let Some(lock) = self.locks.remove(&txid) else {
            return Ok(());
        };
        for entry in &lock.entries {
            match self.mode {
                Mode::Serve => env.replicas.install(entry)?,
                Mode::Replay => env.replicas.install_if_newer(entry)?,
            }
            if entry.expected.allocated && !entry.new.allocated {
                // A free: the slot goes back to the primary's allocator.
                if let Some(allocators) = env.allocators {
                    allocators.release(entry.addr);
                }
            }
        }
        self.retire(lock.ring, lock.position);
        self.spare.keep(lock.entries, lock.regions);
        Ok(())
    }

    /// The release half of ABORT, also the decision "aborted" of a
    /// restart.
    fn release_locked(&mut self, env: &Env, txid: TxnId) -> Result<()> {
        let Some(lock) = self.locks.remove(&txid) else {
            return Ok(());
        };
        if lock.locked {
            for entry in &lock.entries {
                env.replicas.unlock(entry)?;
            }
        }
        self.retire(lock.ring, lock.position);
        self.spare.keep(lock.entries, lock.regions);
        Ok(())
    }

    /// Applies a kept COMMIT-BACKUP: only a newer version replaces an
    /// older one, so truncations may arrive in any order.
    fn apply_backup(&mut self, env: &Env, txid: TxnId) -> Result<()> {
        let Some(backup) = self.backups.remove(&txid) else {
            return Ok(());
        };
        for entry in &backup.entries {
            env.replicas.install_if_newer(entry)?;
        }
        if let Some(stats) = env.stats {
            stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.retire(backup.ring, backup.position);
        self.spare.keep(backup.entries, backup.regions);
        Ok(())
    }

    /// Replay: the transactions this node knows committed (a COMMIT-PRIMARY
    /// or TRUNCATE seen, or a COMMIT-BACKUP held: a coordinator writes
    /// COMMIT-BACKUP only after every lock was granted and validation
    /// passed, SOSP'15 §5.3), sorted.
    pub(crate) fn evidence(&self) -> Vec<TxnId> {
        assert_eq!(self.mode, Mode::Replay, "only a replay gathers evidence");
        let mut evidence: Vec<TxnId> = self
            .committed
            .iter()
            .chain(self.backups.keys())
            .copied()
            .collect();
        evidence.sort_unstable();
        evidence.dedup();
        evidence
    }

    /// Replay: LOCKs whose transaction is still undecided.
    pub(crate) fn in_doubt(&self) -> usize {
        self.locks.len()
    }

    /// Replay: decides every LOCK in doubt by the cluster's `evidence` of
    /// commit (install, as COMMIT-PRIMARY would, or release, as ABORT
    /// would), and applies every COMMIT-BACKUP held, as TRUNCATE would.
    pub(crate) fn resolve(&mut self, env: &Env, evidence: &HashSet<TxnId>) -> Result<()> {
        assert_eq!(self.mode, Mode::Replay, "only a replay resolves");
        let in_doubt: Vec<TxnId> = self.locks.keys().copied().collect();
        for txid in in_doubt {
            if evidence.contains(&txid) {
                self.install_locked(env, txid)?;
            } else {
                self.release_locked(env, txid)?;
            }
        }
        let held: Vec<TxnId> = self.backups.keys().copied().collect();
        for txid in held {
            self.apply_backup(env, txid)?;
        }
        Ok(())
    }

    /// The held records of `ring`, for a diagnostic: (kind, transaction,
    /// position), oldest first.
    pub(crate) fn held_in(&self, ring: usize) -> Vec<(&'static str, TxnId, u64)> {
        let mut held: Vec<_> = self
            .locks
            .iter()
            .filter(|(_, lock)| lock.ring == ring)
            .map(|(txid, lock)| ("LOCK", *txid, lock.position))
            .chain(
                self.backups
                    .iter()
                    .filter(|(_, backup)| backup.ring == ring)
                    .map(|(txid, backup)| ("COMMIT-BACKUP", *txid, backup.position)),
            )
            .collect();
        held.sort_by_key(|(_, _, position)| *position);
        held
    }

    /// What this participant holds, for reconfiguration's recovery: its
    /// pending LOCKs and COMMIT-BACKUPs (FaRM SOSP'15 §5.3 "find recovering
    /// transactions").
    pub(crate) fn held(&self) -> (Vec<Held>, Vec<Held>) {
        self.held_records()
    }

    /// The transactions recently truncated here (by every coordinator):
    /// a coordinator truncates only after every COMMIT-PRIMARY was
    /// acknowledged, so each is committed, even where no record of it is
    /// left. (Regression: a coordinator that died between two backups'
    /// TRUNCATEs left one COMMIT-BACKUP behind; with its primary dead too,
    /// recovery found a region's writes nowhere, aborted a reported commit
    /// and dropped that COMMIT-BACKUP, so the backup missed writes its
    /// primary had installed. Found by the model check
    /// `recovery_decides_safely_after_a_crash_at_every_step`.)
    pub(crate) fn truncated(&self) -> Vec<TxnId> {
        self.truncated.values().flatten().copied().collect()
    }

    fn held_records(&self) -> (Vec<Held>, Vec<Held>) {
        let locks = self
            .locks
            .iter()
            .map(|(txid, lock)| Held {
                txid: *txid,
                regions: lock.regions.clone(),
                entries: lock.entries.clone(),
            })
            .collect();
        let backups = self
            .backups
            .iter()
            .map(|(txid, backup)| Held {
                txid: *txid,
                regions: backup.regions.clone(),
                entries: backup.entries.clone(),
            })
            .collect();
        (locks, backups)
    }

    /// Reconfiguration's decisions: every held LOCK and COMMIT-BACKUP of a
    /// transaction in `committed` is installed (version-guarded), every
    /// other is released or dropped; nothing stays held.
    pub(crate) fn settle(&mut self, env: &Env, committed: &HashSet<TxnId>) -> Result<()> {
        self.effects.retire.clear();
        let mode = std::mem::replace(&mut self.mode, Mode::Replay);
        let result = (|| {
            let held: Vec<TxnId> = self.locks.keys().copied().collect();
            for txid in held {
                if committed.contains(&txid) {
                    self.install_locked(env, txid)?;
                } else {
                    self.release_locked(env, txid)?;
                }
            }
            let held: Vec<TxnId> = self.backups.keys().copied().collect();
            for txid in held {
                if committed.contains(&txid) {
                    self.apply_backup(env, txid)?;
                } else if let Some(backup) = self.backups.remove(&txid) {
                    self.retire(backup.ring, backup.position);
                }
            }
            Ok(())
        })();
        self.mode = mode;
        result
    }
}
