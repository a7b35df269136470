//! Transactions: optimistic execution with one-sided reads and buffered
//! writes, and FaRM's commit protocol.
//!
//! Commit of a read-write transaction (DESIGN.md §4):
//! 1. LOCK: one record per primary of a written object, carrying the
//!    versions read and the new values; the primary CAS-locks each object
//!    at the version read and answers yes or no.
//! 2. VALIDATE: one-sided READs of the header of every object read but not
//!    written; a changed version or a lock aborts.
//! 3. COMMIT-BACKUP: a record to every backup of a written region; we wait
//!    for the fabric's completion only (the backup's CPU is not involved).
//! 4. COMMIT-PRIMARY: a record to every primary, which installs the values,
//!    bumps the versions and unlocks. The commit is reported once the first
//!    is acknowledged by the fabric.
//! 5. TRUNCATE: lazily, in batches: backups then apply their copies.
//!
//! Read-only transactions take no locks; one that read a single object
//! needs no validation either (its one READ was consistent).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdma_transport::{NodeId, Op, RemoteAddr};

use crate::error::{Error, Result};
use crate::header::{Addr, Header};
use crate::limits::{CLASS_BYTES, READ_RETRIES, REGION_HEADER_BYTES, REPLY_TIMEOUT_MS, SLAB_BYTES};
use crate::node::{put_entries, start_record, Context, NodeShared, READ_AREA_BYTES};
use crate::record::Kind;
use crate::region::{self, class_bytes, SlotState};

/// Why a transaction aborted. An abort leaves no trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// A primary could not lock an object at the version read.
    LockConflict,
    /// An object read but not written changed before commit.
    Validation,
    /// An object stayed locked (or torn) across every read retry.
    ReadConflict,
    /// The application gave up.
    Requested,
}

impl AbortReason {
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::LockConflict => "lock",
            AbortReason::Validation => "validate",
            AbortReason::ReadConflict => "read",
            AbortReason::Requested => "requested",
        }
    }
}

/// The result of a commit. An abort is an ordinary outcome, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted(AbortReason),
}

/// What can stop a transaction's operation: a conflict (retry the
/// transaction) or a real error.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("transaction conflict ({})", .0.name())]
    Conflict(AbortReason),
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<rdma_transport::Error> for TxnError {
    fn from(error: rdma_transport::Error) -> Self {
        TxnError::Failed(Error::Fabric(error))
    }
}

struct ReadEntry {
    addr: Addr,
    header: Header,
}

struct WriteEntry {
    addr: Addr,
    expected: Header,
    new: Header,
    payload: Vec<u8>,
    /// Slot taken from the local allocator by this transaction.
    allocated_here: bool,
}

/// Time spent in each commit phase, for the benchmark's breakdown.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    pub lock_ns: u64,
    pub validate_ns: u64,
    pub commit_backup_ns: u64,
    pub commit_primary_ns: u64,
}

/// A transaction. `commit` consumes it; dropping it aborts.
pub struct Txn {
    node: Arc<NodeShared>,
    context: Option<Context>,
    txid: u64,
    reads: Vec<ReadEntry>,
    writes: Vec<WriteEntry>,
    buffer: Vec<u8>,
    pub phases: PhaseTimes,
}

impl Txn {
    pub(crate) fn begin(node: Arc<NodeShared>) -> Result<Txn> {
        let mut context = node.take_context()?;
        context.sequence = context.sequence.wrapping_add(1);
        let txid =
            ((node.id as u64) << 48) | ((context.index as u64) << 32) | u64::from(context.sequence);
        Ok(Txn {
            node,
            context: Some(context),
            txid,
            reads: Vec::new(),
            writes: Vec::new(),
            buffer: Vec::new(),
            phases: PhaseTimes::default(),
        })
    }

    pub fn id(&self) -> u64 {
        self.txid
    }

    fn context(&mut self) -> &mut Context {
        self.context
            .as_mut()
            .expect("a live transaction has its context")
    }

    fn check_addr(&self, addr: Addr) -> Result<()> {
        let bad = |why| Error::BadAddress { addr, why };
        if usize::from(addr.region()) >= self.node.placement.regions() {
            return Err(bad("no such region"));
        }
        if usize::from(addr.class()) >= CLASS_BYTES.len() {
            return Err(bad("no such size class"));
        }
        let offset = addr.offset();
        let region_bytes = self
            .node
            .replicas
            .iter()
            .flatten()
            .next()
            .map(|mr| mr.len())
            .unwrap_or(0);
        if offset < REGION_HEADER_BYTES
            || !((offset - REGION_HEADER_BYTES) % SLAB_BYTES)
                .is_multiple_of(class_bytes(addr.class()))
            || u64::from(offset) + u64::from(class_bytes(addr.class())) > region_bytes
        {
            return Err(bad("offset is not a slot of its class"));
        }
        Ok(())
    }

    /// Reads a consistent copy of the slot at `addr` from its primary:
    /// local memory when this node is the primary, else one RDMA READ.
    fn read_slot(&mut self, addr: Addr) -> Result<(Header, Vec<u8>), TxnError> {
        self.check_addr(addr)?;
        let primary = self.node.placement.primary(addr.region());
        let size = class_bytes(addr.class()) as usize;
        let mut copy = std::mem::take(&mut self.buffer);
        copy.resize(size, 0);
        let mut result = Err(TxnError::Conflict(AbortReason::ReadConflict));
        for attempt in 0..READ_RETRIES {
            if primary == self.node.id {
                let mr = self.node.replicas[usize::from(addr.region())]
                    .as_ref()
                    .expect("a primary holds its region");
                mr.read(u64::from(addr.offset()), &mut copy)
                    .map_err(Error::from)?;
            } else {
                let key = self.node.directory().region_keys[primary][usize::from(addr.region())]
                    .expect("every replica is registered");
                let context = self.context();
                let op = Op::Read {
                    local: context.scratch.slice(0, size as u32)?,
                    remote: RemoteAddr {
                        node: NodeId(primary as u16),
                        key,
                        offset: u64::from(addr.offset()),
                    },
                };
                context.endpoints[primary]
                    .execute(&[op], Duration::from_millis(REPLY_TIMEOUT_MS))?;
                context.scratch.read(0, &mut copy)?;
            }
            match region::parse_slot(&copy) {
                Ok((header, payload)) => {
                    if !header.allocated || header.incarnation != addr.incarnation() {
                        result = Err(TxnError::Failed(Error::StaleAddress {
                            addr,
                            found: header.incarnation,
                        }));
                    } else {
                        result = Ok((header, payload.to_vec()));
                    }
                    break;
                }
                Err(state) => {
                    let counter = match state {
                        SlotState::Locked => &self.node.stats.locked_reads,
                        SlotState::Torn => &self.node.stats.torn_reads,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if attempt > 8 {
                        // The lock may be waiting for a record this node's
                        // server has not processed yet (CI found a read
                        // right after a local commit giving up while the
                        // server thread was not scheduled): process it.
                        self.node.help();
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        self.buffer = copy;
        result
    }

    /// The value of the object at `addr`: this transaction's own write if
    /// it wrote it, else a consistent copy from the primary.
    pub fn read(&mut self, addr: Addr) -> Result<Vec<u8>, TxnError> {
        if let Some(write) = self.writes.iter().find(|w| w.addr == addr) {
            if !write.new.allocated {
                return Err(TxnError::Failed(Error::StaleAddress {
                    addr,
                    found: write.new.incarnation,
                }));
            }
            return Ok(write.payload.clone());
        }
        if let Some(read) = self.reads.iter().position(|r| r.addr == addr) {
            // Re-read, but it must be the version we saw (else abort now).
            let (header, payload) = self.read_slot(addr)?;
            if header != self.reads[read].header {
                return Err(TxnError::Conflict(AbortReason::Validation));
            }
            return Ok(payload);
        }
        let (header, payload) = self.read_slot(addr)?;
        self.reads.push(ReadEntry { addr, header });
        Ok(payload)
    }

    /// Reads a plain-old-data value.
    pub fn read_pod<T: bytemuck::Pod>(&mut self, addr: Addr) -> Result<T, TxnError> {
        let bytes = self.read(addr)?;
        if bytes.len() != std::mem::size_of::<T>() {
            return Err(TxnError::Failed(Error::BadAddress {
                addr,
                why: "object size differs from the type's",
            }));
        }
        Ok(bytemuck::pod_read_unaligned(&bytes))
    }

    /// Buffers a new value for the object at `addr` (read first if it was
    /// not, for the version the LOCK needs).
    pub fn write(&mut self, addr: Addr, value: &[u8]) -> Result<(), TxnError> {
        let capacity = class_bytes(addr.class()) - crate::limits::OBJECT_OVERHEAD_BYTES;
        if value.len() > capacity as usize {
            return Err(TxnError::Failed(Error::ObjectTooLarge {
                bytes: value.len(),
                max: capacity,
            }));
        }
        if let Some(write) = self.writes.iter_mut().find(|w| w.addr == addr) {
            if !write.new.allocated {
                return Err(TxnError::Failed(Error::StaleAddress {
                    addr,
                    found: write.new.incarnation,
                }));
            }
            write.payload.clear();
            write.payload.extend_from_slice(value);
            return Ok(());
        }
        let header = match self.reads.iter().find(|r| r.addr == addr) {
            Some(read) => read.header,
            None => {
                self.read(addr)?;
                self.reads.last().expect("just read").header
            }
        };
        self.writes.push(WriteEntry {
            addr,
            expected: header,
            new: header.after_write(),
            payload: value.to_vec(),
            allocated_here: false,
        });
        Ok(())
    }

    pub fn write_pod<T: bytemuck::Pod>(&mut self, addr: Addr, value: &T) -> Result<(), TxnError> {
        self.write(addr, bytemuck::bytes_of(value))
    }

    /// Allocates an object of `value.len()` bytes in a region this node is
    /// primary of, with `value` as its contents. It exists for others once
    /// the transaction commits; an abort gives the slot back.
    pub fn alloc(&mut self, value: &[u8]) -> Result<Addr, TxnError> {
        let class = region::class_for(value.len())?;
        let node = self.node.clone();
        let mut last_error = None;
        for region in node.placement.primaried_by(node.id) {
            let Some(Some(allocator)) = node.allocators.get(usize::from(region)) else {
                continue;
            };
            let mr = node.replicas[usize::from(region)]
                .as_ref()
                .expect("primary holds its region");
            // An aborted transaction gives its slots back at once, but their
            // lock goes only when its ABORT record is processed: skip such a
            // slot for now (regression: TPC-C's concurrent inserts hit it).
            let mut taken = None;
            let mut locked_seen = false;
            for _ in 0..1024 {
                let (offset, slab_change) =
                    match allocator.lock().expect("allocator lock").take(class) {
                        Ok(taken) => taken,
                        Err(error) => {
                            last_error = Some(error);
                            break;
                        }
                    };
                if let Some((table_offset, value)) = slab_change {
                    self.replicate_slab_table(region, table_offset, value)?;
                }
                let header =
                    Header::decode(region::header_word(mr, offset)?.load(Ordering::Acquire));
                if header.locked {
                    allocator
                        .lock()
                        .expect("allocator lock")
                        .release_later(offset, class);
                    locked_seen = true;
                    continue;
                }
                assert!(!header.allocated, "allocator handed out a live slot");
                taken = Some((offset, header));
                break;
            }
            let Some((offset, header)) = taken else {
                if locked_seen && last_error.is_none() {
                    // Every free slot is still locked by aborts in flight.
                    return Err(TxnError::Conflict(AbortReason::LockConflict));
                }
                continue;
            };
            let addr = Addr::new(region, class, header.incarnation, offset);
            self.writes.push(WriteEntry {
                addr,
                expected: header,
                new: header.after_write(),
                payload: value.to_vec(),
                allocated_here: true,
            });
            return Ok(addr);
        }
        Err(TxnError::Failed(last_error.unwrap_or(Error::Config(
            format!("node {} is primary of no region", node.id),
        ))))
    }

    /// Copies a slab-table byte the allocator just wrote to every backup of
    /// `region` (one-sided WRITEs): the table must be the same on every
    /// replica for a backup to take over. An assigned but unused slab is
    /// harmless, so this need not wait for the commit.
    fn replicate_slab_table(&mut self, region: u16, offset: u64, value: u8) -> Result<()> {
        let node = self.node.clone();
        let context = self.context.as_mut().expect("live context");
        context.scratch.write(0, &[value])?;
        for backup in node.placement.backups(region) {
            let key = node.directory().region_keys[backup][usize::from(region)]
                .expect("every replica is registered");
            let op = Op::Write {
                local: context.scratch.slice(0, 1)?,
                remote: RemoteAddr {
                    node: NodeId(backup as u16),
                    key,
                    offset,
                },
            };
            context.endpoints[backup].execute(&[op], Duration::from_millis(REPLY_TIMEOUT_MS))?;
        }
        Ok(())
    }

    /// Frees the object at `addr` when the transaction commits: its slot's
    /// incarnation moves on, so `addr` and every copy of it become stale.
    pub fn free(&mut self, addr: Addr) -> Result<(), TxnError> {
        if let Some(index) = self.writes.iter().position(|w| w.addr == addr) {
            if self.writes[index].allocated_here {
                // Allocated and freed in one transaction: never existed.
                let write = self.writes.remove(index);
                self.release_slot(&write);
                return Ok(());
            }
        } else {
            self.read(addr)?;
        }
        let header = self
            .reads
            .iter()
            .find(|r| r.addr == addr)
            .expect("read above")
            .header;
        let new = Header {
            locked: false,
            allocated: false,
            incarnation: header.next_incarnation(),
            version: header.version + 1,
        };
        match self.writes.iter_mut().find(|w| w.addr == addr) {
            Some(write) => {
                write.new = new;
                write.payload.clear();
            }
            None => self.writes.push(WriteEntry {
                addr,
                expected: header,
                new,
                payload: Vec::new(),
                allocated_here: false,
            }),
        }
        Ok(())
    }

    fn release_slot(&self, write: &WriteEntry) {
        if let Some(Some(allocator)) = self.node.allocators.get(usize::from(write.addr.region())) {
            allocator
                .lock()
                .expect("allocator lock")
                // Last in line: its lock may outlive this abort until the
                // primary processes the ABORT record.
                .release_later(write.addr.offset(), write.addr.class());
        }
    }

    /// Gives up: nothing was written anywhere.
    pub fn abort(mut self) {
        self.finish_aborted();
    }

    fn finish_aborted(&mut self) {
        for write in std::mem::take(&mut self.writes) {
            if write.allocated_here {
                self.release_slot(&write);
            }
        }
        if let Some(context) = self.context.take() {
            self.node.return_context(context);
        }
    }

    /// Runs the commit protocol.
    pub fn commit(self) -> Result<Outcome> {
        Ok(self.commit_timed()?.0)
    }

    /// [`Txn::commit`], also returning how long each phase took.
    pub fn commit_timed(mut self) -> Result<(Outcome, PhaseTimes)> {
        let outcome = self.commit_inner();
        match outcome {
            Ok(Outcome::Committed) => {
                if let Some(context) = self.context.take() {
                    self.node.return_context(context);
                }
                self.writes.clear();
            }
            _ => self.finish_aborted(),
        }
        outcome.map(|outcome| (outcome, self.phases))
    }

    fn commit_inner(&mut self) -> Result<Outcome> {
        if self.writes.is_empty() {
            if self.reads.len() <= 1 {
                return Ok(Outcome::Committed);
            }
            let started = std::time::Instant::now();
            let valid = self.validate()?;
            self.phases.validate_ns = started.elapsed().as_nanos() as u64;
            return Ok(if valid {
                Outcome::Committed
            } else {
                Outcome::Aborted(AbortReason::Validation)
            });
        }
        let node = self.node.clone();
        let placement = &node.placement;
        let mut primaries: Vec<usize> = self
            .writes
            .iter()
            .map(|w| placement.primary(w.addr.region()))
            .collect();
        primaries.sort_unstable();
        primaries.dedup();

        // 1. LOCK.
        let started = std::time::Instant::now();
        let txid = self.txid;
        let index = self.context().index;
        for &primary in &primaries {
            self.send_entries(
                Kind::Lock,
                primary,
                |w, p| p.primary(w.addr.region()) == primary,
                true,
            )?;
        }
        let granted = node.wait_replies(
            index,
            txid,
            &primaries,
            Duration::from_millis(REPLY_TIMEOUT_MS),
        );
        let Some(granted) = granted else {
            self.send_plain(Kind::Abort, &primaries)?;
            return Err(Error::ReplyTimeout {
                node: primaries[0],
                what: "LOCK",
                txid,
            });
        };
        self.phases.lock_ns = started.elapsed().as_nanos() as u64;
        if granted < primaries.len() {
            self.send_plain(Kind::Abort, &primaries)?;
            return Ok(Outcome::Aborted(AbortReason::LockConflict));
        }

        // 2. VALIDATE.
        let started = std::time::Instant::now();
        if !node.faults().skip_validation && !self.validate()? {
            self.send_plain(Kind::Abort, &primaries)?;
            return Ok(Outcome::Aborted(AbortReason::Validation));
        }
        self.phases.validate_ns = started.elapsed().as_nanos() as u64;

        // 3. COMMIT-BACKUP, and wait for the fabric's acknowledgements.
        let started = std::time::Instant::now();
        let mut backups: Vec<usize> = self
            .writes
            .iter()
            .flat_map(|w| placement.backups(w.addr.region()).collect::<Vec<_>>())
            .collect();
        backups.sort_unstable();
        backups.dedup();
        for &backup in &backups {
            self.send_entries(
                Kind::CommitBackup,
                backup,
                |w, p| p.backups(w.addr.region()).any(|b| b == backup),
                false,
            )?;
        }
        let timeout = Duration::from_millis(REPLY_TIMEOUT_MS);
        for &backup in &backups {
            self.context().endpoints[backup].wait(timeout)?;
        }
        self.phases.commit_backup_ns = started.elapsed().as_nanos() as u64;

        // 4. COMMIT-PRIMARY. FaRM reports the commit once the first is
        // acknowledged; we wait for all of them, because the truncation
        // queued below may be sent by another thread at once, and a
        // transaction must not be truncated (its COMMIT-BACKUPs dropped)
        // while a COMMIT-PRIMARY might still be lost: recovery would find
        // no evidence of its commit.
        let started = std::time::Instant::now();
        self.send_plain_unwaited(Kind::CommitPrimary, &primaries)?;
        for &primary in &primaries {
            self.context().endpoints[primary].wait(timeout)?;
        }
        self.phases.commit_primary_ns = started.elapsed().as_nanos() as u64;

        // 5. TRUNCATE, lazily, through the node's shared queue (a
        // per-context queue starved when its context sat idle in the pool,
        // and the ring head stayed behind its COMMIT-BACKUPs until the ring
        // was full: found by TPC-C's large records).
        if node.queue_truncation(&backups, txid) {
            flush_truncations(&node, self.context.as_mut().expect("live context"))?;
        }
        Ok(Outcome::Committed)
    }

    /// Re-reads the header of every object read but not written; true if
    /// none changed or is locked.
    fn validate(&mut self) -> Result<bool> {
        let node = self.node.clone();
        let to_check: Vec<(Addr, Header)> = self
            .reads
            .iter()
            .filter(|r| !self.writes.iter().any(|w| w.addr == r.addr))
            .map(|r| (r.addr, r.header))
            .collect();
        let context = self.context.as_mut().expect("live context");
        // Post one batch of 8-byte READs per remote primary, then wait.
        let mut remote: Vec<(usize, Vec<(usize, Addr)>)> = Vec::new();
        for (index, (addr, header)) in to_check.iter().enumerate() {
            let primary = node.placement.primary(addr.region());
            if primary == node.id {
                let mr = node.replicas[usize::from(addr.region())]
                    .as_ref()
                    .expect("primary holds its region");
                let word = region::header_word(mr, addr.offset())?.load(Ordering::Acquire);
                if word != header.encode() {
                    return Ok(false);
                }
                continue;
            }
            match remote.iter_mut().find(|(node, _)| *node == primary) {
                Some((_, list)) => list.push((index, *addr)),
                None => remote.push((primary, vec![(index, *addr)])),
            }
        }
        let limit = (READ_AREA_BYTES / 8) as usize;
        for (primary, list) in &remote {
            for chunk in list.chunks(rdma_transport::limits::BATCH_WR_COUNT_MAX.min(limit)) {
                let key = node.directory().region_keys[*primary][usize::from(chunk[0].1.region())];
                let mut ops = Vec::with_capacity(chunk.len());
                for (slot, (_, addr)) in chunk.iter().enumerate() {
                    let key =
                        node.directory().region_keys[*primary][usize::from(addr.region())].or(key);
                    ops.push(Op::Read {
                        local: context.scratch.slice(slot as u64 * 8, 8)?,
                        remote: RemoteAddr {
                            node: NodeId(*primary as u16),
                            key: key.expect("every replica is registered"),
                            offset: u64::from(addr.offset()),
                        },
                    });
                }
                context.endpoints[*primary]
                    .execute(&ops, Duration::from_millis(REPLY_TIMEOUT_MS))?;
                for (slot, (index, _)) in chunk.iter().enumerate() {
                    let word = context
                        .scratch
                        .atomic_u64(slot as u64 * 8)?
                        .load(Ordering::Acquire);
                    if word != to_check[*index].1.encode() {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Sends a LOCK or COMMIT-BACKUP record with the writes `select` picks.
    fn send_entries(
        &mut self,
        kind: Kind,
        target: usize,
        select: impl Fn(&WriteEntry, &crate::config::Placement) -> bool,
        notify: bool,
    ) -> Result<()> {
        let node = self.node.clone();
        let context = self.context.as_mut().expect("live context");
        let record = &mut context.record;
        start_record(record, kind, node.epoch, node.id, self.txid);
        put_entries(
            record,
            self.writes
                .iter()
                .filter(|w| select(w, &node.placement))
                .map(|w| (&w.addr, w.expected, w.new, w.payload.as_slice())),
        );
        let mut record = std::mem::take(&mut context.record);
        let result = node.send(
            target,
            &mut record,
            &context.scratch,
            context.endpoints[target].as_mut(),
            notify,
        );
        context.record = record;
        result
    }

    fn send_plain_unwaited(&mut self, kind: Kind, targets: &[usize]) -> Result<()> {
        let node = self.node.clone();
        let txid = self.txid;
        let context = self.context.as_mut().expect("live context");
        for &target in targets {
            let mut record = std::mem::take(&mut context.record);
            start_record(&mut record, kind, node.epoch, node.id, txid);
            let result = node.send(
                target,
                &mut record,
                &context.scratch,
                context.endpoints[target].as_mut(),
                true,
            );
            context.record = record;
            result?;
        }
        Ok(())
    }

    fn send_plain(&mut self, kind: Kind, targets: &[usize]) -> Result<()> {
        self.send_plain_unwaited(kind, targets)?;
        let context = self.context.as_mut().expect("live context");
        for &target in targets {
            context.endpoints[target].wait(Duration::from_millis(REPLY_TIMEOUT_MS))?;
        }
        Ok(())
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.context.is_some() {
            self.finish_aborted();
        }
    }
}

/// Sends the TRUNCATE records a context has gathered.
pub(crate) fn flush_truncations(node: &NodeShared, context: &mut Context) -> Result<()> {
    send_truncations(
        node,
        &context.scratch,
        &mut context.endpoints,
        &mut context.record,
    )
}

/// Sends the node's queued truncations, one TRUNCATE record per backup, on
/// the given endpoints (a context's, or the server's when it is idle).
pub(crate) fn send_truncations(
    node: &NodeShared,
    scratch: &Arc<rdma_transport::MemoryRegion>,
    endpoints: &mut [Box<dyn rdma_transport::Endpoint>],
    record: &mut Vec<u8>,
) -> Result<()> {
    for (backup, txids) in node.take_truncations().into_iter().enumerate() {
        if txids.is_empty() {
            continue;
        }
        start_record(record, Kind::Truncate, node.epoch, node.id, 0);
        record.extend_from_slice(&(txids.len() as u64).to_le_bytes());
        for txid in &txids {
            record.extend_from_slice(&txid.to_le_bytes());
        }
        node.send(backup, record, scratch, endpoints[backup].as_mut(), true)?;
    }
    Ok(())
}
