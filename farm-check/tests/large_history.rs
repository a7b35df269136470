//! A long generated history checks in bounded time, and a single stale read
//! planted in it is still found.
//!
//! Timing goals live in `examples/check_throughput.rs` (run it with
//! `--release`); the bounds here are only generous backstops against a
//! checker that went quadratic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use farm_check::{check, History, MicroOp, Outcome};

const TXN_COUNT: usize = 200_000;
const CLIENTS: usize = 16;
const SEED: u64 = 0x00fa_4c4e_c4ec;
/// Debug builds of adya are several times slower than release builds.
const CHECK_TIME_MAX: Duration = Duration::from_secs(300);

fn generate() -> History {
    let started = Instant::now();
    let mut store = Store::new(64, 64);
    let h = generate_valid(SEED, TXN_COUNT, CLIENTS, &mut store);
    println!(
        "generated {} txns in {:?} (seed {SEED:#x})",
        h.len(),
        started.elapsed()
    );
    h
}

#[test]
fn generated_200k_txn_history_is_valid_in_bounded_time() {
    let h = generate();
    let started = Instant::now();
    let report = check(&h);
    let elapsed = started.elapsed();
    println!(
        "checked {} txns in {elapsed:?}\n{}",
        h.len(),
        report.table()
    );
    assert!(report.is_valid(), "seed {SEED:#x}:\n{}", report.table());
    assert_eq!(report.txns, TXN_COUNT);
    assert!(elapsed < CHECK_TIME_MAX, "checking took {elapsed:?}");
}

#[test]
fn a_stale_read_planted_in_a_200k_txn_history_is_found() {
    let h = generate();
    let mut txns = h.txns().to_vec();
    // After everything else completed: a writer of a fresh key, then a
    // reader that misses its write.
    let end = txns.iter().map(|t| t.complete_ns).max().unwrap();
    let key = u64::MAX >> 2;
    let writer = txn(
        0,
        end + 10,
        end + 20,
        Outcome::Committed,
        vec![MicroOp::WriteRegister { key, value: 1 }],
    );
    let reader = txn(
        1,
        end + 30,
        end + 40,
        Outcome::Committed,
        vec![MicroOp::ReadRegister { key, value: None }],
    );
    txns.push(writer);
    txns.push(reader);
    let h = History::new(txns);
    let started = Instant::now();
    let report = check(&h);
    println!("checked {} txns in {:?}", h.len(), started.elapsed());
    assert!(!report.is_valid(), "{}", report.table());
    assert!(
        report
            .anomalies
            .iter()
            .any(|a| a.kind.ends_with("-realtime")),
        "{}",
        report.table()
    );
    let stale = report
        .anomalies
        .iter()
        .find(|a| a.kind.ends_with("-realtime"))
        .unwrap();
    let mut ids = stale.txns.clone();
    ids.sort();
    let n = h.len() as u64;
    assert_eq!(
        ids,
        [farm_check::TxnId(n - 2), farm_check::TxnId(n - 1)],
        "{}",
        report.table()
    );
}
