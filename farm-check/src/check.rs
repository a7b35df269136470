//! Checking a [`History`] for strict serializability with the `adya` crate.
//!
//! The history is turned into adya's (Elle's) format: every transaction
//! becomes an invocation event at `invoke_ns` and a completion event at
//! `complete_ns` (`ok`, `fail` or `info`), all events sorted by time, with
//! invocations before completions at equal times, so that two transactions
//! whose stamps touch are treated as concurrent. Each transaction gets its own
//! adya process, so pairing an invocation with its completion never depends
//! on how a client's stamps compare, and its adya index is its [`TxnId`], so
//! adya's `T<n>` names are our ids.
//!
//! adya is then asked for the `strict-serializable` model. It infers Adya's
//! `ww`, `wr` and `rw` dependency edges between committed (and, for writes,
//! possibly committed) transactions, adds real-time edges (a committed
//! transaction precedes every transaction invoked after it completed; adya
//! keeps a transitive reduction of them, so this stays linear), and searches
//! the graph for cycles. It also looks for the anomalies that need no graph:
//! aborted reads (G1a), intermediate reads (G1b), lost updates, reads that
//! contradict the transaction's own writes, incompatible list orders.
//!
//! adya checks one workload at a time: registers or lists. A history that
//! uses both is checked twice, once per kind of key, in parallel; a cycle that
//! needs edges of both kinds is then not found, and the report says so.
//!
//! What this module adds to adya:
//! - garbage reads: a committed transaction read a register value or a list
//!   element that no transaction ever wrote (a torn or corrupt read). adya
//!   infers nothing from such a read;
//! - the reads of aborted and unknown transactions are dropped before adya
//!   sees them: an optimistic transaction may read an inconsistent snapshot
//!   and then fail validation, and that is not an anomaly. Their writes are
//!   kept: a committed read of an aborted write is G1a.
//!
//! What is not checked: predicates (reads of key ranges), anything about
//! transactions that touch no key, and, for registers, the order of writes
//! that nobody read between: registers hide their history, so adya knows only
//! that the initial state precedes every value and, with
//! [`CheckOptions::writes_follow_reads`], that a transaction that read `v` and
//! then wrote the key installed its value right after `v`. Lists reveal the
//! whole order and should be preferred where the workload allows it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use adya::history::{History as AdyaHistory, Interner, Mop, Op, OpType, ReadValue, Scalar};

use crate::history::{History, MicroOp, Outcome, TxnId};
use crate::report::{Anomaly, Report, Verdict};

/// How much adya may infer, and how long it may search.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Registers: a transaction that read key `k = v` and then wrote `k`
    /// installed its version right after `v`. Holds in every serializable
    /// execution, so it cannot turn a strictly serializable history into an
    /// invalid one. On by default.
    pub writes_follow_reads: bool,
    /// Registers: derive version order from real-time order, which strict
    /// serializability implies (every key is linearizable). Finds stale reads
    /// after blind writes, but adya's implementation walks forward from every
    /// transaction for every key it touched and is quadratic where keys go
    /// cold. Off by default.
    pub linearizable_keys: bool,
    /// Budget for adya's cycle search in each strongly connected component of
    /// the dependency graph; a search that runs out makes the verdict
    /// [`Verdict::Unknown`].
    pub cycle_search_timeout: Duration,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            writes_follow_reads: true,
            linearizable_keys: false,
            cycle_search_timeout: Duration::from_secs(10),
        }
    }
}

/// Checks `history` for strict serializability with the default options.
///
/// Panics if the history breaks the recording contract: a value written (or
/// element appended) twice to the same key, a key used both as a register and
/// as a list, or a key, value or element above `i64::MAX`.
pub fn check(history: &History) -> Report {
    check_with(history, &CheckOptions::default())
}

/// Checks `history` for strict serializability. See [`check`].
pub fn check_with(history: &History, options: &CheckOptions) -> Report {
    let started = Instant::now();
    let written = Written::collect(history);
    let mut anomalies = garbage_reads(history, &written);

    let mut kinds: Vec<KeyKind> = Vec::new();
    if written.has_registers || !written.has_lists {
        kinds.push(KeyKind::Register);
    }
    if written.has_lists {
        kinds.push(KeyKind::List);
    }
    let results: Vec<adya::Report> = std::thread::scope(|scope| {
        let handles: Vec<_> = kinds
            .iter()
            .map(|&kind| scope.spawn(move || run_adya(history, kind, options)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("adya's checker panicked"))
            .collect()
    });

    let mut verdict = if anomalies.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    let mut models_ruled_out: Vec<String> = Vec::new();
    if !anomalies.is_empty() {
        models_ruled_out.push("read-uncommitted".into());
    }
    for result in results {
        verdict = verdict.and(match result.valid {
            adya::Valid::True => Verdict::Valid,
            adya::Valid::False => Verdict::Invalid,
            adya::Valid::Unknown => Verdict::Unknown,
        });
        for (kind, found) in result.anomalies {
            for a in found {
                let mut txns: Vec<TxnId> = Vec::with_capacity(a.ops.len());
                for id in a.ops.into_iter().map(TxnId) {
                    if !txns.contains(&id) {
                        txns.push(id);
                    }
                }
                anomalies.push(Anomaly {
                    kind: kind.clone(),
                    explanation: a.explanation,
                    txns,
                });
            }
        }
        for model in result.not {
            if !models_ruled_out.contains(&model) {
                models_ruled_out.push(model);
            }
        }
    }
    anomalies.sort_by(|a, b| a.kind.cmp(&b.kind));

    let mut notes = Vec::new();
    if kinds.len() > 1 {
        notes.push(
            "registers and lists were checked separately: a cycle that needs edges of both kinds is not found".into(),
        );
    }
    Report {
        txns: history.len(),
        committed: history.count(Outcome::Committed),
        aborted: history.count(Outcome::Aborted),
        unknown: history.count(Outcome::Unknown),
        verdict,
        anomalies,
        models_ruled_out,
        notes,
        check_time: started.elapsed(),
        killed: Vec::new(),
        lost_acks: None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Register,
    List,
}

impl KeyKind {
    fn of(op: &MicroOp) -> KeyKind {
        if op.is_list() {
            KeyKind::List
        } else {
            KeyKind::Register
        }
    }
}

/// Every `(key, value)` written to a register and `(key, element)` appended
/// to a list, by any transaction whatever its outcome.
struct Written {
    values: HashSet<(u64, u64)>,
    has_registers: bool,
    has_lists: bool,
}

impl Written {
    /// Asserts the recording contract (see [`check`]) while collecting.
    fn collect(history: &History) -> Written {
        let mut values = HashSet::new();
        let mut kind_of_key: HashMap<u64, KeyKind> = HashMap::new();
        for (id, txn) in history.iter() {
            for op in &txn.ops {
                let kind = KeyKind::of(op);
                let first = *kind_of_key.entry(op.key()).or_insert(kind);
                assert!(
                    first == kind,
                    "key {} is used both as a register and as a list ({id})",
                    op.key()
                );
                match *op {
                    MicroOp::WriteRegister { key, value: v }
                    | MicroOp::Append { key, element: v } => {
                        assert!(
                            values.insert((key, v)),
                            "value {v} was written to key {key} twice (again by {id}); the workload must write unique values"
                        );
                    }
                    MicroOp::ReadRegister { .. } | MicroOp::ReadList { .. } => {}
                }
            }
        }
        let has_lists = kind_of_key.values().any(|k| *k == KeyKind::List);
        let has_registers = kind_of_key.values().any(|k| *k == KeyKind::Register);
        Written {
            values,
            has_registers,
            has_lists,
        }
    }
}

/// Committed reads of values that nobody wrote.
fn garbage_reads(history: &History, written: &Written) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (id, txn) in history
        .iter()
        .filter(|(_, t)| t.outcome == Outcome::Committed)
    {
        for op in &txn.ops {
            let garbage: Vec<u64> = match op {
                MicroOp::ReadRegister {
                    key,
                    value: Some(v),
                } if !written.values.contains(&(*key, *v)) => vec![*v],
                MicroOp::ReadList { key, elements } => elements
                    .iter()
                    .copied()
                    .filter(|e| !written.values.contains(&(*key, *e)))
                    .collect(),
                _ => continue,
            };
            if garbage.is_empty() {
                continue;
            }
            out.push(Anomaly {
                kind: "garbage-read".into(),
                explanation: format!(
                    "{id} read key {} and observed {:?}, which no transaction wrote (a torn or corrupt read)",
                    op.key(),
                    garbage
                ),
                txns: vec![id],
            });
        }
    }
    out
}

fn run_adya(history: &History, kind: KeyKind, options: &CheckOptions) -> adya::Report {
    let adya_history = to_adya(history, kind);
    let workload = match kind {
        KeyKind::Register => adya::Workload::RwRegister,
        KeyKind::List => adya::Workload::ListAppend,
    };
    let opts = adya::Opts {
        models: vec!["strict-serializable".into()],
        timeout: options.cycle_search_timeout,
        wfr_keys: options.writes_follow_reads,
        linearizable_keys: options.linearizable_keys,
        ..adya::Opts::default()
    };
    adya::check(&adya_history, workload, &opts)
}

fn scalar(n: u64) -> Scalar {
    let n = i64::try_from(n)
        .unwrap_or_else(|_| panic!("{n} is above i64::MAX, which adya cannot represent"));
    Scalar::Int(n)
}

/// The transactions that touch keys of `kind`, with only those micro-ops, as
/// adya's invocation and completion events.
fn to_adya(history: &History, kind: KeyKind) -> AdyaHistory {
    const PHASE_INVOKE: u8 = 0;
    const PHASE_COMPLETE: u8 = 1;
    let mut events: Vec<(u64, u8, u64)> = Vec::new();
    for (id, txn) in history.iter() {
        if txn.ops.iter().any(|op| KeyKind::of(op) == kind) {
            events.push((txn.invoke_ns, PHASE_INVOKE, id.0));
            events.push((txn.complete_ns, PHASE_COMPLETE, id.0));
        }
    }
    // Invocations sort before completions at equal times: no real-time order
    // is claimed between stamps that touch.
    events.sort_unstable();

    let mut interner = Interner::default();
    let mut ops = Vec::with_capacity(events.len());
    for (time_ns, phase, id) in events {
        let txn = history.txn(TxnId(id));
        let reads_kept = txn.outcome == Outcome::Committed;
        let mut value = Vec::with_capacity(txn.ops.len());
        for op in txn.ops.iter().filter(|op| KeyKind::of(op) == kind) {
            if op.is_read() && !reads_kept {
                continue;
            }
            let key = interner.intern(scalar(op.key()));
            value.push(match op {
                MicroOp::WriteRegister { value: v, .. } => Mop::Write {
                    key,
                    value: interner.intern(scalar(*v)),
                },
                MicroOp::Append { element, .. } => Mop::Append {
                    key,
                    value: interner.intern(scalar(*element)),
                },
                // An invocation does not know what its reads will return.
                _ if phase == PHASE_INVOKE => Mop::Read {
                    key,
                    value: ReadValue::Nil,
                },
                MicroOp::ReadRegister { value: None, .. } => Mop::Read {
                    key,
                    value: ReadValue::Nil,
                },
                MicroOp::ReadRegister { value: Some(v), .. } => Mop::Read {
                    key,
                    value: ReadValue::Scalar(interner.intern(scalar(*v))),
                },
                MicroOp::ReadList { elements, .. } => Mop::Read {
                    key,
                    value: ReadValue::List(
                        elements
                            .iter()
                            .map(|e| interner.intern(scalar(*e)))
                            .collect(),
                    ),
                },
            });
        }
        let op_type = match (phase, txn.outcome) {
            (PHASE_INVOKE, _) => OpType::Invoke,
            (_, Outcome::Committed) => OpType::Ok,
            (_, Outcome::Aborted) => OpType::Fail,
            (_, Outcome::Unknown) => OpType::Info,
        };
        ops.push(Op {
            index: id,
            kind: op_type,
            process: Some(i64::try_from(id).expect("more than i64::MAX transactions")),
            value,
            time: Some(i64::try_from(time_ns).expect("a run longer than 292 years")),
        });
    }
    AdyaHistory::from_ops(ops, interner)
}
