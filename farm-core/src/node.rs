//! A node: its memory (inbox and region replicas), its allocators, its
//! rings to every node, and the server thread that processes incoming
//! records (LOCK, COMMIT-PRIMARY, COMMIT-BACKUP, ABORT, TRUNCATE, replies).
//!
//! Threads: one server thread per node polls its rings, spinning briefly
//! and then blocking on the fabric's doorbell ([`Fabric::wait_notified`]), so
//! an idle cluster burns no CPU; application threads run transactions in
//! pooled [`Context`]s and block on a condition variable for LOCK replies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdma_transport::{Access, Backing, Endpoint, Fabric, MemoryRegion, NodeId, Op, RemoteAddr};

use crate::config::{Faults, Placement};
use crate::error::{Error, Result};
use crate::header::{Addr, Header};
use crate::limits::{CONTEXTS_MAX, RECORD_BYTES_MAX};

/// How long an idle server thread naps while application threads poll.
const POLLER_NAP_US: u64 = 100;
use crate::record::{self, Kind, PayloadReader, RecordBuilder};
use crate::region::{self, Allocator};
use crate::ring::{self, Polled, RingReceiver, RingSender};

/// Remote keys of every node's inbox and region replicas, the same on every
/// node (exchanged at start-up).
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub inbox_keys: Vec<u32>,
    /// `region_keys[node][region]`: the key of `node`'s replica of `region`.
    pub region_keys: Vec<Vec<Option<u32>>>,
}

/// Counters a node keeps about itself.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub records_processed: AtomicU64,
    pub corrupt_records: AtomicU64,
    pub lock_records: AtomicU64,
    pub truncated: AtomicU64,
    /// Object copies rejected because their footer did not match.
    pub torn_reads: AtomicU64,
    /// Object copies rejected because the object was locked.
    pub locked_reads: AtomicU64,
}

/// The state of one node that its server thread and its application
/// threads share.
pub struct NodeShared {
    pub id: usize,
    pub placement: Placement,
    /// Injected protocol faults; switchable at run time (tests load
    /// correctly, then break the protocol).
    faults: std::sync::atomic::AtomicU8,
    pub epoch: u32,
    pub fabric: Arc<dyn Fabric>,
    pub inbox: Arc<MemoryRegion>,
    /// This node's replica of each region it holds.
    pub replicas: Vec<Option<Arc<MemoryRegion>>>,
    pub(crate) allocators: Vec<Option<Mutex<Allocator>>>,
    pub directory: OnceLock<Directory>,
    senders: Vec<Mutex<RingSender>>,
    contexts: Mutex<Vec<Context>>,
    contexts_made: Mutex<usize>,
    pub stop: AtomicBool,
    /// Committed transactions whose backups still hold COMMIT-BACKUP
    /// records, per backup node, and how many transactions that is.
    truncations: Mutex<(Vec<Vec<u64>>, usize)>,
    /// The server, for application threads that help it (weak: the
    /// server holds this node).
    pub(crate) server: OnceLock<std::sync::Weak<Mutex<Server>>>,
    /// Application threads that poll this node's rings between their
    /// transactions ([`crate::Node::poller`]). While there are any, the
    /// server thread does not sleep on the doorbell (so senders need not
    /// wake it, a futex wake and a context switch per record on shm): it
    /// naps and leaves the records to them.
    pub(crate) pollers: std::sync::atomic::AtomicUsize,
    /// The fabric's notification counter when a poller last polled; see
    /// [`NodeShared::poll_if_notified`].
    polled_at: AtomicU64,
    pub stats: NodeStats,
    /// The last corrupt record seen, for people.
    pub last_corruption: Mutex<Option<String>>,
}

/// What a transaction needs to talk to the cluster, pooled per node: one
/// endpoint per node, scratch memory for READs and for staging records.
pub struct Context {
    pub(crate) index: usize,
    pub(crate) endpoints: Vec<Box<dyn Endpoint>>,
    pub(crate) scratch: Arc<MemoryRegion>,
    pub(crate) sequence: u32,
    pub(crate) record: Vec<u8>,
}

/// Scratch layout of a context: a READ area, then one staging area per
/// node (a PAD word, then the record).
pub(crate) const READ_AREA_BYTES: u64 = 64 * 1024;
pub(crate) fn staging_offset(node: usize) -> u64 {
    READ_AREA_BYTES + node as u64 * (RECORD_BYTES_MAX as u64 + 64)
}

impl NodeShared {
    pub(crate) fn new(
        id: usize,
        placement: Placement,
        faults: Faults,
        fabric: Arc<dyn Fabric>,
        inbox: Arc<MemoryRegion>,
        replicas: Vec<Option<Arc<MemoryRegion>>>,
    ) -> Result<NodeShared> {
        let placement_nodes = placement.nodes;
        let mut allocators = Vec::new();
        for (region, replica) in replicas.iter().enumerate() {
            let region = region as u16;
            allocators.push(match replica {
                Some(mr) if placement.primary(region) == id => {
                    Some(Mutex::new(Allocator::open(region, mr.clone())?))
                }
                _ => None,
            });
        }
        let senders = (0..placement.nodes)
            .map(|receiver| Mutex::new(RingSender::new(receiver, inbox.clone(), id)))
            .collect();

        Ok(NodeShared {
            id,
            placement,
            faults: std::sync::atomic::AtomicU8::new(faults.bits()),
            epoch: 1,
            fabric,
            inbox,
            replicas,
            allocators,
            directory: OnceLock::new(),
            senders,
            contexts: Mutex::new(Vec::new()),
            contexts_made: Mutex::new(0),
            stop: AtomicBool::new(false),
            truncations: Mutex::new((vec![Vec::new(); placement_nodes], 0)),
            server: OnceLock::new(),
            pollers: std::sync::atomic::AtomicUsize::new(0),
            polled_at: AtomicU64::new(u64::MAX),
            stats: NodeStats::default(),
            last_corruption: Mutex::new(None),
        })
    }

    pub fn faults(&self) -> Faults {
        Faults::from_bits(self.faults.load(Ordering::Relaxed))
    }

    pub fn set_faults(&self, faults: Faults) {
        self.faults.store(faults.bits(), Ordering::Relaxed);
    }

    pub fn directory(&self) -> &Directory {
        self.directory
            .get()
            .expect("directory is set before the node serves")
    }

    pub(crate) fn take_context(&self) -> Result<Context> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::ShutDown(self.id));
        }
        if let Some(context) = self.contexts.lock().expect("contexts lock").pop() {
            return Ok(context);
        }
        let index = {
            let mut made = self.contexts_made.lock().expect("contexts lock");
            if *made >= CONTEXTS_MAX {
                return Err(Error::Config(format!(
                    "more than {CONTEXTS_MAX} concurrent transactions on node {}",
                    self.id
                )));
            }
            *made += 1;
            *made - 1
        };
        self.make_context(index)
    }

    fn make_context(&self, index: usize) -> Result<Context> {
        let endpoints = (0..self.placement.nodes)
            .map(|node| self.fabric.connect(NodeId(node as u16)))
            .collect::<Result<Vec<_>, _>>()?;
        let scratch_bytes = staging_offset(self.placement.nodes);
        let scratch = self.fabric.register(
            Backing::Anonymous { len: scratch_bytes },
            Access::LOCAL_WRITE,
        )?;
        Ok(Context {
            index,
            endpoints,
            scratch,
            sequence: 0,
            record: Vec::with_capacity(RECORD_BYTES_MAX),
        })
    }

    /// Queues the truncation of `txid` at `backups`; true when enough are
    /// queued that the caller should send them.
    pub(crate) fn queue_truncation(&self, backups: &[usize], txid: u64) -> bool {
        let mut queue = self.truncations.lock().expect("truncations lock");
        for &backup in backups {
            queue.0[backup].push(txid);
        }
        queue.1 += 1;
        queue.1 >= crate::limits::TRUNCATE_BATCH
    }

    /// Takes every queued truncation, per backup node.
    pub(crate) fn take_truncations(&self) -> Vec<Vec<u64>> {
        let mut queue = self.truncations.lock().expect("truncations lock");
        queue.1 = 0;
        let nodes = queue.0.len();
        std::mem::replace(&mut queue.0, vec![Vec::new(); nodes])
    }

    pub(crate) fn has_truncations(&self) -> bool {
        self.truncations.lock().expect("truncations lock").1 > 0
    }

    /// Free slots of size class `class` in `region`, if this node is its
    /// primary (for tests and statistics).
    pub fn free_slots(&self, region: u16, class: u8) -> usize {
        match self.allocators.get(usize::from(region)) {
            Some(Some(allocator)) => allocator.lock().expect("allocator lock").free_slots(class),
            _ => 0,
        }
    }

    /// A pooled context, if one is idle (never makes one).
    pub(crate) fn take_idle_context(&self) -> Option<Context> {
        self.contexts.lock().expect("contexts lock").pop()
    }

    /// True when every ring this node sends on has been fully retired by
    /// its receiver (as the receivers last told us).
    pub fn rings_idle(&self) -> bool {
        self.senders.iter().all(|sender| {
            let mut sender = sender.lock().expect("ring sender lock");
            sender.refresh_head();
            sender.used() == 0
        })
    }

    pub(crate) fn return_context(&self, context: Context) {
        self.contexts.lock().expect("contexts lock").push(context);
    }

    /// Runs one pass of the server if no other thread is running it.
    /// [`NodeShared::help`], skipped when no notification arrived since
    /// the last time a thread polled through here (where the fabric can
    /// tell). Records sent without a notification (COMMIT-BACKUP,
    /// TRUNCATE) are left to the server thread then: nobody waits on them.
    /// (Regression: polling on every call cost read-only YCSB-C a third of
    /// its throughput.)
    pub(crate) fn poll_if_notified(&self) {
        let Some(now) = self.fabric.notification_counter() else {
            self.help();
            return;
        };
        if self.polled_at.load(Ordering::Relaxed) == now {
            return;
        }
        if let Some(server) = self.server.get().and_then(std::sync::Weak::upgrade) {
            if let Ok(mut server) = server.try_lock() {
                // Read before polling: a notification after this read moves
                // the counter again, so it is never skipped.
                self.polled_at.store(now, Ordering::Relaxed);
                let _ = server.poll_once();
            }
        }
    }

    pub(crate) fn help(&self) {
        if let Some(server) = self.server.get().and_then(std::sync::Weak::upgrade) {
            if let Ok(mut server) = server.try_lock() {
                let _ = server.poll_once();
            }
        }
    }

    /// Waits until every primary of `primaries` answered the LOCK of
    /// `txid` (sent from `context`); returns how many granted it. The
    /// primaries WRITE their answers into this node's inbox, so the client
    /// polls memory: no thread of this node needs to wake for it.
    pub(crate) fn wait_replies(
        &self,
        context: usize,
        txid: u64,
        primaries: &[usize],
        timeout: Duration,
    ) -> Option<usize> {
        let granted = ring::reply_word(txid, true);
        let refused = ring::reply_word(txid, false);
        let started = Instant::now();
        let mut last_progress = started;
        let mut spins = 0u32;
        loop {
            let mut answered = 0;
            let mut yes = 0;
            for &primary in primaries {
                let word = self
                    .inbox
                    .atomic_u64(ring::reply_slot(context, primary))
                    .expect("reply slot in inbox")
                    // This Acquire pairs with the primary's WRITE of its
                    // answer, made after it took (or refused) the locks.
                    .load(Ordering::Acquire);
                if word == granted {
                    answered += 1;
                    yes += 1;
                } else if word == refused {
                    answered += 1;
                }
            }
            if answered == primaries.len() {
                return Some(yes);
            }
            spins += 1;
            if spins < 128 {
                std::hint::spin_loop();
                continue;
            }
            if spins.is_multiple_of(16) {
                self.help();
            } else {
                std::thread::yield_now();
            }
            if spins.is_multiple_of(64) {
                let now = Instant::now();
                if now.duration_since(started) >= timeout {
                    return None;
                }
                if now.duration_since(last_progress) >= Duration::from_millis(1) {
                    last_progress = now;
                    let _ = self.fabric.progress();
                }
            }
        }
    }

    /// Reserves ring space, keeping the fabric's housekeeping going while
    /// the ring is full (the receiver may need our receives re-posted to
    /// make the progress we wait for). Returns the sender still locked:
    /// the caller posts the record before releasing it, so that records
    /// are written in the order of their positions and a sender that dies
    /// leaves no gap before a later, complete record (on shm a post is the
    /// copy itself; on verbs it fixes the posting order only).
    fn reserve(
        &self,
        target: usize,
        len: usize,
    ) -> Result<(std::sync::MutexGuard<'_, RingSender>, ring::Reservation)> {
        let started = Instant::now();
        loop {
            let mut sender = self.senders[target].lock().expect("ring sender lock");
            match sender.reserve_within(len, Duration::from_millis(1)) {
                Ok(reservation) => return Ok((sender, reservation)),
                Err(Error::RingFull { .. })
                    if started.elapsed() < Duration::from_millis(crate::limits::RING_WAIT_MS) =>
                {
                    drop(sender);
                    self.fabric.progress()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Appends the record built in `record` to the ring to `target`,
    /// staging it in `scratch` and posting it on `endpoint`. Only posted:
    /// the caller waits for the fabric's completion when it needs it.
    pub(crate) fn send(
        &self,
        target: usize,
        record: &mut Vec<u8>,
        scratch: &Arc<MemoryRegion>,
        endpoint: &mut dyn Endpoint,
        notify: bool,
    ) -> Result<()> {
        // Reusing the staging area needs the previous WRITE from it done.
        if endpoint.outstanding() > 0 {
            endpoint.wait(Duration::from_millis(crate::limits::REPLY_TIMEOUT_MS))?;
        }
        let len = record.len() + record::TRAILER_BYTES;
        let (_sender, reservation) = self.reserve(target, len)?;
        // The trailer's tag needs the position, known only now.
        finish_record(record, reservation.position)?;
        let staging = staging_offset(target);
        scratch.write(staging + 8, record)?;
        let inbox_key = self.directory().inbox_keys[target];
        let node = NodeId(target as u16);
        let mut ops: [Option<Op>; 2] = [None, None];
        if let Some((offset, word)) = reservation.pad {
            scratch.write(staging, &word.to_le_bytes())?;
            ops[0] = Some(Op::Write {
                local: scratch.slice(staging, 8)?,
                remote: RemoteAddr {
                    node,
                    key: inbox_key,
                    offset,
                },
            });
        }
        let local = scratch.slice(staging + 8, record.len() as u32)?;
        let remote = RemoteAddr {
            node,
            key: inbox_key,
            offset: reservation.inbox_offset,
        };
        ops[1] = Some(if notify {
            Op::WriteNotify { local, remote }
        } else {
            Op::Write { local, remote }
        });
        let batch: Vec<Op> = ops.into_iter().flatten().collect();
        endpoint.post(&batch)?;
        Ok(())
    }
}

pub(crate) fn finish_record(buffer: &mut Vec<u8>, position: u64) -> Result<usize> {
    let len = buffer.len() + record::TRAILER_BYTES;
    if len > RECORD_BYTES_MAX {
        return Err(Error::RecordTooLarge {
            bytes: len,
            max: RECORD_BYTES_MAX,
        });
    }
    let kind = Kind::from_u8(buffer[6]).expect("a built record has its kind");
    buffer[..8].copy_from_slice(&record::header_word(kind, len).to_le_bytes());
    let trailer = (u64::from(record::tag(position)) << 32) | u64::from(record::checksum(buffer));
    buffer.extend_from_slice(&trailer.to_le_bytes());
    Ok(len)
}

/// Starts a record body (header words) in `buffer`.
pub(crate) fn start_record(buffer: &mut Vec<u8>, kind: Kind, epoch: u32, sender: usize, txid: u64) {
    RecordBuilder::new(buffer, kind, epoch, sender as u16, txid);
}

/// One object write in a LOCK or COMMIT-BACKUP record.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub addr: Addr,
    pub expected: Header,
    pub new: Header,
    pub payload: Vec<u8>,
}

pub(crate) fn put_entries<'a>(
    buffer: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a Addr, Header, Header, &'a [u8])>,
) {
    let count_at = buffer.len();
    buffer.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for (addr, expected, new, payload) in entries {
        buffer.extend_from_slice(&addr.0.to_le_bytes());
        buffer.extend_from_slice(&expected.encode().to_le_bytes());
        buffer.extend_from_slice(&new.encode().to_le_bytes());
        buffer.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        buffer.extend_from_slice(payload);
        buffer.resize(buffer.len().next_multiple_of(8), 0);
        count += 1;
    }
    buffer[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
}

/// This node's replica of `addr`'s region.
pub(crate) fn replica_of(
    replicas: &[Option<Arc<MemoryRegion>>],
    addr: Addr,
) -> Result<&Arc<MemoryRegion>> {
    replicas
        .get(usize::from(addr.region()))
        .and_then(Option::as_ref)
        .ok_or(Error::BadAddress {
            addr,
            why: "this node holds no replica of its region",
        })
}

/// Releases a lock taken at `entry.expected`, leaving the object as it was.
pub(crate) fn unlock_entry(replicas: &[Option<Arc<MemoryRegion>>], entry: &Entry) -> Result<()> {
    let word = region::header_word(replica_of(replicas, entry.addr)?, entry.addr.offset())?;
    word.store(entry.expected.with_lock(false).encode(), Ordering::Release);
    Ok(())
}

/// Installs `entry` unless the replica already holds that version or a
/// newer one: backups apply truncations in any order, and a restarted node
/// may replay what it had applied before it died.
pub(crate) fn install_if_newer(
    replicas: &[Option<Arc<MemoryRegion>>],
    entry: &Entry,
) -> Result<()> {
    let mr = replica_of(replicas, entry.addr)?;
    let current =
        Header::decode(region::header_word(mr, entry.addr.offset())?.load(Ordering::Acquire));
    if current.version < entry.new.version {
        region::install(
            mr,
            entry.addr.offset(),
            entry.addr.class(),
            entry.new,
            &entry.payload,
        )?;
    }
    Ok(())
}

pub(crate) fn parse_entries(payload: &[u8]) -> Result<Vec<Entry>, &'static str> {
    let mut reader = PayloadReader::new(payload);
    let count = reader.u64()?;
    let mut entries = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let addr = Addr(reader.u64()?);
        let expected = Header::decode(reader.u64()?);
        let new = Header::decode(reader.u64()?);
        let len = reader.u64()? as usize;
        if len > crate::limits::OBJECT_PAYLOAD_MAX as usize {
            return Err("entry payload too large");
        }
        let payload = reader.bytes(len)?.to_vec();
        entries.push(Entry {
            addr,
            expected,
            new,
            payload,
        });
    }
    Ok(entries)
}

/// A LOCK this node granted, kept until COMMIT-PRIMARY or ABORT.
struct PendingLock {
    sender: usize,
    position: u64,
    entries: Vec<Entry>,
    /// False under the `skip_lock` fault: nothing to unlock then.
    locked: bool,
}

/// A COMMIT-BACKUP kept until TRUNCATE.
struct PendingBackup {
    sender: usize,
    position: u64,
    entries: Vec<Entry>,
}

/// The server thread's state.
pub(crate) struct Server {
    node: Arc<NodeShared>,
    receivers: Vec<RingReceiver>,
    endpoints: Vec<Box<dyn Endpoint>>,
    scratch: Arc<MemoryRegion>,
    record: Vec<u8>,
    locks: HashMap<u64, PendingLock>,
    backups: HashMap<u64, PendingBackup>,
}

impl Server {
    pub(crate) fn new(node: Arc<NodeShared>) -> Result<Server> {
        let receivers = (0..node.placement.nodes)
            .map(|sender| RingReceiver::new(sender, node.inbox.clone()))
            .collect();
        let endpoints = (0..node.placement.nodes)
            .map(|peer| node.fabric.connect(NodeId(peer as u16)))
            .collect::<Result<Vec<_>, _>>()?;
        let scratch = node.fabric.register(
            Backing::Anonymous {
                len: staging_offset(node.placement.nodes),
            },
            Access::LOCAL_WRITE,
        )?;
        Ok(Server {
            node,
            receivers,
            endpoints,
            scratch,
            record: Vec::with_capacity(RECORD_BYTES_MAX),
            locks: HashMap::new(),
            backups: HashMap::new(),
        })
    }

    /// Polls and processes until the node stops.
    /// The server thread: polls and processes until the node stops. The
    /// server sits behind a mutex that application threads of this node
    /// may also take (see [`NodeShared::help`]): on a machine with fewer
    /// cores than threads, a client waiting for a LOCK answer is often the
    /// thread that is running, and it can process the records its peers
    /// wait on instead of waiting for the server thread to be scheduled.
    pub(crate) fn run(server: Arc<Mutex<Server>>) {
        let node = server.lock().expect("server lock").node.clone();
        let mut idle_rounds = 0u32;
        while !node.stop.load(Ordering::Acquire) {
            let worked = {
                let mut server = server.lock().expect("server lock");
                match server.poll_once() {
                    Ok(worked) => worked,
                    Err(error) => {
                        eprintln!("farm node {}: server error: {error}", node.id);
                        1
                    }
                }
            };
            if worked > 0 {
                idle_rounds = 0;
                let _ = node.fabric.progress();
                continue;
            }
            idle_rounds += 1;
            if idle_rounds < 64 {
                std::hint::spin_loop();
                continue;
            }
            // Idle: tell senders what we retired, then sleep until a
            // WriteNotify rings the doorbell (or a little while passes, so
            // records written without a notification are seen too).
            {
                let mut server = server.lock().expect("server lock");
                if let Err(error) = server.publish_heads(true) {
                    eprintln!(
                        "farm node {}: publishing ring heads failed: {error}",
                        node.id
                    );
                }
                // Truncations queued by transactions that finished while
                // the node then went quiet.
                if node.has_truncations() {
                    let server = &mut *server;
                    if let Err(error) = crate::txn::send_truncations(
                        &server.node,
                        &server.scratch,
                        &mut server.endpoints,
                        &mut server.record,
                    ) {
                        eprintln!("farm node {}: sending truncations failed: {error}", node.id);
                    }
                }
            }
            if node.pollers.load(Ordering::Acquire) > 0 {
                // Application threads poll between transactions: look again
                // soon, in case they all stay busy, without being woken.
                // (On verbs, notifications still consume receives: keep
                // them posted.)
                let _ = node.fabric.progress();
                std::thread::sleep(Duration::from_micros(POLLER_NAP_US));
            } else {
                let _ = node.fabric.wait_notified(Duration::from_millis(2));
            }
        }
    }

    /// One pass over every ring; returns how many records it processed.
    pub(crate) fn poll_once(&mut self) -> Result<usize> {
        let mut worked = 0;
        for sender in 0..self.receivers.len() {
            loop {
                let mut record = std::mem::take(&mut self.record);
                let polled = self.receivers[sender].poll(&mut record);
                let result = match polled {
                    Ok(Polled::Empty) => {
                        self.record = record;
                        break;
                    }
                    Ok(Polled::Record { position, .. }) => self.handle(sender, position, &record),
                    Err(Error::RingCorrupt(why)) => {
                        self.node
                            .stats
                            .corrupt_records
                            .fetch_add(1, Ordering::Relaxed);
                        eprintln!("farm node {}: {why}", self.node.id);
                        *self.node.last_corruption.lock().expect("corruption lock") = Some(why);
                        self.record = record;
                        break;
                    }
                    Err(error) => Err(error),
                };
                self.record = record;
                result?;
                worked += 1;
            }
        }
        if worked > 0 {
            self.publish_heads(false)?;
        }
        Ok(worked)
    }

    fn retire(&mut self, sender: usize, position: u64) {
        self.receivers[sender].retire(position);
    }

    /// Tells senders how far we retired: always when `idle`, otherwise only
    /// rings that retired a good share since the last time.
    fn publish_heads(&mut self, idle: bool) -> Result<()> {
        for sender in 0..self.receivers.len() {
            let receiver = &mut self.receivers[sender];
            if !idle && receiver.unpublished_bytes() < crate::limits::RING_BYTES / 8 {
                continue;
            }
            let Some(head) = receiver.take_publishable() else {
                continue;
            };
            let slot = 8 * sender as u64;
            self.scratch.write(slot, &head.to_le_bytes())?;
            let op = Op::Write {
                local: self.scratch.slice(slot, 8)?,
                remote: RemoteAddr {
                    node: NodeId(sender as u16),
                    key: self.node.directory().inbox_keys[sender],
                    offset: ring::head_slot(self.node.id),
                },
            };
            self.endpoints[sender].execute(
                &[op],
                Duration::from_millis(crate::limits::REPLY_TIMEOUT_MS),
            )?;
        }
        Ok(())
    }

    fn handle(&mut self, sender: usize, position: u64, bytes: &[u8]) -> Result<()> {
        self.node
            .stats
            .records_processed
            .fetch_add(1, Ordering::Relaxed);
        let record =
            record::parse(bytes, position).map_err(|why| Error::RingCorrupt(why.to_string()))?;
        let txid = record.txid;
        let malformed = |why: &str| Error::RingCorrupt(format!("record from node {sender}: {why}"));
        match record.kind {
            Kind::Pad => unreachable!("the ring skips pads"),
            Kind::Lock => {
                self.node.stats.lock_records.fetch_add(1, Ordering::Relaxed);
                let entries = parse_entries(record.payload).map_err(malformed)?;
                let skip_lock = self.node.faults().skip_lock;
                let granted = if skip_lock {
                    true
                } else {
                    self.try_lock(&entries)?
                };
                if granted {
                    self.locks.insert(
                        txid,
                        PendingLock {
                            sender,
                            position,
                            entries,
                            locked: !skip_lock,
                        },
                    );
                } else {
                    self.retire(sender, position);
                }
                self.reply(sender, txid, granted)?;
            }
            Kind::LockReply => {
                // Answers travel as one-sided WRITEs now (see
                // wait_replies); a record of this kind is only retired.
                self.retire(sender, position);
            }
            Kind::CommitPrimary => {
                if let Some(lock) = self.locks.remove(&txid) {
                    for entry in &lock.entries {
                        self.install_primary(entry)?;
                    }
                    self.retire(lock.sender, lock.position);
                }
                self.retire(sender, position);
            }
            Kind::Abort => {
                if let Some(lock) = self.locks.remove(&txid) {
                    if lock.locked {
                        for entry in &lock.entries {
                            self.unlock(entry)?;
                        }
                    }
                    self.retire(lock.sender, lock.position);
                }
                self.retire(sender, position);
            }
            Kind::CommitBackup => {
                let entries = parse_entries(record.payload).map_err(malformed)?;
                self.backups.insert(
                    txid,
                    PendingBackup {
                        sender,
                        position,
                        entries,
                    },
                );
            }
            Kind::Truncate => {
                let mut reader = PayloadReader::new(record.payload);
                let count = reader.u64().map_err(malformed)?;
                for _ in 0..count {
                    let truncated = reader.u64().map_err(malformed)?;
                    if let Some(backup) = self.backups.remove(&truncated) {
                        for entry in &backup.entries {
                            self.install_backup(entry)?;
                        }
                        self.node.stats.truncated.fetch_add(1, Ordering::Relaxed);
                        self.retire(backup.sender, backup.position);
                    }
                }
                self.retire(sender, position);
            }
        }
        Ok(())
    }

    fn replica(&self, addr: Addr) -> Result<&Arc<MemoryRegion>> {
        replica_of(&self.node.replicas, addr)
    }

    /// CAS-locks every object at its expected header; all or nothing.
    fn try_lock(&self, entries: &[Entry]) -> Result<bool> {
        for (index, entry) in entries.iter().enumerate() {
            let word = region::header_word(self.replica(entry.addr)?, entry.addr.offset())?;
            let expected = entry.expected.with_lock(false).encode();
            let locked = entry.expected.with_lock(true).encode();
            // AcqRel: the Acquire pairs with the Release of the install that
            // wrote the expected version; the Release orders our lock before
            // the install we do at COMMIT-PRIMARY.
            if word
                .compare_exchange(expected, locked, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                for done in &entries[..index] {
                    self.unlock(done)?;
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn unlock(&self, entry: &Entry) -> Result<()> {
        unlock_entry(&self.node.replicas, entry)
    }

    fn install_primary(&self, entry: &Entry) -> Result<()> {
        let mr = self.replica(entry.addr)?;
        region::install(
            mr,
            entry.addr.offset(),
            entry.addr.class(),
            entry.new,
            &entry.payload,
        )?;
        let region = usize::from(entry.addr.region());
        if entry.expected.allocated && !entry.new.allocated {
            // A free: the slot goes back to the primary's allocator.
            if let Some(Some(allocator)) = self.node.allocators.get(region) {
                allocator
                    .lock()
                    .expect("allocator lock")
                    .release(entry.addr.offset(), entry.addr.class());
            }
        }
        Ok(())
    }

    /// Applies a truncated transaction's write to this backup's replica;
    /// only a newer version replaces an older one, so truncations may
    /// arrive in any order.
    fn install_backup(&self, entry: &Entry) -> Result<()> {
        install_if_newer(&self.node.replicas, entry)
    }

    /// Answers a LOCK: one 8-byte WRITE into the coordinator's inbox.
    fn reply(&mut self, coordinator: usize, txid: u64, ok: bool) -> Result<()> {
        let context = ((txid >> 32) & 0xffff) as usize;
        let staging = 1024 + 8 * coordinator as u64;
        self.scratch
            .write(staging, &ring::reply_word(txid, ok).to_le_bytes())?;
        let op = Op::Write {
            local: self.scratch.slice(staging, 8)?,
            remote: RemoteAddr {
                node: NodeId(coordinator as u16),
                key: self.node.directory().inbox_keys[coordinator],
                offset: ring::reply_slot(context, self.node.id),
            },
        };
        self.endpoints[coordinator].execute(
            &[op],
            Duration::from_millis(crate::limits::REPLY_TIMEOUT_MS),
        )?;
        Ok(())
    }
}
