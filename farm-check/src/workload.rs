//! The workload `farm check` runs: random transactions over registers and
//! append-only lists spread over every node, from many client threads,
//! recorded as a history for [`crate::check()`].
//!
//! Every register write is a read-modify-write (the engine reads an object
//! before writing it anyway, and recording the read lets the checker order
//! the writes) of a value unique to the writing client; every list append
//! adds an element unique to it. A register that was never written holds 0,
//! recorded as "never written".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_core::{
    AbortCounts, AbortReason, Addr, Cluster, Node, Outcome as EngineOutcome, TxnError,
};
use serde::{Deserialize, Serialize};

use crate::history::{Outcome, Recorder};
use crate::History;

/// How long a client that survives failures goes without a transaction
/// that was not `Unavailable` before it gives up (see
/// [`WorkloadOptions::survive_failures`]).
pub const SURVIVE_STALL: Duration = Duration::from_secs(60);

/// Elements a list object holds; once full, appends to it turn into reads.
pub const LIST_CAPACITY: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadOptions {
    pub txns: u64,
    pub threads: usize,
    /// Transactions each client thread keeps in flight: above 1 the thread
    /// is a `farm_core::Worker` running that many clients as tasks.
    #[serde(default = "one")]
    pub in_flight: usize,
    pub registers: usize,
    pub lists: usize,
    /// Micro-operations per transaction: 1 to this many.
    pub ops_max: usize,
    pub seed: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Keep going when the engine fails a transaction (nodes are being
    /// killed): a failed begin or read counts as an abort, a failed commit
    /// as [`Outcome::Unknown`], and the client goes on with the next one.
    #[serde(default)]
    pub survive_failures: bool,
}

fn one() -> usize {
    1
}

impl WorkloadOptions {
    /// Checks every field a user or a driver chose, before anything runs
    /// (a zero count or bound would divide by zero in the clients).
    ///
    /// # Errors
    /// The first field out of range, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.txns == 0 {
            return Err("txns: at least 1".into());
        }
        if !(1..=64).contains(&self.threads) {
            return Err("threads per node: 1 to 64".into());
        }
        if !(1..=256).contains(&self.in_flight.max(1)) {
            return Err("transactions in flight per client thread: 1 to 256".into());
        }
        match self.registers.checked_add(self.lists) {
            Some(objects) if (1..=1 << 20).contains(&objects) => {}
            _ => return Err("registers + lists: 1 to 2^20".into()),
        }
        if !(1..=64).contains(&self.ops_max) {
            return Err("operations per transaction: 1 to 64".into());
        }
        Ok(())
    }
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            txns: 10_000,
            threads: 6,
            in_flight: 1,
            registers: 64,
            lists: 32,
            ops_max: 4,
            seed: 1,
            progress: false,
            survive_failures: false,
        }
    }
}

pub struct WorkloadResult {
    pub history: History,
    pub elapsed: Duration,
    pub aborted_by_reason: AbortCounts,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

fn list_decode(bytes: &[u8]) -> Vec<u64> {
    let count = u64::from_le_bytes(bytes[..8].try_into().expect("list header")) as usize;
    (0..count.min(LIST_CAPACITY))
        .map(|i| u64::from_le_bytes(bytes[8 + i * 8..16 + i * 8].try_into().expect("element")))
        .collect()
}

fn list_encode(elements: &[u64]) -> Vec<u8> {
    let mut bytes = vec![0u8; 8 + LIST_CAPACITY * 8];
    bytes[..8].copy_from_slice(&(elements.len() as u64).to_le_bytes());
    for (i, element) in elements.iter().enumerate() {
        bytes[8 + i * 8..16 + i * 8].copy_from_slice(&element.to_le_bytes());
    }
    bytes
}

/// Allocates the workload's objects that `node` owns (keys k with
/// k % nodes == node's id): registers, then lists. Returns (key, address).
pub fn allocate_keys(
    node: &Node,
    nodes: usize,
    options: &WorkloadOptions,
) -> farm_core::Result<Vec<(usize, Addr)>> {
    let mut owned = Vec::new();
    for key in (0..options.registers + options.lists).filter(|key| key % nodes == node.id()) {
        let initial = if key < options.registers {
            0u64.to_le_bytes().to_vec()
        } else {
            list_encode(&[])
        };
        owned.push((key, node.run(|txn| txn.alloc(&initial))?));
    }
    Ok(owned)
}

/// Reads every list in one read-only transaction, recorded in `recorder`
/// (retried while it aborts): the state that every acknowledged append
/// must be in once the clients are done. Returns (key, elements) per list.
///
/// # Errors
/// The engine's; [`farm_core::Error::RetriesExhausted`] when it still
/// aborts after [`SURVIVE_STALL`] (a configuration change in progress
/// makes it wait and retry).
pub fn final_read(
    node: &Node,
    addrs: &[Addr],
    options: &WorkloadOptions,
    recorder: &Recorder,
) -> farm_core::Result<Vec<(u64, Vec<u64>)>> {
    let mut log = recorder.client();
    let started = Instant::now();
    let mut last = AbortReason::ReadConflict;
    let mut attempts = 0;
    while started.elapsed() < SURVIVE_STALL {
        attempts += 1;
        if last == AbortReason::Unavailable {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut record = log.begin();
        let mut txn = match node.begin() {
            Ok(txn) => txn,
            Err(_) if started.elapsed() < SURVIVE_STALL => {
                // The gate is closed (a configuration change): try again.
                record.finish(Outcome::Aborted);
                last = AbortReason::Unavailable;
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut lists = Vec::new();
        let mut conflict = None;
        let lists_at = addrs.iter().enumerate().skip(options.registers);
        for (key, &addr) in lists_at.take(options.lists) {
            match txn.read(addr) {
                Ok(bytes) => {
                    let elements = list_decode(&bytes);
                    record.read_list(key as u64, elements.clone());
                    lists.push((key as u64, elements));
                }
                Err(TxnError::Conflict(reason)) => {
                    conflict = Some(reason);
                    break;
                }
                Err(TxnError::Failed(error)) => return Err(error),
            }
        }
        if let Some(reason) = conflict {
            txn.abort();
            record.finish(Outcome::Aborted);
            last = reason;
            continue;
        }
        record.committing();
        match txn.commit()? {
            EngineOutcome::Committed => {
                record.finish(Outcome::Committed);
                return Ok(lists);
            }
            EngineOutcome::Aborted(reason) => {
                record.finish(Outcome::Aborted);
                last = reason;
            }
        }
    }
    Err(farm_core::Error::RetriesExhausted {
        attempts,
        waited: started.elapsed(),
        last,
    })
}

/// Runs the workload on `cluster` and returns its history.
pub fn run(cluster: &Cluster, options: &WorkloadOptions) -> farm_core::Result<WorkloadResult> {
    let nodes = cluster.nodes().len();
    let mut keyed: Vec<(usize, Addr)> = Vec::new();
    for node in cluster.nodes() {
        keyed.extend(allocate_keys(node, nodes, options)?);
    }
    keyed.sort_unstable();
    let addrs: Vec<Addr> = keyed.into_iter().map(|(_, addr)| addr).collect();
    // Every object is installed everywhere before the clients start.
    cluster.quiesce(Duration::from_secs(30))?;
    let recorder = Recorder::new();
    let local: Vec<&Node> = cluster.nodes().iter().collect();
    let (elapsed, aborted_by_reason) = run_clients(&local, &addrs, options, &recorder)?;
    Ok(WorkloadResult {
        history: recorder.history(),
        elapsed,
        aborted_by_reason,
    })
}

/// Runs `options.txns` transactions from `options.threads` client threads
/// spread over `nodes`, recording into `recorder`. Returns the time taken
/// and aborts by reason.
pub fn run_clients(
    nodes: &[&Node],
    addrs: &[Addr],
    options: &WorkloadOptions,
    recorder: &Recorder,
) -> farm_core::Result<(Duration, AbortCounts)> {
    run_clients_with_progress(nodes, addrs, options, recorder, &|done, rate| {
        eprintln!(
            "check: {done}/{} transactions ({rate:.0} tx/s)",
            options.txns
        );
    })
}

/// [`run_clients`], calling `progress(finished transactions, rate per
/// second)` about once a second when `options.progress`.
///
/// # Errors
/// The engine's, from any client.
pub fn run_clients_with_progress(
    nodes: &[&Node],
    addrs: &[Addr],
    options: &WorkloadOptions,
    recorder: &Recorder,
    progress: &(dyn Fn(u64, f64) + Sync),
) -> farm_core::Result<(Duration, AbortCounts)> {
    let addrs = Arc::new(addrs.to_vec());

    let issued = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let aborts: Arc<[AtomicU64; AbortReason::ALL.len()]> = Arc::new(Default::default());
    let started = Instant::now();
    let result: farm_core::Result<()> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for thread in 0..options.threads {
            let (addrs, issued, finished, aborts) = (
                addrs.clone(),
                issued.clone(),
                finished.clone(),
                aborts.clone(),
            );
            // One client (a sequential history) per transaction in flight.
            let in_flight = options.in_flight.max(1);
            let logs: Vec<_> = (0..in_flight)
                .map(|_| std::cell::Cell::new(Some(recorder.client())))
                .collect();
            let node = nodes[thread % nodes.len()];
            let options = options.clone();
            handles.push(scope.spawn(move || -> farm_core::Result<()> {
                // Between transactions this thread serves its node's rings.
                let _poller = node.poller();
                let client_loop = |task: usize| -> farm_core::Result<()> {
                    let mut log = logs[task].take().expect("each task takes its own log");
                    // Values are unique per client: its id (unique across the
                    // processes of one check) above a counter.
                    let client = u64::from(log.client_id().0) + 1;
                    let mut rng =
                        Rng(options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (client << 17) | 1);
                    let mut unique = 0u64;
                    // With `survive_failures`: when the engine last got a
                    // transaction through; a client gives up after
                    // SURVIVE_STALL without one (the cluster lost its
                    // majority, say) rather than wait for ever.
                    let mut progressed = Instant::now();
                    while issued.fetch_add(1, Ordering::Relaxed) < options.txns {
                        node.poll();
                        let mut record = log.begin();
                        let mut txn = match node.begin() {
                            Ok(txn) => txn,
                            Err(_)
                                if options.survive_failures
                                    && progressed.elapsed() < SURVIVE_STALL =>
                            {
                                record.finish(Outcome::Aborted);
                                finished.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Err(error) => return Err(error),
                        };
                        let ops = 1 + rng.below(options.ops_max);
                        let mut conflict = None;
                        for _ in 0..ops {
                            let key = rng.below(addrs.len());
                            let addr = addrs[key];
                            let kind = rng.below(100);
                            let step: Result<(), TxnError> = (|| {
                                if key < options.registers {
                                    let value: u64 = txn.read_pod(addr)?;
                                    record.read_register(key as u64, (value != 0).then_some(value));
                                    if kind < 45 {
                                        unique += 1;
                                        let new = (client << 40) | unique;
                                        txn.write_pod(addr, &new)?;
                                        record.write_register(key as u64, new);
                                    }
                                } else {
                                    let mut elements = list_decode(&txn.read(addr)?);
                                    record.read_list(key as u64, elements.clone());
                                    if kind < 50 && elements.len() < LIST_CAPACITY {
                                        unique += 1;
                                        let element = (client << 40) | unique;
                                        elements.push(element);
                                        txn.write(addr, &list_encode(&elements))?;
                                        record.append(key as u64, element);
                                    }
                                }
                                Ok(())
                            })();
                            match step {
                                Ok(()) => {}
                                Err(TxnError::Conflict(reason)) => {
                                    conflict = Some(reason);
                                    break;
                                }
                                Err(TxnError::Failed(_)) if options.survive_failures => {
                                    conflict = Some(AbortReason::Unavailable);
                                    break;
                                }
                                Err(TxnError::Failed(error)) => return Err(error),
                            }
                        }
                        let outcome = match conflict {
                            Some(reason) => {
                                txn.abort();
                                EngineOutcome::Aborted(reason)
                            }
                            None => {
                                record.committing();
                                match txn.commit() {
                                    Ok(outcome) => outcome,
                                    Err(_)
                                        if options.survive_failures
                                            && progressed.elapsed() < SURVIVE_STALL =>
                                    {
                                        // Dropped unfinished: recorded unknown.
                                        drop(record);
                                        finished.fetch_add(1, Ordering::Relaxed);
                                        continue;
                                    }
                                    Err(error) => return Err(error),
                                }
                            }
                        };
                        if options.survive_failures
                            && outcome != EngineOutcome::Aborted(AbortReason::Unavailable)
                        {
                            progressed = Instant::now();
                        }
                        match outcome {
                            EngineOutcome::Committed => record.finish(Outcome::Committed),
                            EngineOutcome::Aborted(reason) => {
                                let slot = AbortReason::ALL
                                    .iter()
                                    .position(|r| *r == reason)
                                    .expect("every reason is in ALL");
                                aborts[slot].fetch_add(1, Ordering::Relaxed);
                                record.finish(Outcome::Aborted);
                            }
                        }
                        finished.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                };
                if in_flight == 1 {
                    return client_loop(0);
                }
                // A worker: the clients run as tasks on this thread.
                farm_core::Worker::new(node, in_flight)
                    .run(client_loop)?
                    .into_iter()
                    .collect()
            }));
        }
        if options.progress {
            let mut last = Instant::now();
            while handles.iter().any(|h| !h.is_finished()) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    let done = finished.load(Ordering::Relaxed);
                    progress(done, done as f64 / started.elapsed().as_secs_f64());
                }
            }
        }
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("workload thread panicked"))
    });
    result?;
    let mut counts = AbortCounts::default();
    for (reason, count) in AbortReason::ALL.iter().zip(aborts.iter()) {
        counts.add(*reason, count.load(Ordering::Relaxed));
    }
    Ok((started.elapsed(), counts))
}
