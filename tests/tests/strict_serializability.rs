//! Recorded histories of a contended workload are strictly serializable,
//! and the checker is shown able to fail: with a protocol fault injected
//! (validation skipped, or locks not taken) it reports anomalies.

use farm_check::workload::{self, WorkloadOptions};
use farm_check::{check, Report};
use farm_core::Faults;
use farm_tests::cluster_with;

fn run(faults: Faults, seed: u64, txns: u64) -> (Report, workload::WorkloadResult) {
    run_with(faults, seed, txns, 6, 1)
}

fn run_with(
    faults: Faults,
    seed: u64,
    txns: u64,
    threads: usize,
    in_flight: usize,
) -> (Report, workload::WorkloadResult) {
    let cluster = cluster_with(faults);
    let result = workload::run(
        &cluster,
        &WorkloadOptions {
            txns,
            threads,
            in_flight,
            registers: 6,
            lists: 3,
            ops_max: 4,
            seed,
            progress: false,
            survive_failures: false,
        },
    )
    .unwrap();
    (check(&result.history), result)
}

#[test]
fn strict_serializability_under_contention() {
    let (report, result) = run(Faults::default(), 7, 4000);
    eprintln!("{}", report.table());
    assert!(report.anomalies.is_empty(), "{}", report.table());
    assert!(report.is_valid(), "{}", report.table());
    assert!(report.committed > 1000, "the workload made progress");
    let aborted: u64 = result.aborted_by_reason.iter().map(|(_, n)| n).sum();
    assert!(aborted > 0, "the workload was contended enough to abort");
}

/// The same with each client thread a worker keeping four transactions in
/// flight as tasks (farm_core::Worker): 12 clients on 3 threads, each a
/// sequential history of its own.
#[test]
fn strict_serializability_with_transactions_in_flight_on_workers() {
    let (report, result) = run_with(Faults::default(), 11, 4000, 3, 4);
    eprintln!("{}", report.table());
    assert!(report.anomalies.is_empty(), "seed 11: {}", report.table());
    assert!(report.is_valid(), "seed 11: {}", report.table());
    assert!(report.committed > 1000, "the workload made progress");
    let aborted: u64 = result.aborted_by_reason.iter().map(|(_, n)| n).sum();
    assert!(aborted > 0, "the workload was contended enough to abort");
}

/// Runs a faulty cluster until the checker reports an anomaly; each run is
/// a fresh seed, and the seed that found it is printed.
fn fault_is_caught(faults: Faults, expected: &[&str]) {
    fault_is_caught_with(faults, expected, 6, 1);
}

/// [`fault_is_caught`] with `threads` client threads keeping `in_flight`
/// transactions each.
fn fault_is_caught_with(faults: Faults, expected: &[&str], threads: usize, in_flight: usize) {
    for seed in 1..=8 {
        let (report, _) = run_with(faults, seed, 3000, threads, in_flight);
        if !report.anomalies.is_empty() {
            eprintln!("seed {seed}: {}", report.table());
            let kinds = report.kinds();
            assert!(
                kinds
                    .iter()
                    .any(|kind| expected.iter().any(|e| kind.starts_with(e))),
                "unexpected anomaly kinds {kinds:?}"
            );
            assert!(!report.is_valid());
            return;
        }
    }
    panic!("the checker found no anomaly in 8 runs with {faults:?}");
}

#[test]
fn checker_catches_skipped_validation() {
    fault_is_caught(
        Faults {
            skip_validation: true,
            ..Faults::default()
        },
        &[
            "G-single",
            "G2",
            "G-nonadjacent",
            "lost-update",
            "G1c",
            "G0",
        ],
    );
}

/// Locks not taken at all.
const SKIP_LOCK: Faults = Faults {
    skip_validation: false,
    skip_lock: true,
    abort_in_recovery: false,
};

/// The anomaly kinds that skipped locks may show.
const SKIPPED_LOCK_ANOMALIES: &[&str] = &[
    "lost-update",
    "G-single",
    "G2",
    "G1c",
    "G0",
    "G-nonadjacent",
    "incompatible-order",
    "garbage",
];

#[test]
fn checker_catches_skipped_locks() {
    fault_is_caught(SKIP_LOCK, SKIPPED_LOCK_ANOMALIES);
}

/// The workers' histories can fail too: without locks, transactions in
/// flight as tasks give anomalies the checker reports.
#[test]
fn checker_catches_skipped_locks_on_workers() {
    fault_is_caught_with(SKIP_LOCK, SKIPPED_LOCK_ANOMALIES, 3, 4);
}
