//! Transactions: optimistic execution with one-sided reads and buffered
//! writes (FaRM SOSP'15 §4). A [`Txn`] reads objects from their primaries
//! (local memory when the primary is this node, else one RDMA READ),
//! buffers its writes, allocations and frees, and commits through the
//! coordinator's steps ([`crate::coordinator`]). `commit` and `abort`
//! consume it; dropping it aborts. An abort before commit sends nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::config::Configuration;
use crate::coordinator::{self, ReadEntry, WriteEntry};
use crate::error::TxnError;
use crate::error::{Error, Result};
use crate::header::{Addr, Header};
use crate::limits::{READ_SPINS, READ_WAIT_MS};
use crate::node::contexts::{Context, READ_AREA_BYTES};
use crate::node::NodeShared;
use crate::outcome::{AbortReason, Outcome, PhaseTimes};
use crate::region::{self, check_slot, class_bytes};
use crate::txn_id::TxnId;

use crate::codec::object::{self, SlotState};

/// The read set, write set and read buffer of a finished transaction of
/// this thread, emptied, for a next one: in steady state `begin`
/// allocates none of them (issue 11: no heap allocation per transaction).
/// A stack of them, one per transaction a worker keeps in flight.
struct Spare {
    reads: Vec<ReadEntry>,
    writes: Vec<WriteEntry>,
    buffer: Vec<u8>,
}

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Spare>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A read's error: on a node whose membership agent reconfigures around a
/// failed primary, a fabric error is a conflict (the transaction is retried
/// in the new configuration).
fn fabric_error(node: &NodeShared, error: Error) -> TxnError {
    match error {
        Error::Fabric(_) if node.gate.managed() => TxnError::Conflict(AbortReason::Unavailable),
        error => error.into(),
    }
}

/// Which objects of a [`Txn::read_adjacent_with`] the transaction
/// depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    First,
    Second,
    Both,
}

/// A transaction. `commit` consumes it; dropping it aborts.
pub struct Txn {
    node: Arc<NodeShared>,
    context: Option<Context>,
    txid: TxnId,
    reads: Vec<ReadEntry>,
    writes: Vec<WriteEntry>,
    buffer: Vec<u8>,
    /// Whether it holds a slot of the node's bound on transactions in
    /// flight ([`crate::node::admission`]).
    admitted: bool,
    /// How long each commit phase took (after `commit_timed`).
    pub phases: PhaseTimes,
}

impl Txn {
    pub(crate) fn begin(node: Arc<NodeShared>) -> Result<Txn> {
        // While the configuration changes, wait for the new one (FaRM
        // SOSP'15 §5.2: new transactions are blocked, not failed).
        let waited = Duration::from_millis(crate::limits::RECOVERY_WAIT_MS);
        if !node.gate.wait_open(waited) {
            return Err(Error::Unavailable {
                node: node.id,
                waited,
            });
        }
        let admitted = node
            .admission
            .enter(node.id, || node.hook.poll_if_notified(node.fabric.as_ref()))?;
        let mut context = match node.take_context() {
            Ok(context) => context,
            Err(error) => {
                if admitted {
                    node.admission.release();
                }
                return Err(error);
            }
        };
        context.sequence = context.sequence.wrapping_add(1);
        let txid = TxnId::new(node.id, context.index, context.sequence);
        let spare = SPARE.with_borrow_mut(Vec::pop).unwrap_or(Spare {
            reads: Vec::new(),
            writes: Vec::new(),
            buffer: Vec::new(),
        });
        Ok(Txn {
            node,
            context: Some(context),
            txid,
            reads: spare.reads,
            writes: spare.writes,
            buffer: spare.buffer,
            admitted,
            phases: PhaseTimes::default(),
        })
    }

    pub fn id(&self) -> TxnId {
        self.txid
    }

    /// The configuration this transaction runs in.
    fn config(&self) -> &Configuration {
        &self
            .context
            .as_ref()
            .expect("a live transaction has its context")
            .view
            .config
    }

    fn context(&mut self) -> &mut Context {
        self.context
            .as_mut()
            .expect("a live transaction has its context")
    }

    fn check_addr(&self, addr: Addr) -> Result<()> {
        if usize::from(addr.region()) >= self.config().regions() {
            return Err(Error::BadAddress {
                addr,
                why: "no such region",
            });
        }
        check_slot(addr, self.node.replicas.region_bytes())
            .map_err(|why| Error::BadAddress { addr, why })
    }

    /// Reads a consistent copy of the slot at `addr` from its primary,
    /// retrying while it is locked or torn: its header, and where its
    /// payload is in `self.buffer`.
    fn read_slot(&mut self, addr: Addr) -> Result<(Header, std::ops::Range<usize>), TxnError> {
        self.check_addr(addr)?;
        let primary = self.config().primary(addr.region());
        let mut copy = std::mem::take(&mut self.buffer);
        copy.resize(class_bytes(addr.class()) as usize, 0);
        let mut result = Err(TxnError::Conflict(AbortReason::ReadConflict));
        // Borrowed, not cloned: no write to the node's reference count per
        // read (measured alone it changed nothing beyond noise).
        let node: &NodeShared = &self.node;
        let context = self
            .context
            .as_mut()
            .expect("a live transaction has its context");
        let mut waiting_since: Option<Instant> = None;
        for attempt in 0u32.. {
            if let Err(error) = coordinator::read_slot_copy(node, context, primary, addr, &mut copy)
            {
                self.buffer = copy;
                return Err(fabric_error(node, error));
            }
            match object::decode(&copy) {
                Ok(slot) => {
                    result = if !slot.header.allocated || slot.incarnation != addr.incarnation() {
                        Err(TxnError::Failed(Error::StaleAddress {
                            addr,
                            found: slot.incarnation,
                        }))
                    } else {
                        let start = slot.payload.as_ptr() as usize - copy.as_ptr() as usize;
                        Ok((slot.header, start..start + slot.payload.len()))
                    };
                    break;
                }
                Err(state) => {
                    let counter = match state {
                        SlotState::Locked => &node.stats.locked_reads,
                        SlotState::Torn => &node.stats.torn_reads,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    // In a task, the thread's other transactions run while
                    // this object stays locked.
                    let paused = crate::task::pause_after(attempt);
                    if attempt < READ_SPINS {
                        if !paused {
                            std::hint::spin_loop();
                        }
                        continue;
                    }
                    // Regression: a bounded count of retries gave up while
                    // the primary's server thread, which would install the
                    // commit and unlock, waited for a core (a test saw a
                    // read right after another node's commit fail 1 run in
                    // 6). Wait by the clock instead.
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_millis(READ_WAIT_MS) {
                        break;
                    }
                    // The lock may be waiting for a record this node's
                    // server has not processed yet: process it.
                    node.help();
                    if paused {
                        continue;
                    }
                    if attempt < 1024 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
        }
        self.buffer = copy;
        result
    }

    /// The value of the object at `addr`: this transaction's own write if
    /// it wrote it, else a consistent copy from the primary.
    ///
    /// # Errors
    /// [`TxnError::Conflict`] when the object stays locked or changes
    /// between two reads of this transaction; [`Error::StaleAddress`] for
    /// a freed object; [`Error::BadAddress`] for an address that names no
    /// slot.
    pub fn read(&mut self, addr: Addr) -> Result<Vec<u8>, TxnError> {
        self.read_with(addr, <[u8]>::to_vec)
    }

    /// [`Txn::read`], handing the value to `with` instead of returning a
    /// copy: a caller that decodes the value (the hash table its buckets)
    /// allocates nothing.
    ///
    /// # Errors
    /// As [`Txn::read`].
    pub fn read_with<R>(
        &mut self,
        addr: Addr,
        with: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, TxnError> {
        if let Some(write) = self.writes.iter().find(|w| w.addr == addr) {
            if !write.new.allocated {
                return Err(TxnError::Failed(Error::StaleAddress {
                    addr,
                    found: addr.next_incarnation(),
                }));
            }
            return Ok(with(&write.payload));
        }
        if let Some(read) = self.reads.iter().position(|r| r.addr == addr) {
            // Re-read, but it must be the version we saw (else abort now).
            let (header, payload) = self.read_slot(addr)?;
            if header != self.reads[read].header {
                return Err(TxnError::Conflict(AbortReason::Validation));
            }
            return Ok(with(&self.buffer[payload]));
        }
        let (header, payload) = self.read_slot(addr)?;
        self.reads.push(ReadEntry { addr, header });
        Ok(with(&self.buffer[payload]))
    }

    /// Whether this transaction read or wrote the object at `addr` already.
    pub(crate) fn touched(&self, addr: Addr) -> bool {
        self.writes.iter().any(|w| w.addr == addr) || self.reads.iter().any(|r| r.addr == addr)
    }

    /// Reads the objects at `first` and `second`, neighbours in one region
    /// (`second`'s slot starts where `first`'s ends), with one READ of
    /// both, and hands both values to `with`, which says which of them the
    /// transaction depends on: only those join its read set (and are
    /// validated at its commit). For a structure that reads a
    /// neighbourhood and uses part of it: a hash table's lookup reads a
    /// key's home bucket and the next one together (FaRM NSDI'14 §5) and
    /// keeps only the bucket that answered, so a lookup that found its key
    /// in one bucket leaves a read-only transaction of one object, which
    /// commits without validation.
    ///
    /// Two objects that are not neighbours, either one this transaction
    /// read or wrote before, and either one found locked or torn are read
    /// one at a time as [`Txn::read`] reads them, and then both are kept.
    ///
    /// # Errors
    /// As [`Txn::read`].
    pub(crate) fn read_adjacent_with<R>(
        &mut self,
        first: Addr,
        second: Addr,
        with: impl FnOnce(&[u8], &[u8]) -> (R, Keep),
    ) -> Result<R, TxnError> {
        let bytes = class_bytes(first.class());
        let neighbours = first.region() == second.region()
            && first.class() == second.class()
            && u64::from(second.offset()) == u64::from(first.offset()) + u64::from(bytes)
            && !self
                .writes
                .iter()
                .any(|w| w.addr == first || w.addr == second)
            && !self
                .reads
                .iter()
                .any(|r| r.addr == first || r.addr == second);
        if neighbours {
            self.check_addr(first)?;
            self.check_addr(second)?;
            let primary = self.config().primary(first.region());
            let node: &NodeShared = &self.node;
            let context = self
                .context
                .as_mut()
                .expect("a live transaction has its context");
            let mut copy = std::mem::take(&mut self.buffer);
            copy.resize(2 * bytes as usize, 0);
            if let Err(error) =
                coordinator::read_slot_copy(node, context, primary, first, &mut copy)
            {
                self.buffer = copy;
                return Err(fabric_error(node, error));
            }
            let (one, two) = copy.split_at(bytes as usize);
            let consistent = |addr: Addr, bytes: &[u8]| {
                object::decode(bytes).ok().and_then(|slot| {
                    let start = slot.payload.as_ptr() as usize - bytes.as_ptr() as usize;
                    (slot.header.allocated && slot.incarnation == addr.incarnation())
                        .then(|| (slot.header, start..start + slot.payload.len()))
                })
            };
            if let (Some((header_one, at_one)), Some((header_two, at_two))) =
                (consistent(first, one), consistent(second, two))
            {
                let (result, keep) = with(&one[at_one], &two[at_two]);
                if keep != Keep::Second {
                    self.reads.push(ReadEntry {
                        addr: first,
                        header: header_one,
                    });
                }
                if keep != Keep::First {
                    self.reads.push(ReadEntry {
                        addr: second,
                        header: header_two,
                    });
                }
                self.buffer = copy;
                return Ok(result);
            }
            // Locked, torn or freed: the one-at-a-time reads below wait it
            // out or say what is wrong.
            self.buffer = copy;
        }
        let one = self.read(first)?;
        let two = self.read(second)?;
        Ok(with(&one, &two).0)
    }

    /// Reads every object of `addrs` as [`Txn::read_with`] reads one, and
    /// hands each value to `with` with its index in `addrs` (in no set
    /// order), but posts the READs of objects on other nodes together
    /// before waiting for any: one round trip for the lot, where a
    /// [`Txn::read`] per object takes a round trip each (FaRM NSDI'14 §3:
    /// a transaction issues its independent READs in parallel). Meant for
    /// the handful of objects a transaction knows it needs together: the
    /// bookkeeping grows with the square of `addrs.len()`. An object
    /// found locked or torn, one this transaction read or wrote before, and
    /// one past what a round trip carries (one batch of
    /// `rdma_transport::limits::BATCH_WR_COUNT_MAX` READs per primary, 64
    /// KiB in all) are read alone afterwards, as [`Txn::read`] reads them.
    ///
    /// # Errors
    /// As [`Txn::read`], for the first object that fails; `with` may have
    /// had some of the other values by then.
    pub fn read_many_with(
        &mut self,
        addrs: &[Addr],
        mut with: impl FnMut(usize, &[u8]),
    ) -> Result<(), TxnError> {
        // (index in `addrs`, primary, offset in the read area)
        let mut together: SmallVec<[(usize, usize, u64); 8]> = SmallVec::new();
        let mut area = 0u64;
        for (index, &addr) in addrs.iter().enumerate() {
            if self.check_addr(addr).is_err()
                || addrs[..index].contains(&addr)
                || self.writes.iter().any(|w| w.addr == addr)
                || self.reads.iter().any(|r| r.addr == addr)
            {
                continue;
            }
            let primary = self.config().primary(addr.region());
            let bytes = u64::from(class_bytes(addr.class()));
            let batch = together.iter().filter(|(_, p, _)| *p == primary).count();
            if primary == self.node.id
                || area + bytes > READ_AREA_BYTES
                || batch >= rdma_transport::limits::BATCH_WR_COUNT_MAX
            {
                continue;
            }
            together.push((index, primary, area));
            area += bytes;
        }
        let mut done: SmallVec<[bool; 8]> = smallvec::smallvec![false; addrs.len()];
        if together.len() > 1 {
            let slots: SmallVec<[(usize, Addr, u64); 8]> = together
                .iter()
                .map(|&(index, primary, at)| (primary, addrs[index], at))
                .collect();
            let node: &NodeShared = &self.node;
            let context = self
                .context
                .as_mut()
                .expect("a live transaction has its context");
            if let Err(error) = coordinator::read_slots_together(node, context, &slots) {
                return Err(fabric_error(node, error));
            }
            self.buffer.resize(area as usize, 0);
            context.scratch.read(0, &mut self.buffer)?;
            for &(index, _, at) in &together {
                let addr = addrs[index];
                let copy =
                    &self.buffer[at as usize..(at + u64::from(class_bytes(addr.class()))) as usize];
                // Locked or torn: left for the one-at-a-time read below,
                // which waits it out.
                if let Ok(slot) = object::decode(copy) {
                    if !slot.header.allocated || slot.incarnation != addr.incarnation() {
                        return Err(TxnError::Failed(Error::StaleAddress {
                            addr,
                            found: slot.incarnation,
                        }));
                    }
                    self.reads.push(ReadEntry {
                        addr,
                        header: slot.header,
                    });
                    with(index, slot.payload);
                    done[index] = true;
                }
            }
        }
        for (index, &addr) in addrs.iter().enumerate() {
            if !done[index] {
                self.read_with(addr, |value| with(index, value))?;
            }
        }
        Ok(())
    }

    /// Reads a plain-old-data value.
    ///
    /// # Errors
    /// As [`Txn::read`], and [`Error::BadAddress`] when the object's size
    /// is not the type's.
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
    ///
    /// # Errors
    /// As [`Txn::read`], and [`Error::ObjectTooLarge`] when `value` does
    /// not fit the object's slot.
    pub fn write(&mut self, addr: Addr, value: &[u8]) -> Result<(), TxnError> {
        self.check_addr(addr)?;
        let capacity = object::capacity(class_bytes(addr.class()));
        if value.len() > capacity {
            return Err(TxnError::Failed(Error::ObjectTooLarge {
                bytes: value.len(),
                max: capacity as u32,
            }));
        }
        if let Some(write) = self.writes.iter_mut().find(|w| w.addr == addr) {
            if !write.new.allocated {
                return Err(TxnError::Failed(Error::StaleAddress {
                    addr,
                    found: addr.next_incarnation(),
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
    ///
    /// # Errors
    /// [`Error::ObjectTooLarge`], [`Error::OutOfMemory`] when every region
    /// of this node is full, [`Error::NotPrimary`] when this node is primary
    /// of none; a conflict when every free slot is still locked by aborts
    /// in flight.
    pub fn alloc(&mut self, value: &[u8]) -> Result<Addr, TxnError> {
        let class = region::class_for(value.len())?;
        let node = self.node.clone();
        let mut last_error = None;
        let primaried: Vec<u16> = self.config().primaried_by(node.id).collect();
        for region in primaried {
            let Some(allocator) = node.allocators.get(region) else {
                continue;
            };
            let mr = node
                .replicas
                .get(region)
                .expect("a primary holds its region");
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
                if let Some(change) = slab_change {
                    coordinator::replicate_slab_table(self.context(), region, change)?;
                }
                let header =
                    Header::decode(region::header_word(mr, offset)?.load(Ordering::Acquire));
                if header.locked {
                    allocator
                        .lock()
                        .expect("allocator lock")
                        .release(offset, class);
                    locked_seen = true;
                    continue;
                }
                assert!(!header.allocated, "allocator handed out a live slot");
                taken = Some((offset, header, region::incarnation(mr, offset)?));
                break;
            }
            let Some((offset, header, incarnation)) = taken else {
                if locked_seen && last_error.is_none() {
                    // Every free slot is still locked by aborts in flight.
                    return Err(TxnError::Conflict(AbortReason::LockConflict));
                }
                continue;
            };
            let addr = Addr::new(region, class, incarnation, offset);
            self.writes.push(WriteEntry {
                addr,
                expected: header,
                new: header.after_write(),
                payload: value.to_vec(),
                allocated_here: true,
            });
            return Ok(addr);
        }
        Err(TxnError::Failed(
            last_error.unwrap_or(Error::NotPrimary { node: node.id }),
        ))
    }

    /// Frees the object at `addr` when the transaction commits: its slot's
    /// incarnation moves on, so `addr` and every copy of it become stale.
    ///
    /// # Errors
    /// As [`Txn::read`].
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
        let new = header.after_free();
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
        // Last in line: its lock may outlive this abort until the primary
        // processes the ABORT record.
        self.node.allocators.release(write.addr);
    }

    /// Gives up: nothing was written anywhere.
    pub fn abort(mut self) {
        self.finish_aborted();
    }

    fn finish_aborted(&mut self) {
        let mut writes = std::mem::take(&mut self.writes);
        for write in writes.drain(..) {
            if write.allocated_here {
                self.release_slot(&write);
            }
        }
        self.writes = writes;
        self.give_back_context();
        self.keep_spare();
    }

    /// Returns the context to the node's pool, and the slot of the bound on
    /// transactions in flight if it took one.
    fn give_back_context(&mut self) {
        if let Some(context) = self.context.take() {
            self.node.return_context(context);
        }
        if std::mem::take(&mut self.admitted) {
            self.node.admission.release();
        }
    }

    /// Leaves this transaction's emptied sets and buffer to the thread's
    /// next transaction.
    fn keep_spare(&mut self) {
        let mut reads = std::mem::take(&mut self.reads);
        let mut writes = std::mem::take(&mut self.writes);
        reads.clear();
        writes.clear();
        let buffer = std::mem::take(&mut self.buffer);
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < crate::limits::CONTEXTS_MAX {
                spare.push(Spare {
                    reads,
                    writes,
                    buffer,
                });
            }
        });
    }

    /// Runs the commit protocol ([`crate::coordinator::commit`]).
    ///
    /// # Errors
    /// A fabric error, a full ring, a primary that does not answer; a
    /// conflict is an [`Outcome::Aborted`], not an error.
    pub fn commit(self) -> Result<Outcome> {
        Ok(self.commit_timed()?.0)
    }

    /// [`Txn::commit`], also returning how long each phase took.
    ///
    /// # Errors
    /// As [`Txn::commit`].
    pub fn commit_timed(mut self) -> Result<(Outcome, PhaseTimes)> {
        let mut context = self
            .context
            .take()
            .expect("a live transaction has its context");
        let outcome = coordinator::commit(
            &self.node,
            &mut context,
            self.txid,
            &self.reads,
            &self.writes,
            &mut self.phases,
        );
        self.context = Some(context);
        match outcome {
            Ok(Outcome::Committed) => {
                self.give_back_context();
                self.keep_spare();
            }
            _ => self.finish_aborted(),
        }
        outcome.map(|outcome| (outcome, self.phases))
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.context.is_some() {
            self.finish_aborted();
        }
    }
}
