//! Recording what clients of a workload asked for and what came back.
//!
//! A [`Recorder`] hands every client thread its own [`ClientLog`]. A client
//! records one transaction at a time with [`ClientLog::begin`], which stamps
//! the invocation time, then the micro-operations as they return, then
//! [`TxnRecord::finish`] with the outcome, which stamps the completion time.
//! Nothing on that path takes a lock or touches memory shared with other
//! clients: each log pushes into its own `Vec`, and hands the whole `Vec` to
//! the recorder once, when it is dropped. [`Recorder::history`] merges the
//! handed-in logs into a [`History`].
//!
//! Times are nanoseconds of the monotonic clock since the recorder was
//! created, shared by all threads of the process. The invocation is stamped
//! before the transaction's first operation is sent and the completion after
//! its outcome is known, so the recorded interval contains the interval in
//! which the database executed the transaction; that is what makes real-time
//! order inferred from the stamps sound.
//!
//! This module checks nothing about isolation; [`mod@crate::check`] does.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One step of a transaction, with the value it wrote or observed.
///
/// Keys of registers and keys of lists live in separate name spaces only if
/// the workload keeps them apart: a key must be used either as a register or
/// as a list throughout a history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MicroOp {
    /// Read a register; `None` means the key had never been written.
    ReadRegister { key: u64, value: Option<u64> },
    /// Overwrote a register. Values must be unique per key in a history.
    WriteRegister { key: u64, value: u64 },
    /// Appended an element to a list. Elements must be unique per key.
    Append { key: u64, element: u64 },
    /// Read a whole list, oldest element first; empty if never appended to.
    ReadList { key: u64, elements: Vec<u64> },
}

impl MicroOp {
    pub fn key(&self) -> u64 {
        match *self {
            MicroOp::ReadRegister { key, .. }
            | MicroOp::WriteRegister { key, .. }
            | MicroOp::Append { key, .. }
            | MicroOp::ReadList { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(
            self,
            MicroOp::ReadRegister { .. } | MicroOp::ReadList { .. }
        )
    }

    pub fn is_list(&self) -> bool {
        matches!(self, MicroOp::Append { .. } | MicroOp::ReadList { .. })
    }
}

/// How a transaction ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The commit was acknowledged.
    Committed,
    /// The transaction certainly did not commit (a conflict, an explicit
    /// abort, or an error before the commit was sent).
    Aborted,
    /// Indeterminate: the client crashed, timed out or lost its connection
    /// after the commit may have started. It may or may not have committed.
    Unknown,
}

/// Which client thread (or process) ran a transaction.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ClientId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// A transaction's place in its [`History`]: the index into
/// [`History::txns`], which are ordered by invocation time. Anomalies name
/// transactions by this id, printed as `T<id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.0)
    }
}

/// One recorded transaction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Txn {
    pub client: ClientId,
    /// When the client started the transaction, in nanoseconds since the
    /// recorder started.
    pub invoke_ns: u64,
    /// When the client learned the outcome (or gave up, for `Unknown`).
    pub complete_ns: u64,
    /// In the order the client performed them.
    pub ops: Vec<MicroOp>,
    pub outcome: Outcome,
}

/// A complete history: every transaction of a run, ordered by invocation
/// time (ties broken by client, then completion time).
#[derive(Clone, Debug, Default)]
pub struct History {
    txns: Vec<Txn>,
}

impl History {
    /// Orders `txns` by invocation time. Panics if a transaction completed
    /// before it was invoked: the clock or the recording is broken.
    pub fn new(mut txns: Vec<Txn>) -> History {
        for txn in &txns {
            assert!(
                txn.invoke_ns <= txn.complete_ns,
                "{} recorded a transaction that completed ({} ns) before it was invoked ({} ns)",
                txn.client,
                txn.complete_ns,
                txn.invoke_ns
            );
        }
        txns.sort_by_key(|t| (t.invoke_ns, t.client, t.complete_ns));
        History { txns }
    }

    /// One history of the transactions of several (from processes of one
    /// host, recorded with [`Recorder::for_process`]).
    /// [`History::new`] for transactions from elsewhere (another
    /// process): an impossible one is an error, not a panic.
    ///
    /// # Errors
    /// Names a transaction that completed before it was invoked.
    pub fn try_new(txns: Vec<Txn>) -> Result<History, String> {
        if let Some(txn) = txns.iter().find(|t| t.invoke_ns > t.complete_ns) {
            return Err(format!(
                "{} recorded a transaction that completed ({} ns) before it was invoked ({} ns)",
                txn.client, txn.complete_ns, txn.invoke_ns
            ));
        }
        Ok(History::new(txns))
    }

    pub fn merge(parts: impl IntoIterator<Item = History>) -> History {
        History::new(parts.into_iter().flat_map(|part| part.txns).collect())
    }

    pub fn txns(&self) -> &[Txn] {
        &self.txns
    }

    pub fn txn(&self, id: TxnId) -> &Txn {
        &self.txns[id.0 as usize]
    }

    /// Every transaction with its id.
    pub fn iter(&self) -> impl Iterator<Item = (TxnId, &Txn)> {
        self.txns
            .iter()
            .enumerate()
            .map(|(i, t)| (TxnId(i as u64), t))
    }

    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.txns.iter().filter(|t| t.outcome == outcome).count()
    }
}

struct Shared {
    clock: Clock,
    client_next: AtomicU32,
    /// Logs of clients that have finished; touched once per client, never
    /// per transaction.
    submitted: Mutex<Vec<Vec<Txn>>>,
    /// Where every transaction is also written as it commits and as it
    /// ends, so that it outlives a `kill -9` of this process (see
    /// [`Recorder::for_process_journaled`]).
    journal: Option<Mutex<std::fs::File>>,
}

/// One line of a journal: a transaction about to commit (`pending`, its
/// outcome not known yet) or ended.
#[derive(serde::Serialize, serde::Deserialize)]
struct JournalLine {
    pending: bool,
    txn: Txn,
}

impl Shared {
    fn journal(&self, pending: bool, txn: &Txn) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut line = serde_json::to_vec(&JournalLine {
            pending,
            txn: txn.clone(),
        })
        .expect("a transaction serializes");
        line.push(b'\n');
        // One write(2) per line: the kernel keeps it when the process is
        // killed. A failed write loses only the journal, which the reader
        // then finds short; the run goes on.
        use std::io::Write;
        let _ = journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&line);
    }
}

/// The transactions of a journal that [`Recorder::for_process_journaled`]
/// wrote, possibly cut short by a kill: a transaction that was about to
/// commit and never ended is [`Outcome::Unknown`], completed at `end_ns`
/// (when the reader knows the writer was dead); a torn last line is
/// ignored.
///
/// # Errors
/// The file cannot be read, or a line before the last is not a journal
/// line.
pub fn read_journal(path: &std::path::Path, end_ns: u64) -> Result<Vec<Txn>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the journal {}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut ended: Vec<Txn> = Vec::new();
    let mut pending: std::collections::HashMap<(ClientId, u64), Txn> =
        std::collections::HashMap::new();
    for (number, line) in lines.iter().enumerate() {
        let entry: JournalLine = match serde_json::from_str(line) {
            Ok(entry) => entry,
            Err(_) if number + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(format!(
                    "{} line {}: not a journal line: {e}",
                    path.display(),
                    number + 1
                ))
            }
        };
        let key = (entry.txn.client, entry.txn.invoke_ns);
        if entry.pending {
            pending.insert(key, entry.txn);
        } else {
            pending.remove(&key);
            ended.push(entry.txn);
        }
    }
    for (_, mut txn) in pending {
        txn.outcome = Outcome::Unknown;
        txn.complete_ns = end_ns.max(txn.invoke_ns);
        ended.push(txn);
    }
    Ok(ended)
}

/// What the stamps count from.
enum Clock {
    /// Since the recorder started (one process).
    Relative(Instant),
    /// The host's CLOCK_MONOTONIC: comparable between processes of one
    /// host, so their histories can be merged.
    HostMonotonic,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        match &self.clock {
            // u64 nanoseconds last 584 years; the cast cannot truncate in a run.
            Clock::Relative(start) => start.elapsed().as_nanos() as u64,
            Clock::HostMonotonic => host_monotonic_ns(),
        }
    }
}

/// Nanoseconds of the host's CLOCK_MONOTONIC.
pub fn host_monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Collects the transactions of many client threads. Cheap to share: clone
/// it or call [`Recorder::client`] from any thread.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// Starts the clock that all stamps are relative to.
    pub fn new() -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                clock: Clock::Relative(Instant::now()),
                client_next: AtomicU32::new(0),
                submitted: Mutex::new(Vec::new()),
                journal: None,
            }),
        }
    }

    /// A recorder whose stamps are the host's monotonic clock and whose
    /// client ids start at `client_base`: the recorders of several
    /// processes on one host make histories that [`History::merge`]
    /// combines (give each process its own range of client ids).
    pub fn for_process(client_base: u32) -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                clock: Clock::HostMonotonic,
                client_next: AtomicU32::new(client_base),
                submitted: Mutex::new(Vec::new()),
                journal: None,
            }),
        }
    }

    /// [`Recorder::for_process`] that also appends every transaction to
    /// the file at `path` (created or truncated) when it is about to commit
    /// and when it ends: what a process that may be killed leaves behind
    /// (read it with [`read_journal`]). One `write` per line; no `fsync`,
    /// as a killed process's writes stay in the page cache.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn for_process_journaled(
        client_base: u32,
        path: &std::path::Path,
    ) -> std::io::Result<Recorder> {
        let file = std::fs::File::create(path)?;
        Ok(Recorder {
            shared: Arc::new(Shared {
                clock: Clock::HostMonotonic,
                client_next: AtomicU32::new(client_base),
                submitted: Mutex::new(Vec::new()),
                journal: Some(Mutex::new(file)),
            }),
        })
    }

    /// A log for one client thread, with a fresh client id. It may be sent to
    /// another thread; it records one transaction at a time.
    pub fn client(&self) -> ClientLog {
        // Relaxed: the counter only has to hand out distinct ids; no other
        // memory is published through it.
        let client = ClientId(self.shared.client_next.fetch_add(1, Ordering::Relaxed));
        ClientLog {
            shared: Arc::clone(&self.shared),
            client,
            txns: Vec::new(),
        }
    }

    /// Nanoseconds since the recorder started, on the clock the stamps use.
    pub fn now_ns(&self) -> u64 {
        self.shared.now_ns()
    }

    /// Takes every transaction of the client logs dropped so far. Logs still
    /// alive are not included: drop (or [`ClientLog::submit`]) them first,
    /// e.g. by joining the client threads.
    pub fn history(&self) -> History {
        let logs = std::mem::take(
            &mut *self
                .shared
                .submitted
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        History::new(logs.into_iter().flatten().collect())
    }
}

/// One client's transactions, kept private to it until it is dropped.
pub struct ClientLog {
    shared: Arc<Shared>,
    client: ClientId,
    txns: Vec<Txn>,
}

impl ClientLog {
    pub fn client_id(&self) -> ClientId {
        self.client
    }

    /// Starts recording a transaction: stamps its invocation time now. Call
    /// it before sending the transaction's first operation.
    pub fn begin(&mut self) -> TxnRecord<'_> {
        let invoke_ns = self.shared.now_ns();
        TxnRecord {
            log: self,
            invoke_ns,
            ops: Vec::new(),
            finished: false,
        }
    }

    /// Hands the log to the recorder; the same as dropping it.
    pub fn submit(self) {}
}

impl Drop for ClientLog {
    fn drop(&mut self) {
        if !self.txns.is_empty() {
            let txns = std::mem::take(&mut self.txns);
            // A client that panicked poisons nothing we rely on: the Vec of
            // logs is valid after every push.
            self.shared
                .submitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(txns);
        }
    }
}

/// A transaction being recorded. Dropping it without [`TxnRecord::finish`]
/// records it as [`Outcome::Unknown`], completed at the drop: a client that
/// unwinds mid-transaction cannot know whether its commit took effect.
pub struct TxnRecord<'log> {
    log: &'log mut ClientLog,
    invoke_ns: u64,
    ops: Vec<MicroOp>,
    finished: bool,
}

impl TxnRecord<'_> {
    /// Records a read of a register; `None` if the key had never been written.
    pub fn read_register(&mut self, key: u64, value: Option<u64>) {
        self.ops.push(MicroOp::ReadRegister { key, value });
    }

    pub fn write_register(&mut self, key: u64, value: u64) {
        self.ops.push(MicroOp::WriteRegister { key, value });
    }

    pub fn append(&mut self, key: u64, element: u64) {
        self.ops.push(MicroOp::Append { key, element });
    }

    /// Records a read of a whole list, oldest element first.
    pub fn read_list(&mut self, key: u64, elements: impl Into<Vec<u64>>) {
        self.ops.push(MicroOp::ReadList {
            key,
            elements: elements.into(),
        });
    }

    pub fn push(&mut self, op: MicroOp) {
        self.ops.push(op);
    }

    /// Says the transaction is about to commit: a journaled recorder writes
    /// it down as pending, so that a kill before [`TxnRecord::finish`]
    /// leaves it [`Outcome::Unknown`] rather than missing.
    pub fn committing(&self) {
        if self.log.shared.journal.is_some() {
            self.log.shared.journal(
                true,
                &Txn {
                    client: self.log.client,
                    invoke_ns: self.invoke_ns,
                    complete_ns: self.invoke_ns,
                    ops: self.ops.clone(),
                    outcome: Outcome::Unknown,
                },
            );
        }
    }

    /// Stamps the completion time now and records the transaction. Call it
    /// once the outcome is known.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        self.finished = true;
        let complete_ns = self.log.shared.now_ns();
        let txn = Txn {
            client: self.log.client,
            invoke_ns: self.invoke_ns,
            complete_ns,
            ops: std::mem::take(&mut self.ops),
            outcome,
        };
        self.log.shared.journal(false, &txn);
        self.log.txns.push(txn);
    }
}

impl Drop for TxnRecord<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.record(Outcome::Unknown);
        }
    }
}
