//! Real-time order: a committed transaction that completed before another
//! was invoked must precede it. Histories that are serializable but break
//! this must be reported; overlapping transactions must not be.

mod common;

use common::*;
use farm_check::{check, check_with, CheckOptions, Report};

fn assert_realtime_violation(report: &Report) {
    assert!(!report.is_valid(), "{}", report.table());
    assert!(
        report
            .anomalies
            .iter()
            .any(|a| a.kind.ends_with("-realtime")),
        "expected a -realtime cycle, got {:?}\n{}",
        report.kinds(),
        report.table()
    );
    assert!(report
        .models_ruled_out
        .iter()
        .any(|m| m.starts_with("strong-") || m == "strict-serializable"));
}

#[test]
fn stale_register_read_after_a_completed_commit_is_reported() {
    // T1 overwrites x = 0 with 1 and completes; T2, invoked afterwards, still
    // reads 0. Serializable (T2 before T1), not strictly serializable.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 0)]),
        ok(1, 10, 20, vec![r(1, Some(0)), w(1, 1)]),
        ok(2, 30, 40, vec![r(1, Some(0))]),
    ]);
    assert_realtime_violation(&check(&h));
}

#[test]
fn stale_read_of_the_initial_state_is_reported() {
    let h = history(vec![
        ok(1, 10, 20, vec![w(1, 1)]),
        ok(2, 30, 40, vec![r(1, None)]),
    ]);
    assert_realtime_violation(&check(&h));
}

#[test]
fn stale_list_read_after_a_completed_commit_is_reported() {
    let h = history(vec![
        ok(0, 0, 5, vec![append(1, 10)]),
        ok(1, 10, 20, vec![append(1, 11)]),
        ok(2, 30, 40, vec![read_list(1, &[10])]),
        ok(0, 50, 60, vec![read_list(1, &[10, 11])]),
    ]);
    assert_realtime_violation(&check(&h));
}

#[test]
fn stale_read_of_an_overlapping_commit_is_allowed() {
    // T2 was invoked before T1 completed, so it may be ordered first.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 0)]),
        ok(1, 10, 20, vec![r(1, Some(0)), w(1, 1)]),
        ok(2, 19, 40, vec![r(1, Some(0))]),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
}

#[test]
fn touching_stamps_are_treated_as_overlapping() {
    // T2 is invoked at the very nanosecond T1 completes: no order is claimed.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 0)]),
        ok(1, 10, 20, vec![r(1, Some(0)), w(1, 1)]),
        ok(2, 20, 40, vec![r(1, Some(0))]),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
}

#[test]
fn stale_read_after_a_blind_write_needs_linearizable_keys() {
    // T1 overwrites x without reading it, so a register history alone does
    // not order 0 before 1; real-time order does, under linearizable keys.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 0)]),
        ok(1, 10, 20, vec![w(1, 1)]),
        ok(2, 30, 40, vec![r(1, Some(0))]),
    ]);
    let default = check(&h);
    assert!(
        default.is_valid(),
        "without linearizable keys this is not detectable:\n{}",
        default.table()
    );
    let options = CheckOptions {
        linearizable_keys: true,
        ..CheckOptions::default()
    };
    let report = check_with(&h, &options);
    // adya derives both 0 < 1 (T0 completed before T1) and 1 < 0 (T1
    // completed before T2 read 0) and reports the contradiction as a cyclic
    // version order rather than as a dependency cycle.
    assert!(!report.is_valid(), "{}", report.table());
    assert!(
        report.anomalies_of("cyclic-versions").next().is_some(),
        "{}",
        report.table()
    );
}

#[test]
fn an_unknown_transaction_does_not_order_later_ones() {
    // T1 may have committed at any time after its invocation, even after T2.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 0)]),
        txn(1, 10, 20, farm_check::Outcome::Unknown, vec![w(1, 1)]),
        ok(2, 30, 40, vec![r(1, Some(0))]),
        ok(2, 50, 60, vec![r(1, Some(1))]),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
}
