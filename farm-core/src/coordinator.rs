//! The coordinator's side of FaRM's commit protocol (SOSP'15 §4, DESIGN.md
//! §4), one function per step:
//!
//! 1. [`lock`]: a LOCK record to each primary of a written object, with
//!    the versions read and the new values; each primary CAS-locks its
//!    objects at those versions and answers yes or no with one WRITE into
//!    this node's inbox.
//! 2. [`validate`]: one-sided READs of the header of every object read but
//!    not written; a changed version or a lock aborts.
//! 3. [`commit_backup`]: a COMMIT-BACKUP record to every backup of a
//!    written region; we wait for the fabric's acknowledgement only (the
//!    backup's CPU is not involved).
//! 4. [`commit_primary`]: a COMMIT-PRIMARY record to every primary, which
//!    installs the values, bumps the versions and unlocks. FaRM reports
//!    the commit once the first is acknowledged; farm-rs waits for all:
//!    the truncation queued next may be sent by another thread at once,
//!    and a transaction must not be truncated (its COMMIT-BACKUPs dropped)
//!    while a COMMIT-PRIMARY might still be lost, or recovery would find no
//!    evidence of its commit. (DESIGN.md §4 says the same.)
//! 5. [`truncate`]: lazily, in batches through the node's queue; backups
//!    then apply their copies.
//!
//! [`abort`] sends ABORT to the primaries after a refused LOCK or a failed
//! validation. Each step takes the proof that the one before it succeeded
//! ([`Locked`], [`Validated`], [`BackedUp`], [`Committed`]), so the steps
//! cannot run out of order, and opens with the assertions of what must
//! hold (they stay on in release builds). Read-only transactions take no
//! locks: one that read a single object commits at once (its one READ was
//! consistent), others validate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_transport::{Endpoint, MemoryRegion, NodeId, Op, RemoteAddr};
use smallvec::SmallVec;

use crate::codec::record::{entries_record_bytes, Kind, RecordWriter, TRUNCATE_TXIDS_MAX};
use crate::config::Placement;
use crate::error::{Error, Result};
use crate::header::{Addr, Header};
use crate::limits::{NODES_MAX, RECORD_BYTES_MAX, RECOVERY_WAIT_MS, REPLY_TIMEOUT_MS};
use crate::node::contexts::{Context, READ_AREA_BYTES};
use crate::node::gate::{Active, CommitPhase};
use crate::node::inbox::wait_lock_replies;
use crate::node::{NodeShared, View};
use crate::outcome::{AbortReason, Outcome, PhaseTimes};
use crate::txn_id::TxnId;

/// An object a transaction read, at the header it saw.
pub(crate) struct ReadEntry {
    pub(crate) addr: Addr,
    pub(crate) header: Header,
}

/// An object a transaction writes (or allocates, or frees).
pub(crate) struct WriteEntry {
    pub(crate) addr: Addr,
    pub(crate) expected: Header,
    pub(crate) new: Header,
    pub(crate) payload: Vec<u8>,
    /// Slot taken from the local allocator by this transaction.
    pub(crate) allocated_here: bool,
}

/// The nodes a read-write commit talks to: the primaries and the backups
/// of the written regions, each sorted, without repeats.
pub(crate) struct Participants {
    pub(crate) primaries: Vec<usize>,
    pub(crate) backups: Vec<usize>,
    /// Every region the transaction writes, sorted: each LOCK and
    /// COMMIT-BACKUP names them all.
    pub(crate) regions: Vec<u16>,
}

impl Participants {
    /// The participants of a commit of `writes`, once every record it will
    /// send is known to fit: one LOCK per primary and one COMMIT-BACKUP per
    /// backup, each at most [`RECORD_BYTES_MAX`].
    ///
    /// # Errors
    /// [`Error::TransactionTooLarge`] naming the record, its node, its size
    /// and the limit. Nothing has been sent then.
    pub(crate) fn plan(placement: &Placement, writes: &[WriteEntry]) -> Result<Participants> {
        let participants = Participants::of(placement, writes);
        let mut lock_bytes = [0usize; NODES_MAX];
        let mut backup_bytes = [0usize; NODES_MAX];
        let mut lock_objects = [0usize; NODES_MAX];
        let mut backup_objects = [0usize; NODES_MAX];
        for write in writes {
            let bytes =
                entries_record_bytes(0, [write.payload.len()]) - entries_record_bytes(0, []);
            let region = write.addr.region();
            let primary = placement.primary(region);
            lock_bytes[primary] += bytes;
            lock_objects[primary] += 1;
            for backup in placement.backups(region) {
                backup_bytes[backup] += bytes;
                backup_objects[backup] += 1;
            }
        }
        let records = [
            ("LOCK", &lock_bytes, &lock_objects),
            ("COMMIT-BACKUP", &backup_bytes, &backup_objects),
        ];
        for (record, bytes, objects) in records {
            for node in 0..placement.nodes {
                let total = bytes[node] + entries_record_bytes(participants.regions.len(), []);
                if objects[node] > 0 && total > RECORD_BYTES_MAX {
                    return Err(Error::TransactionTooLarge {
                        record,
                        node,
                        objects: objects[node],
                        bytes: total,
                        max: RECORD_BYTES_MAX,
                    });
                }
            }
        }
        Ok(participants)
    }

    fn of(placement: &Placement, writes: &[WriteEntry]) -> Participants {
        let mut primaries: Vec<usize> = writes
            .iter()
            .map(|w| placement.primary(w.addr.region()))
            .collect();
        primaries.sort_unstable();
        primaries.dedup();
        let mut backups: Vec<usize> = writes
            .iter()
            .flat_map(|w| placement.backups(w.addr.region()))
            .collect();
        backups.sort_unstable();
        backups.dedup();
        let mut regions: Vec<u16> = writes.iter().map(|w| w.addr.region()).collect();
        regions.sort_unstable();
        regions.dedup();
        Participants {
            primaries,
            backups,
            regions,
        }
    }
}

/// Every primary granted the transaction's LOCK.
pub(crate) struct Locked {
    txid: TxnId,
}

/// Validation passed (with every lock held, for a read-write commit).
pub(crate) struct Validated {
    txid: TxnId,
}

/// Every backup's COMMIT-BACKUP was acknowledged by the fabric.
pub(crate) struct BackedUp {
    txid: TxnId,
}

/// Every primary's COMMIT-PRIMARY was acknowledged: the commit is durable
/// and may be reported.
pub(crate) struct Committed {
    txid: TxnId,
}

/// The primaries' answer to a LOCK.
pub(crate) enum LockVote {
    Granted(Locked),
    /// At least one primary refused (an object changed or was locked).
    Refused,
    /// The gate closed while waiting: recovery decides.
    Stopped,
}

fn timeout() -> Duration {
    Duration::from_millis(REPLY_TIMEOUT_MS)
}

/// The clock of a commit's phases: one clock read per phase boundary, each
/// phase ending where the next begins (the gate checks between two phases,
/// a few atomic loads, count as the next phase's).
struct PhaseClock(Instant);

impl PhaseClock {
    fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the last lap (or the start).
    fn lap(&mut self) -> u64 {
        let now = Instant::now();
        let ns = now.duration_since(self.0).as_nanos() as u64;
        self.0 = now;
        ns
    }
}

/// Commits a transaction that read `reads` and writes `writes`: the five
/// steps for a read-write transaction, validation only for a read-only
/// one. `phases` receives the time of each step.
///
/// The commit runs inside the node's gate ([`crate::node::gate`]): it
/// aborts with [`AbortReason::Unavailable`] at once if the configuration
/// changed since the transaction began, and it parks for recovery's
/// decision (FaRM SOSP'15 §5.3) if the gate closes between two steps, or
/// if a step fails on a node whose membership agent will reconfigure
/// around the failed peer.
///
/// # Errors
/// A fabric error, a full ring, or a primary that did not answer the LOCK
/// ([`Error::ReplyTimeout`], after its locks were released by ABORT), when
/// no recovery decided the transaction within
/// [`crate::limits::RECOVERY_WAIT_MS`].
pub(crate) fn commit(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    reads: &[ReadEntry],
    writes: &[WriteEntry],
    phases: &mut PhaseTimes,
) -> Result<Outcome> {
    let active = node.gate.enter();
    // A node whose lease ran out may have been removed already: it must
    // not commit in a configuration that is no longer the cluster's.
    if !node.gate.is_open() || node.view_serial() != context.view_serial || !node.gate.lease_valid()
    {
        // Nothing sent: run again in the new configuration.
        return Ok(Outcome::Aborted(AbortReason::Unavailable));
    }
    let mut phase = CommitPhase::BeforeCommitPrimary;
    let mut backed_up = false;
    let steps = commit_steps(
        node,
        context,
        txid,
        (reads, writes),
        phases,
        (&mut phase, &mut backed_up),
    );
    match steps {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => match park(node, active, txid, phase) {
            Some(outcome) => Ok(outcome),
            // No decision came. With a COMMIT-BACKUP written, recovery
            // may yet commit it; without, its locks go at the next change.
            None if backed_up => Err(Error::OutcomeUnknown {
                txid,
                step: "recovery",
                source: Box::new(Error::Unavailable {
                    node: node.id,
                    waited: Duration::from_millis(RECOVERY_WAIT_MS),
                }),
            }),
            None => Ok(Outcome::Aborted(AbortReason::Unavailable)),
        },
        Err(error) if node.gate.managed() || !node.gate.is_open() => {
            park(node, active, txid, phase).ok_or(error)
        }
        Err(error) => Err(error),
    }
}

/// Parks commit `txid` at `phase` for recovery's decision: `Some` outcome
/// when recovery decided within [`crate::limits::RECOVERY_WAIT_MS`].
fn park(node: &NodeShared, active: Active<'_>, txid: TxnId, phase: CommitPhase) -> Option<Outcome> {
    node.gate.park(txid, phase);
    // No longer active: the reconfiguration waiting for quiet goes on.
    drop(active);
    let decided = node
        .gate
        .await_decision(txid, Duration::from_millis(RECOVERY_WAIT_MS))?;
    Some(if decided {
        Outcome::Committed
    } else {
        Outcome::Aborted(AbortReason::Unavailable)
    })
}

/// The steps of [`commit`]: `Some` outcome when they ran to the end or
/// aborted, `None` when the gate closed between two steps (the commit
/// parks at `phase`).
fn commit_steps(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    (reads, writes): (&[ReadEntry], &[WriteEntry]),
    phases: &mut PhaseTimes,
    (phase, backed_up): (&mut CommitPhase, &mut bool),
) -> Result<Option<Outcome>> {
    if writes.is_empty() {
        if reads.len() <= 1 {
            return Ok(Some(Outcome::Committed));
        }
        let mut clock = PhaseClock::start();
        let valid = validate(node, context, txid, reads, writes, None)?;
        phases.validate_ns = clock.lap();
        return Ok(Some(match valid {
            // The commit point of a read-only transaction: its reads are
            // the cluster's only if this node's lease still holds.
            Some(_) if !node.gate.lease_valid() => Outcome::Aborted(AbortReason::Unavailable),
            Some(_) => Outcome::Committed,
            None => Outcome::Aborted(AbortReason::Validation),
        }));
    }
    let participants = Participants::plan(&context.view.config, writes)?;

    let mut clock = PhaseClock::start();
    let locked = match lock(node, context, txid, writes, &participants)? {
        LockVote::Granted(locked) => locked,
        LockVote::Refused => {
            abort(node, context, txid, &participants.primaries)?;
            return Ok(Some(Outcome::Aborted(AbortReason::LockConflict)));
        }
        LockVote::Stopped => return Ok(None),
    };
    phases.lock_ns = clock.lap();
    if !node.gate.is_open() {
        return Ok(None);
    }

    let validated = match validate(node, context, txid, reads, writes, Some(locked)) {
        Ok(Some(validated)) => validated,
        Ok(None) => {
            abort(node, context, txid, &participants.primaries)?;
            return Ok(Some(Outcome::Aborted(AbortReason::Validation)));
        }
        // Nothing but LOCKs was sent: release them, report the error.
        Err(error) => {
            return Err(abort_after(
                node,
                context,
                txid,
                &participants.primaries,
                error,
            ))
        }
    };
    phases.validate_ns = clock.lap();
    if !node.gate.is_open() {
        return Ok(None);
    }
    if !node.gate.lease_valid() {
        // This node's lease ran out: it may no longer be a member. Nothing
        // but LOCKs went out: release them (stale records if it was
        // removed, which recovery then releases instead).
        abort(node, context, txid, &participants.primaries)?;
        return Ok(Some(Outcome::Aborted(AbortReason::Unavailable)));
    }

    *backed_up = true;
    let proof = commit_backup(node, context, txid, writes, &participants, validated)?;
    phases.commit_backup_ns = clock.lap();
    if !node.gate.is_open() {
        return Ok(None);
    }

    *phase = CommitPhase::CommitPrimarySent;
    let committed = commit_primary(node, context, txid, &participants, proof)
        .map_err(|error| outcome_unknown(txid, "COMMIT-PRIMARY", error))?;
    phases.commit_primary_ns = clock.lap();
    if !node.gate.lease_valid() {
        // The lease ran out while COMMIT-PRIMARY went out: the cluster may
        // have removed this node meanwhile and decided the transaction by
        // recovery's rules, either way.
        return Err(Error::OutcomeUnknown {
            txid,
            step: "COMMIT-PRIMARY (this node's lease ran out)",
            source: Box::new(Error::Unavailable {
                node: node.id,
                waited: Duration::ZERO,
            }),
        });
    }

    truncate(node, context, &participants, committed)?;
    Ok(Some(Outcome::Committed))
}

/// Sends ABORT to `primaries` after `error` stopped a commit before any
/// COMMIT-BACKUP was written, so that no lock stays behind; returns the
/// error (with the ABORT's own failure, if that failed too).
fn abort_after(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    primaries: &[usize],
    error: Error,
) -> Error {
    match abort(node, context, txid, primaries) {
        Ok(()) => error,
        Err(abort_error) => Error::LocksLeft {
            txid,
            cause: Box::new(error),
            source: Box::new(abort_error),
        },
    }
}

/// An error after a COMMIT-BACKUP was written: the transaction may have
/// committed (FaRM SOSP'15 §5.3: a COMMIT-BACKUP is evidence of commit),
/// so its locks stay for recovery to decide.
fn outcome_unknown(txid: TxnId, step: &'static str, error: Error) -> Error {
    match error {
        already @ Error::OutcomeUnknown { .. } => already,
        error => Error::OutcomeUnknown {
            txid,
            step,
            source: Box::new(error),
        },
    }
}

/// Step 1, LOCK: sends each primary the writes of its regions and waits
/// for every answer.
///
/// # Errors
/// [`Error::ReplyTimeout`] when a primary does not answer within
/// [`REPLY_TIMEOUT_MS`] (ABORT has then been sent to every primary); the
/// send path's errors.
pub(crate) fn lock(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    writes: &[WriteEntry],
    participants: &Participants,
) -> Result<LockVote> {
    assert!(
        !writes.is_empty(),
        "LOCK of a transaction that writes nothing"
    );
    assert!(
        participants.primaries.windows(2).all(|w| w[0] < w[1]),
        "primaries sorted, without repeats"
    );
    assert!(
        writes.iter().all(|w| participants
            .primaries
            .contains(&context.view.config.primary(w.addr.region()))),
        "every written object's primary is locked"
    );
    for (sent, &primary) in participants.primaries.iter().enumerate() {
        let result = send_entries(
            node,
            context,
            (txid, Kind::Lock),
            primary,
            writes,
            &participants.regions,
        );
        if let Err(error) = result {
            // The primaries that got a LOCK may have granted it: release
            // them. (Regression: a LOCK refused as too large after another
            // was granted left that lock behind for good.)
            let granted = &participants.primaries[..sent];
            return Err(abort_after(node, context, txid, granted, error));
        }
    }
    let granted = wait_lock_replies(
        (
            &node.inbox,
            &node.hook,
            &|id| node.help_node(id),
            node.fabric.as_ref(),
            &node.gate,
        ),
        context.index,
        txid,
        &participants.primaries,
        (timeout(), node.lock_spins.load(Ordering::Relaxed)),
    );
    match granted {
        None if !node.gate.is_open() => Ok(LockVote::Stopped),
        None => {
            let timeout = Error::ReplyTimeout {
                node: participants.primaries[0],
                what: "LOCK",
                txid,
            };
            Err(abort_after(
                node,
                context,
                txid,
                &participants.primaries,
                timeout,
            ))
        }
        Some(granted) if granted == participants.primaries.len() => {
            Ok(LockVote::Granted(Locked { txid }))
        }
        Some(_) => Ok(LockVote::Refused),
    }
}

/// Step 2, VALIDATE: re-reads the header of every object read but not
/// written (local memory at a local primary, one batch of 8-byte READs per
/// remote primary); `Some` if none changed or is locked. A read-write
/// transaction validates holding every lock (`locked`); a read-only one
/// without.
pub(crate) fn validate(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    reads: &[ReadEntry],
    writes: &[WriteEntry],
    locked: Option<Locked>,
) -> Result<Option<Validated>> {
    assert_eq!(
        writes.is_empty(),
        locked.is_none(),
        "a read-write transaction validates with every lock granted, a read-only one without"
    );
    assert!(
        locked.is_none_or(|l| l.txid == txid),
        "the locks are this transaction's"
    );
    let validated = Validated { txid };
    if !writes.is_empty() && node.faults().skip_validation {
        return Ok(Some(validated));
    }
    // On the stack for usual read sets: a `Vec` here was an allocation per
    // validation, and under two client threads sharing a malloc arena its
    // `realloc` was where they queued for the arena's lock (YCSB-C).
    let to_check: SmallVec<[(Addr, Header); 16]> = reads
        .iter()
        .filter(|r| !writes.iter().any(|w| w.addr == r.addr))
        .map(|r| (r.addr, r.header))
        .collect();
    // 8-byte READs of the headers, grouped by remote primary.
    type Remote = SmallVec<[(usize, Addr); 8]>;
    let mut remote: SmallVec<[(usize, Remote); 4]> = SmallVec::new();
    for (index, (addr, header)) in to_check.iter().enumerate() {
        let primary = context.view.config.primary(addr.region());
        if primary == node.id {
            let word = node.replicas.header_word(*addr)?.load(Ordering::Acquire);
            if word != header.encode() {
                return Ok(None);
            }
            continue;
        }
        match remote.iter_mut().find(|(node, _)| *node == primary) {
            Some((_, list)) => list.push((index, *addr)),
            None => remote.push((primary, smallvec::smallvec![(index, *addr)])),
        }
    }
    // The READs go to every primary before any is waited for: one round
    // trip for the whole read set, not one per primary (FaRM NSDI'14 §4
    // issues a transaction's validation READs in parallel). Until 800f35f
    // this waited for each primary in turn, so a read set on two other
    // nodes paid two round trips. A wave posts at most one batch per
    // primary (what a send queue is sized for) and one word per READ in
    // the context's read area; a larger read set takes more waves.
    const WORD_BYTES: u64 = std::mem::size_of::<u64>() as u64;
    let per_batch =
        rdma_transport::limits::BATCH_WR_COUNT_MAX.min((READ_AREA_BYTES / WORD_BYTES) as usize);
    let area_words = (READ_AREA_BYTES / WORD_BYTES) as usize;
    // For each primary in `remote`, how many of its READs are done.
    let mut next: SmallVec<[usize; 4]> = smallvec::smallvec![0; remote.len()];
    loop {
        // One wave: (primary's place in `remote`, first index, count, first slot).
        let mut wave: SmallVec<[(usize, usize, usize, usize); 4]> = SmallVec::new();
        let mut slot = 0usize;
        for (place, (_, list)) in remote.iter().enumerate() {
            let from = next[place];
            let count = (list.len() - from).min(per_batch);
            if count == 0 || slot + count > area_words {
                continue;
            }
            wave.push((place, from, count, slot));
            slot += count;
        }
        if wave.is_empty() {
            break;
        }
        post_reads_then_wait(context, wave.len(), |context, job, ops| {
            let (place, from, count, first_slot) = wave[job];
            let (primary, list) = &remote[place];
            for (i, (_, addr)) in list[from..from + count].iter().enumerate() {
                ops.push(Op::Read {
                    local: context
                        .scratch
                        .slice((first_slot + i) as u64 * WORD_BYTES, WORD_BYTES as u32)?,
                    remote: RemoteAddr {
                        node: NodeId(*primary as u16),
                        key: context.view.directory.region_key(*primary, addr.region())?,
                        offset: u64::from(addr.offset()) + crate::codec::object::HEADER_OFFSET,
                    },
                });
            }
            Ok(*primary)
        })?;
        for &(place, from, count, first_slot) in &wave {
            let list = &remote[place].1;
            for (i, (index, _)) in list[from..from + count].iter().enumerate() {
                let word = context
                    .scratch
                    .atomic_u64((first_slot + i) as u64 * WORD_BYTES)?
                    .load(Ordering::Acquire);
                if word != to_check[*index].1.encode() {
                    return Ok(None);
                }
            }
            next[place] = from + count;
        }
    }
    Ok(Some(validated))
}

/// Step 3, COMMIT-BACKUP: sends every backup of a written region the new
/// values of its regions and waits for the fabric's acknowledgements.
pub(crate) fn commit_backup(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    writes: &[WriteEntry],
    participants: &Participants,
    validated: Validated,
) -> Result<BackedUp> {
    assert_eq!(
        validated.txid, txid,
        "the validation was this transaction's"
    );
    assert!(
        writes.iter().all(|w| context
            .view
            .config
            .backups(w.addr.region())
            .all(|b| participants.backups.contains(&b))),
        "every backup of a written region gets a COMMIT-BACKUP"
    );
    for (sent, &backup) in participants.backups.iter().enumerate() {
        let result = send_entries(
            node,
            context,
            (txid, Kind::CommitBackup),
            backup,
            writes,
            &participants.regions,
        );
        match result {
            Ok(()) => {}
            // Nothing written anywhere but LOCKs: release them.
            Err(error) if sent == 0 => {
                return Err(abort_after(
                    node,
                    context,
                    txid,
                    &participants.primaries,
                    error,
                ))
            }
            Err(error) => return Err(outcome_unknown(txid, "COMMIT-BACKUP", error)),
        }
    }
    for &backup in &participants.backups {
        context.endpoints[backup]
            .wait(timeout())
            .map_err(|error| outcome_unknown(txid, "COMMIT-BACKUP", error.into()))?;
    }
    Ok(BackedUp { txid })
}

/// Step 4, COMMIT-PRIMARY: tells every primary to install and unlock, and
/// waits until the fabric acknowledged every record.
pub(crate) fn commit_primary(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    participants: &Participants,
    backed_up: BackedUp,
) -> Result<Committed> {
    assert_eq!(backed_up.txid, txid, "the backups hold this transaction");
    assert!(!participants.primaries.is_empty());
    send_plain(
        node,
        context,
        txid,
        Kind::CommitPrimary,
        &participants.primaries,
    )?;
    // In an in-process cluster, install and unlock at the primaries now
    // (see `NodeShared::help_node`): their servers may be asleep, since
    // waiting coordinators took their LOCKs, and readers of these objects
    // wait while they stay locked.
    for &primary in &participants.primaries {
        node.help_node(primary);
    }
    Ok(Committed { txid })
}

/// Step 5, TRUNCATE (lazy): queues the transaction's truncation at its
/// backups; sends the queue when it is full enough. The node's server
/// sends what is left when the node goes quiet.
///
/// # Errors
/// None: a send that fails is retried later (see [`send_truncations`]);
/// the `Result` keeps the step's shape beside the others.
pub(crate) fn truncate(
    node: &NodeShared,
    context: &mut Context,
    participants: &Participants,
    committed: Committed,
) -> Result<()> {
    if node
        .truncations
        .queue(&participants.backups, committed.txid)
    {
        // The transaction is committed whatever happens here: a failed
        // send puts its truncations back in the queue, for the server to
        // send when the node goes quiet (or the next configuration to
        // settle), and must not turn a commit into an error.
        let _ = send_truncations(
            node,
            &context.view,
            &context.scratch,
            &mut context.endpoints,
            &mut context.record,
        );
    }
    Ok(())
}

/// ABORT: releases the locks of a LOCK at every primary (those that
/// refused ignore it) and waits for the fabric's acknowledgements.
pub(crate) fn abort(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    primaries: &[usize],
) -> Result<()> {
    send_plain(node, context, txid, Kind::Abort, primaries)
}

/// Sends the node's queued truncations, TRUNCATE records to each backup, on
/// the given endpoints (a context's, or the server's when it is idle).
///
/// A backup that is no longer a member is skipped: the reconfiguration
/// that removed it settled its COMMIT-BACKUPs. A backup whose send fails
/// gets its truncations back in the queue, and the others are still sent
/// (regression: the first failure dropped every later backup's
/// truncations, their COMMIT-BACKUP records were never retired, and the
/// coordinator's rings never drained; found over verbs in the soft-RoCE VM,
/// where a WRITE to a killed node fails, with `farm check --nemesis kill`).
///
/// # Errors
/// The first failed send's error, after trying every backup.
pub(crate) fn send_truncations(
    node: &NodeShared,
    view: &View,
    scratch: &Arc<MemoryRegion>,
    endpoints: &mut [Box<dyn Endpoint>],
    record: &mut Vec<u8>,
) -> Result<()> {
    let current = node.view();
    let mut first_error = None;
    for (backup, txids) in node.truncations.take().into_iter().enumerate() {
        if txids.is_empty() || !current.config.is_member(backup) {
            continue;
        }
        if let Err(error) =
            send_truncations_to(node, view, scratch, endpoints, record, backup, &txids)
        {
            node.truncations.requeue(backup, &txids);
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// TRUNCATE records for `txids` to `backup`, as many as they need.
fn send_truncations_to(
    node: &NodeShared,
    view: &View,
    scratch: &Arc<MemoryRegion>,
    endpoints: &mut [Box<dyn Endpoint>],
    record: &mut Vec<u8>,
    backup: usize,
    txids: &[TxnId],
) -> Result<()> {
    for chunk in txids.chunks(TRUNCATE_TXIDS_MAX) {
        let mut writer = RecordWriter::new(
            record,
            Kind::Truncate,
            node.id,
            view.config.id,
            TxnId::default(),
        );
        for txid in chunk {
            writer.truncated(*txid);
        }
        node.send(
            view,
            backup,
            record,
            scratch,
            endpoints[backup].as_mut(),
            true,
        )?;
    }
    Ok(())
}

/// Sends `target` the LOCK (the writes of the regions it is primary of)
/// or the COMMIT-BACKUP (the writes of the regions it backs) of `txid`.
fn send_entries(
    node: &NodeShared,
    context: &mut Context,
    (txid, kind): (TxnId, Kind),
    target: usize,
    writes: &[WriteEntry],
    regions: &[u16],
) -> Result<()> {
    let view = context.view.clone();
    let placement = &view.config;
    let selected = |w: &&WriteEntry| match kind {
        Kind::Lock => placement.primary(w.addr.region()) == target,
        _ => placement.backups(w.addr.region()).any(|b| b == target),
    };
    let mut writer = RecordWriter::new(&mut context.record, kind, node.id, placement.id, txid);
    writer.regions(regions);
    for write in writes.iter().filter(selected) {
        writer.entry(write.addr, write.expected, write.new, &write.payload);
    }
    // A LOCK is waited for (its primary is woken); a COMMIT-BACKUP only
    // needs the fabric's acknowledgement.
    node.send(
        &view,
        target,
        &mut context.record,
        &context.scratch,
        context.endpoints[target].as_mut(),
        kind == Kind::Lock,
    )
}

/// Sends a record without payload (COMMIT-PRIMARY, ABORT) to `targets`
/// and waits until the fabric acknowledged every one.
fn send_plain(
    node: &NodeShared,
    context: &mut Context,
    txid: TxnId,
    kind: Kind,
    targets: &[usize],
) -> Result<()> {
    let view = context.view.clone();
    for &target in targets {
        RecordWriter::new(&mut context.record, kind, node.id, view.config.id, txid);
        node.send(
            &view,
            target,
            &mut context.record,
            &context.scratch,
            context.endpoints[target].as_mut(),
            true,
        )?;
    }
    for &target in targets {
        context.endpoints[target].wait(timeout())?;
    }
    Ok(())
}

/// Copies a slab-table byte the allocator just wrote to every backup of
/// `region` (one-sided WRITEs): the table must be the same on every
/// replica for a backup to take over. An assigned but unused slab is
/// harmless, so this need not wait for the commit.
pub(crate) fn replicate_slab_table(
    context: &mut Context,
    region: u16,
    change: crate::allocator::SlabChange,
) -> Result<()> {
    context.scratch.write(0, &[change.value])?;
    let view = context.view.clone();
    for backup in view.config.backups(region) {
        let op = Op::Write {
            local: context.scratch.slice(0, 1)?,
            remote: RemoteAddr {
                node: NodeId(backup as u16),
                key: view.directory.region_key(backup, region)?,
                offset: change.offset,
            },
        };
        context.endpoints[backup].execute(&[op], timeout())?;
    }
    Ok(())
}

/// Posts one READ of each slot of `slots` (remote primary, address, offset
/// in the context's read area) to its primary, every primary's READs
/// before waiting for any, then waits for all that were posted (even after
/// an error: a READ still in flight would land in the read area later,
/// where the next READs go). The caller keeps the slots inside the read
/// area and at most one batch per primary; the copies are in the read area
/// when this returns.
pub(crate) fn read_slots_together(
    node: &NodeShared,
    context: &mut Context,
    slots: &[(usize, Addr, u64)],
) -> Result<()> {
    debug_assert!(slots.iter().all(|(primary, _, _)| *primary != node.id));
    let mut primaries: SmallVec<[usize; 4]> = SmallVec::new();
    for (primary, _, _) in slots {
        if !primaries.contains(primary) {
            primaries.push(*primary);
        }
    }
    post_reads_then_wait(context, primaries.len(), |context, job, ops| {
        let primary = primaries[job];
        for &(_, addr, at) in slots.iter().filter(|(p, _, _)| *p == primary) {
            crate::read_counts::count_read(true);
            ops.push(Op::Read {
                local: context
                    .scratch
                    .slice(at, crate::region::class_bytes(addr.class()))?,
                remote: RemoteAddr {
                    node: NodeId(primary as u16),
                    key: context.view.directory.region_key(primary, addr.region())?,
                    offset: u64::from(addr.offset()),
                },
            });
        }
        Ok(primary)
    })
}

/// Posts `jobs` batches of READs, each built by `build(context, job,
/// ops)`, which fills `ops` and returns the primary they go to (one batch
/// per primary), and then waits for every batch posted, even after an
/// error: a READ still in flight could land in the read area after this
/// returns, where the next READs go. The first error is returned.
fn post_reads_then_wait(
    context: &mut Context,
    jobs: usize,
    mut build: impl FnMut(&Context, usize, &mut SmallVec<[Op; 8]>) -> Result<usize>,
) -> Result<()> {
    let mut posted: SmallVec<[usize; 4]> = SmallVec::new();
    let mut failed = None;
    for job in 0..jobs {
        let mut ops: SmallVec<[Op; 8]> = SmallVec::new();
        let built = build(context, job, &mut ops);
        match built.and_then(|primary| {
            context.endpoints[primary].post(&ops)?;
            Ok(primary)
        }) {
            Ok(primary) => posted.push(primary),
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    for primary in posted {
        if let Err(error) = context.endpoints[primary].wait(timeout()) {
            failed.get_or_insert(error.into());
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Reads a consistent copy of the slot at `addr` into `copy` from its
/// primary: local memory when this node is the primary, else one RDMA READ
/// through `context`.
pub(crate) fn read_slot_copy(
    node: &NodeShared,
    context: &mut Context,
    primary: usize,
    addr: Addr,
    copy: &mut [u8],
) -> Result<()> {
    crate::read_counts::count_read(primary != node.id);
    if primary == node.id {
        let mr = node
            .replicas
            .get(addr.region())
            .expect("a primary holds its region");
        mr.read(u64::from(addr.offset()), copy)?;
        return Ok(());
    }
    let op = Op::Read {
        local: context.scratch.slice(0, copy.len() as u32)?,
        remote: RemoteAddr {
            node: NodeId(primary as u16),
            key: context.view.directory.region_key(primary, addr.region())?,
            offset: u64::from(addr.offset()),
        },
    };
    context.endpoints[primary].execute(&[op], timeout())?;
    context.scratch.read(0, copy)?;
    Ok(())
}
