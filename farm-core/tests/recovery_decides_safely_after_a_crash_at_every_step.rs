//! Recovery's decision rules ([`farm_core::reconfiguration::decide`]), checked
//! exhaustively against a crash at every step of a commit (a model check,
//! FaRM SOSP'15 §5.3).
//!
//! The model: a transaction coordinated by node `c` writes one or two
//! regions of a cluster of 3 or 4 nodes with 2 or 3 copies. Its commit is
//! the sequence of record deliveries of FaRM's protocol: LOCK to each
//! primary, COMMIT-BACKUP to each backup, COMMIT-PRIMARY to each primary,
//! the report to the client, TRUNCATE to each backup. After every prefix
//! of that sequence, any one node crashes (the coordinator, a primary, a
//! backup, a bystander), or none does (a change that removes no node); the
//! survivors report what they hold and what the coordinator parked, and
//! `decide` runs on the configuration without the crashed node. Checked:
//! - every member decides the same;
//! - a transaction that any primary installed (readers may have seen it)
//!   or that was reported committed is committed;
//! - a committed transaction's writes reach every replica of every region
//!   it wrote in the new configuration: installed before the crash, held
//!   in the replica's own record, or among its installs.

use std::collections::BTreeSet;

use farm_core::codec::record::Entry;
use farm_core::config::Configuration;
use farm_core::reconfiguration::{decide, CommitPhase, Held, RecoveryReport};
use farm_core::{Addr, Header, TxnId};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Lock(usize),
    CommitBackup(usize),
    CommitPrimary(usize),
    Reported,
    Truncate(usize),
}

fn entry(region: u16) -> Entry {
    let expected = Header::decode(0);
    Entry {
        addr: Addr::new(region, 0, 0, 65_536),
        expected,
        new: expected.after_write(),
        payload: vec![region as u8; 8],
    }
}

/// The commit's steps, in the protocol's order.
fn steps(config: &Configuration, written: &[u16]) -> Vec<Step> {
    let primaries: BTreeSet<usize> = written.iter().map(|&r| config.primary(r)).collect();
    let backups: BTreeSet<usize> = written.iter().flat_map(|&r| config.backups(r)).collect();
    let mut steps: Vec<Step> = primaries.iter().map(|&p| Step::Lock(p)).collect();
    steps.extend(backups.iter().map(|&b| Step::CommitBackup(b)));
    steps.extend(primaries.iter().map(|&p| Step::CommitPrimary(p)));
    steps.push(Step::Reported);
    steps.extend(backups.iter().map(|&b| Step::Truncate(b)));
    steps
}

fn check(
    config: &Configuration,
    coordinator: usize,
    written: &[u16],
    done: usize,
    crashed: Option<usize>,
) {
    let txid = TxnId::new(coordinator, 0, 1);
    let steps = steps(config, written);
    let happened = &steps[..done];
    let delivered = |step: Step| happened.contains(&step);
    let case = format!(
        "nodes {}, copies {}, coordinator {coordinator}, regions {written:?}, after {happened:?}, crashed {crashed:?}",
        config.nodes, config.copies
    );
    let survives = |node: usize| Some(node) != crashed;
    let regions: Vec<u16> = written.to_vec();
    let lock_entries = |node: usize| -> Vec<Entry> {
        written
            .iter()
            .filter(|&&r| config.primary(r) == node)
            .map(|&r| entry(r))
            .collect()
    };
    let backup_entries = |node: usize| -> Vec<Entry> {
        written
            .iter()
            .filter(|&&r| config.backups(r).any(|b| b == node))
            .map(|&r| entry(r))
            .collect()
    };
    let installed = |node: usize, region: u16| {
        (config.primary(region) == node && delivered(Step::CommitPrimary(node)))
            || (config.backups(region).any(|b| b == node) && delivered(Step::Truncate(node)))
    };
    let mut reports = Vec::new();
    for node in (0..config.nodes).filter(|&n| survives(n)) {
        let mut report = RecoveryReport {
            node,
            ..RecoveryReport::default()
        };
        if delivered(Step::Lock(node)) && !delivered(Step::CommitPrimary(node)) {
            report.locks.push(Held {
                txid,
                regions: regions.clone(),
                entries: lock_entries(node),
            });
        }
        if delivered(Step::CommitBackup(node)) && !delivered(Step::Truncate(node)) {
            report.backups.push(Held {
                txid,
                regions: regions.clone(),
                entries: backup_entries(node),
            });
        }
        if delivered(Step::Truncate(node)) {
            report.truncated.push(txid);
        }
        if node == coordinator && !delivered(Step::Reported) && done > 0 {
            let sent = happened.iter().any(|s| matches!(s, Step::CommitPrimary(_)));
            let phase = if sent {
                CommitPhase::CommitPrimarySent
            } else {
                CommitPhase::BeforeCommitPrimary
            };
            report.parked.push((txid, phase));
        }
        reports.push(report);
    }
    let failed: Vec<usize> = crashed.into_iter().collect();
    let manager = (0..config.nodes)
        .find(|&n| survives(n))
        .expect("a survivor");
    let Some(new) = config.without(&failed, manager) else {
        return; // A region lost every replica: nothing to decide.
    };
    let decisions = decide(config, &new, &reports);
    if reports
        .iter()
        .all(|r| r.locks.is_empty() && r.backups.is_empty() && r.parked.is_empty())
    {
        // Nobody holds anything: the transaction is over everywhere (or
        // never began); nothing is left to decide.
        assert!(
            decisions
                .values()
                .all(|d| d.committed.is_empty() && d.aborted.is_empty()),
            "{case}"
        );
        return;
    }
    let verdicts: BTreeSet<bool> = decisions
        .values()
        .map(|d| {
            assert_ne!(
                d.committed.contains(&txid),
                d.aborted.contains(&txid),
                "{case}: neither or both"
            );
            d.committed.contains(&txid)
        })
        .collect();
    assert_eq!(verdicts.len(), 1, "{case}: members decide differently");
    let committed = verdicts.into_iter().next().expect("one verdict");
    let visible = happened.iter().any(|s| matches!(s, Step::CommitPrimary(_)));
    if visible || delivered(Step::Reported) {
        assert!(committed, "{case}: installed or reported, yet aborted");
    }
    if committed {
        for &region in written {
            for replica in new.replicas(region) {
                let own = reports
                    .iter()
                    .filter(|r| r.node == replica)
                    .flat_map(|r| r.locks.iter().chain(&r.backups))
                    .any(|held| held.entries.iter().any(|e| e.addr.region() == region));
                let given = decisions[&replica]
                    .installs
                    .iter()
                    .any(|e| e.addr.region() == region);
                assert!(
                    installed(replica, region) || own || given,
                    "{case}: committed, but replica {replica} of region {region} never gets its writes"
                );
            }
        }
    }
}

#[test]
fn every_crash_point_is_decided_safely() {
    let mut cases = 0;
    for nodes in [3usize, 4] {
        for copies in [2usize, 3] {
            let config = Configuration::initial(nodes, copies, 1);
            let regions = nodes as u16;
            let mut write_sets: Vec<Vec<u16>> = (0..regions).map(|r| vec![r]).collect();
            for a in 0..regions {
                for b in a + 1..regions {
                    write_sets.push(vec![a, b]);
                }
            }
            for written in &write_sets {
                for coordinator in 0..nodes {
                    let total = steps(&config, written).len();
                    for done in 0..=total {
                        for crashed in (0..nodes).map(Some).chain([None]) {
                            check(&config, coordinator, written, done, crashed);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 1000, "{cases} cases");
}
