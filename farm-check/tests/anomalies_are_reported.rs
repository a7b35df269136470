//! Each classic anomaly, built by hand, must be reported under its name.

mod common;

use common::*;
use farm_check::{check, Outcome, Report, Verdict};

fn assert_reports(report: &Report, kind_prefix: &str) {
    assert_eq!(report.verdict, Verdict::Invalid, "{}", report.table());
    assert!(!report.is_valid());
    assert!(
        report.anomalies_of(kind_prefix).next().is_some(),
        "expected a {kind_prefix} anomaly, got {:?}\n{}",
        report.kinds(),
        report.table()
    );
}

#[test]
fn lost_update_on_registers_is_reported() {
    // T1 and T2 both read x = 1 and both commit a new value from it.
    let h = history(vec![
        ok(0, 0, 10, vec![w(1, 1)]),
        ok(1, 20, 40, vec![r(1, Some(1)), w(1, 2)]),
        ok(2, 21, 41, vec![r(1, Some(1)), w(1, 3)]),
    ]);
    let report = check(&h);
    assert_reports(&report, "lost-update");
    let lost = report.anomalies_of("lost-update").next().unwrap();
    assert_eq!(lost.txns.len(), 2, "{lost:?}");
}

#[test]
fn lost_update_on_lists_is_reported() {
    // Both read [1] and appended; a later reader sees both appends.
    let h = history(vec![
        ok(0, 0, 10, vec![append(1, 1)]),
        ok(1, 20, 40, vec![read_list(1, &[1]), append(1, 2)]),
        ok(2, 21, 41, vec![read_list(1, &[1]), append(1, 3)]),
        ok(0, 50, 60, vec![read_list(1, &[1, 2, 3])]),
    ]);
    assert_reports(&check(&h), "lost-update");
}

#[test]
fn write_skew_is_reported_as_g2() {
    // Each reads both keys empty and writes a different one.
    let h = history(vec![
        ok(1, 0, 40, vec![r(1, None), r(2, None), w(1, 1)]),
        ok(2, 1, 41, vec![r(1, None), r(2, None), w(2, 1)]),
    ]);
    let report = check(&h);
    assert_reports(&report, "G2-item");
    assert!(
        report.anomalies_of("lost-update").next().is_none(),
        "{}",
        report.table()
    );
}

#[test]
fn write_skew_on_lists_is_reported_as_g2() {
    let h = history(vec![
        ok(
            1,
            0,
            40,
            vec![read_list(1, &[]), read_list(2, &[]), append(1, 1)],
        ),
        ok(
            2,
            1,
            41,
            vec![read_list(1, &[]), read_list(2, &[]), append(2, 1)],
        ),
    ]);
    assert_reports(&check(&h), "G2-item");
}

#[test]
fn read_skew_is_reported_as_g_single() {
    // T1 reads x before T2 and y after it.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 1), w(2, 1)]),
        ok(1, 10, 100, vec![r(1, Some(1)), r(2, Some(2))]),
        ok(
            2,
            20,
            30,
            vec![r(1, Some(1)), r(2, Some(1)), w(1, 2), w(2, 2)],
        ),
    ]);
    let report = check(&h);
    assert_reports(&report, "G-single-item");
    let cycle = report.anomalies_of("G-single-item").next().unwrap();
    assert_eq!(cycle.txns.len(), 2, "{cycle:?}");
}

#[test]
fn aborted_write_observed_by_a_committed_reader_is_reported_as_g1a() {
    let h = history(vec![
        txn(0, 0, 10, Outcome::Aborted, vec![w(1, 1)]),
        ok(1, 20, 30, vec![r(1, Some(1))]),
        ok(2, 40, 50, vec![w(1, 2)]),
    ]);
    let report = check(&h);
    assert_reports(&report, "G1a");
    let g1a = report.anomalies_of("G1a").next().unwrap();
    let mut txns = g1a.txns.clone();
    txns.sort();
    assert_eq!(txns, [farm_check::TxnId(0), farm_check::TxnId(1)]);
}

#[test]
fn aborted_append_observed_by_a_committed_reader_is_reported_as_g1a() {
    let h = history(vec![
        ok(0, 0, 10, vec![append(1, 1)]),
        txn(1, 20, 30, Outcome::Aborted, vec![append(1, 2)]),
        ok(2, 40, 50, vec![read_list(1, &[1, 2])]),
    ]);
    assert_reports(&check(&h), "G1a");
}

#[test]
fn an_unknown_transactions_write_may_be_observed() {
    let h = history(vec![
        txn(0, 0, 10, Outcome::Unknown, vec![w(1, 1)]),
        ok(1, 20, 30, vec![r(1, Some(1))]),
        ok(1, 40, 50, vec![r(1, Some(1)), w(1, 2)]),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
}

#[test]
fn an_aborted_transactions_inconsistent_reads_are_not_anomalies() {
    // An optimistic transaction may read a torn snapshot and then fail
    // validation; only committed reads count.
    let h = history(vec![
        ok(0, 0, 5, vec![w(1, 1), w(2, 1)]),
        txn(
            1,
            10,
            100,
            Outcome::Aborted,
            vec![r(1, Some(1)), r(2, Some(2)), r(3, Some(77))],
        ),
        ok(
            2,
            20,
            30,
            vec![r(1, Some(1)), r(2, Some(1)), w(1, 2), w(2, 2)],
        ),
    ]);
    let report = check(&h);
    assert!(report.is_valid(), "{}", report.table());
}

#[test]
fn garbage_read_is_reported() {
    // Value 7 was never written: a torn or corrupt read.
    let h = history(vec![
        ok(0, 0, 10, vec![w(1, 1)]),
        ok(1, 20, 30, vec![r(1, Some(7)), read_list(2, &[5])]),
    ]);
    let report = check(&h);
    assert_reports(&report, "garbage-read");
    assert_eq!(
        report.anomalies_of("garbage-read").count(),
        2,
        "{}",
        report.table()
    );
}

#[test]
#[should_panic(expected = "written to key 1 twice")]
fn duplicate_writes_are_rejected() {
    check(&history(vec![
        ok(0, 0, 10, vec![w(1, 1)]),
        ok(1, 20, 30, vec![w(1, 1)]),
    ]));
}

#[test]
#[should_panic(expected = "both as a register and as a list")]
fn a_key_used_as_register_and_list_is_rejected() {
    check(&history(vec![
        ok(0, 0, 10, vec![w(1, 1)]),
        ok(1, 20, 30, vec![append(1, 2)]),
    ]));
}

#[test]
fn reports_print_as_a_table_and_one_json_line() {
    let h = history(vec![
        txn(0, 0, 10, Outcome::Aborted, vec![w(1, 1)]),
        ok(1, 20, 30, vec![r(1, Some(1))]),
        ok(2, 40, 50, vec![w(1, 2)]),
    ]);
    let report = check(&h);
    let line = report.json_line();
    assert!(
        line.starts_with(r#"{"txns":3,"committed":2,"aborted":1,"anomalies":[{"kind":"G1a","#),
        "{line}"
    );
    let table = report.table();
    assert!(
        table.contains("INVALID") && table.contains("G1a"),
        "{table}"
    );
    println!("{table}\n{line}");
}
