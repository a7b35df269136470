//! Histories that are strictly serializable must check as valid.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use farm_check::{check, Outcome, Recorder, Verdict};

#[test]
fn serial_history_is_valid() {
    let h = history(vec![
        ok(0, 0, 10, vec![r(1, None), w(1, 1), append(100, 1)]),
        ok(
            1,
            20,
            30,
            vec![r(1, Some(1)), w(1, 2), read_list(100, &[1]), append(100, 2)],
        ),
        ok(0, 40, 50, vec![r(1, Some(2)), read_list(100, &[1, 2])]),
        txn(
            2,
            60,
            70,
            Outcome::Aborted,
            vec![r(1, Some(2)), w(1, 3), append(100, 3)],
        ),
        ok(1, 80, 90, vec![r(1, Some(2)), read_list(100, &[1, 2])]),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
    assert_eq!(
        (
            report.txns,
            report.committed,
            report.aborted,
            report.unknown
        ),
        (5, 4, 1, 0)
    );
}

#[test]
fn overlapping_transactions_may_serialize_against_real_time_start_order() {
    // T1 starts first but reads the value T2 writes: fine, they overlap.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 1)]),
        ok(1, 10, 100, vec![r(1, Some(2))]),
        ok(2, 20, 30, vec![r(1, Some(1)), w(1, 2)]),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
}

#[test]
fn concurrent_threads_through_a_serializing_store_are_valid() {
    const THREADS: u64 = 8;
    const TXNS_PER_THREAD: usize = 500;
    let recorder = Recorder::new();
    let store = Arc::new(Mutex::new(Store::new(8, 8)));
    let threads: Vec<_> = (0..THREADS)
        .map(|seed| {
            let mut log = recorder.client();
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut rng = Rng(seed);
                for _ in 0..TXNS_PER_THREAD {
                    let mut txn = log.begin();
                    let outcome = random_outcome(&mut rng);
                    // The lock makes each transaction atomic, between its
                    // invocation stamp (in `begin`) and its completion stamp.
                    let ops = store.lock().unwrap().run(&mut rng, outcome);
                    for op in ops {
                        txn.push(op);
                    }
                    txn.finish(outcome);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let h = recorder.history();
    assert_eq!(h.len(), THREADS as usize * TXNS_PER_THREAD);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(
        report.notes.len(),
        1,
        "mixed registers and lists are checked in two passes: {:?}",
        report.notes
    );
}

#[test]
fn generated_overlapping_histories_are_valid() {
    for seed in 0..20 {
        let mut store = Store::new(4, 4);
        let h = generate_valid(seed, 2_000, 6, &mut store);
        let report = check(&h);
        assert!(report.is_valid(), "seed {seed}:\n{}", report.table());
    }
}

#[test]
fn a_transaction_dropped_unfinished_is_recorded_as_unknown() {
    let recorder = Recorder::new();
    let mut log = recorder.client();
    let mut txn = log.begin();
    txn.write_register(1, 1);
    drop(txn);
    let mut txn = log.begin();
    txn.read_register(1, None);
    txn.finish(Outcome::Committed);
    drop(log);
    let h = recorder.history();
    assert_eq!(h.len(), 2);
    assert_eq!(h.count(Outcome::Unknown), 1);
    assert!(h.txns()[0].invoke_ns <= h.txns()[0].complete_ns);
}

#[test]
fn a_history_with_no_inferable_dependency_is_unknown_not_valid() {
    // Two overlapping writers of different keys: nothing orders anything,
    // so the history says nothing about isolation.
    let h = history(vec![
        ok(0, 0, 10, vec![w(1, 1)]),
        ok(1, 5, 15, vec![w(2, 1)]),
    ]);
    let report = check(&h);
    assert_eq!(report.verdict, Verdict::Unknown, "{}", report.table());
    assert!(!report.is_valid());
    assert!(report
        .anomalies_of("empty-transaction-graph")
        .next()
        .is_some());
}
