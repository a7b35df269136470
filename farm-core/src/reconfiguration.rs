//! Transaction-state recovery when the configuration changes (FaRM
//! SOSP'15 §5.3): what each surviving node reports, and the rules that
//! decide every transaction a failure left unfinished.
//!
//! farm-rs stops the cluster for a reconfiguration, where FaRM lets
//! regions go on as soon as their locks are recovered: every member closes
//! its gate (new transactions wait, commits stop at their next step or
//! park for a decision), then drains its rings and reports everything it
//! holds. That makes every unfinished transaction a recovering one, and
//! the decision one step at the configuration manager, which sees every
//! survivor's records at once; the price is that all transactions wait
//! for the reconfiguration, not only those of the failed node's regions
//! (measured in the README's "Failures").
//!
//! **The rules** (FaRM's vote, with every survivor's records at hand):
//! - A transaction whose coordinator survived is decided by it: committed
//!   if it had sent COMMIT-PRIMARY to any primary (every COMMIT-BACKUP was
//!   acknowledged before), aborted if it parked earlier; one it no longer
//!   runs committed if any COMMIT-BACKUP of it is held (it is waiting for
//!   its lazy TRUNCATE), else it aborted.
//! - A transaction whose coordinator failed commits if some survivor
//!   truncated it (a coordinator truncates only after every COMMIT-PRIMARY
//!   was acknowledged), or if some survivor holds a COMMIT-BACKUP of it (its coordinator validated it with every lock
//!   held: it may have committed, and must if a primary installed it) and
//!   the writes of each region it wrote survive: the region's old primary
//!   survived (it holds the LOCK, or installed it already), or a survivor
//!   holds a record with that region's writes. Otherwise it aborts: no
//!   primary can have installed it (a COMMIT-PRIMARY follows every
//!   acknowledged COMMIT-BACKUP, and those would have survived).
//!
//! A committed transaction's writes are then installed at every replica of
//! its regions in the new configuration (FaRM's "replicate transaction
//! state"); an aborted one's locks are released and its COMMIT-BACKUPs
//! dropped. Every install is version-guarded, so a replica that had it
//! already is unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::codec::record::Entry;
use crate::config::Configuration;
use crate::txn_id::TxnId;

pub use crate::node::gate::CommitPhase;

/// A pending record's transaction, as recovery sees it: the regions the
/// transaction writes and the record's writes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    pub txid: TxnId,
    pub regions: Vec<u16>,
    pub entries: Vec<Entry>,
}

/// What one surviving node reports once its rings are drained.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    pub node: usize,
    /// LOCKs it holds as a primary.
    pub locks: Vec<Held>,
    /// COMMIT-BACKUPs it holds as a backup.
    pub backups: Vec<Held>,
    /// Commits it coordinates that parked for recovery's decision.
    pub parked: Vec<(TxnId, CommitPhase)>,
    /// Transactions it truncated recently as a backup: each committed
    /// (TRUNCATE follows every COMMIT-PRIMARY's acknowledgement).
    #[serde(default)]
    pub truncated: Vec<TxnId>,
}

/// What one node is to do: the fate of every transaction, and the writes
/// of committed ones to install at its replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decisions {
    pub committed: BTreeSet<TxnId>,
    pub aborted: BTreeSet<TxnId>,
    pub installs: Vec<Entry>,
}

/// Everything the reports say about one transaction.
#[derive(Default)]
struct Seen<'a> {
    regions: BTreeSet<u16>,
    /// (holder, record) of every LOCK and COMMIT-BACKUP held.
    locks: Vec<(usize, &'a Held)>,
    backups: Vec<(usize, &'a Held)>,
    parked: Option<CommitPhase>,
}

/// Decides every transaction the `reports` of the survivors of `old`
/// mention, for the configuration `new`; returns what each member of `new`
/// is to do.
pub fn decide(
    old: &Configuration,
    new: &Configuration,
    reports: &[RecoveryReport],
) -> BTreeMap<usize, Decisions> {
    let mut seen: HashMap<TxnId, Seen> = HashMap::new();
    let truncated: BTreeSet<TxnId> = reports
        .iter()
        .flat_map(|r| r.truncated.iter().copied())
        .collect();
    for report in reports {
        for held in &report.locks {
            let entry = seen.entry(held.txid).or_default();
            entry.regions.extend(held.regions.iter().copied());
            entry.locks.push((report.node, held));
        }
        for held in &report.backups {
            let entry = seen.entry(held.txid).or_default();
            entry.regions.extend(held.regions.iter().copied());
            entry.backups.push((report.node, held));
        }
        for (txid, phase) in &report.parked {
            seen.entry(*txid).or_default().parked = Some(*phase);
        }
    }
    let mut decisions: BTreeMap<usize, Decisions> = new
        .members
        .iter()
        .map(|&node| (node, Decisions::default()))
        .collect();
    for (txid, seen) in &seen {
        let committed = if new.is_member(txid.node()) {
            match seen.parked {
                Some(CommitPhase::CommitPrimarySent) => true,
                Some(CommitPhase::BeforeCommitPrimary) => false,
                None => !seen.backups.is_empty(),
            }
        } else {
            // Truncated somewhere: committed, and every region's writes are
            // installed at that backup or held by the others.
            truncated.contains(txid)
                || (!seen.backups.is_empty()
                    && seen
                        .regions
                        .iter()
                        .all(|&region| region_survives(old, new, region, seen)))
        };
        for (node, decided) in decisions.iter_mut() {
            if committed {
                decided.committed.insert(*txid);
                decided.installs.extend(writes_to_install(new, *node, seen));
            } else {
                decided.aborted.insert(*txid);
            }
        }
    }
    decisions
}

/// The writes of `region` survive: its old primary did, or a survivor
/// holds a record with writes of it.
fn region_survives(old: &Configuration, new: &Configuration, region: u16, seen: &Seen) -> bool {
    let primary_survived =
        usize::from(region) < old.regions() && new.is_member(old.primary(region));
    primary_survived
        || seen
            .locks
            .iter()
            .chain(&seen.backups)
            .any(|(_, held)| held.entries.iter().any(|e| e.addr.region() == region))
}

/// The writes of a committed transaction that `node` must install: those
/// of every region it holds in `new`, taken from any survivor's record,
/// unless its own records carry them (it applies those itself).
fn writes_to_install(new: &Configuration, node: usize, seen: &Seen) -> Vec<Entry> {
    let own: BTreeSet<u16> = seen
        .locks
        .iter()
        .chain(&seen.backups)
        .filter(|(holder, _)| *holder == node)
        .flat_map(|(_, held)| held.entries.iter().map(|e| e.addr.region()))
        .collect();
    let mut installs = Vec::new();
    let mut taken: BTreeSet<u16> = BTreeSet::new();
    for (_, held) in seen.locks.iter().chain(&seen.backups) {
        let regions: BTreeSet<u16> = held.entries.iter().map(|e| e.addr.region()).collect();
        for region in regions {
            if own.contains(&region) || taken.contains(&region) || !new.holds(node, region) {
                continue;
            }
            taken.insert(region);
            installs.extend(
                held.entries
                    .iter()
                    .filter(|e| e.addr.region() == region)
                    .cloned(),
            );
        }
    }
    installs
}

#[cfg(test)]
mod tests {
    //! Each rule of [`decide`] on a small cluster: three nodes, one region
    //! each, two copies (region r on nodes r and r + 1), node 2 failed.

    use super::*;
    use crate::header::{Addr, Header};

    fn old() -> Configuration {
        Configuration::initial(3, 2, 1)
    }

    fn new() -> Configuration {
        old()
            .without(&[2], 0)
            .expect("every region keeps a replica")
    }

    fn write(region: u16) -> Entry {
        let expected = Header::decode(0);
        Entry {
            addr: Addr::new(region, 0, 0, 65_536),
            expected,
            new: expected.after_write(),
            payload: vec![7; 8],
        }
    }

    fn held(txid: TxnId, regions: &[u16], writes: &[u16]) -> Held {
        Held {
            txid,
            regions: regions.to_vec(),
            entries: writes.iter().map(|&r| write(r)).collect(),
        }
    }

    fn report(node: usize) -> RecoveryReport {
        RecoveryReport {
            node,
            ..RecoveryReport::default()
        }
    }

    fn committed(decisions: &BTreeMap<usize, Decisions>, txid: TxnId) -> bool {
        let verdicts: BTreeSet<bool> = decisions
            .values()
            .map(|d| {
                assert_ne!(d.committed.contains(&txid), d.aborted.contains(&txid));
                d.committed.contains(&txid)
            })
            .collect();
        assert_eq!(verdicts.len(), 1, "every member decides alike");
        verdicts.into_iter().next().expect("a member")
    }

    #[test]
    fn the_new_configuration_promotes_the_surviving_backup() {
        let new = new();
        assert_eq!(new.members, vec![0, 1]);
        // Region 2 lived on nodes 2 and 0; region 1 on nodes 1 and 2.
        assert_eq!(new.primary(2), 0);
        assert_eq!(new.replicas(1).collect::<Vec<_>>(), vec![1]);
        assert_eq!(new.under_replicated().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_live_coordinator_decides_by_how_far_it_got() {
        let (sent, before) = (TxnId::new(0, 1, 1), TxnId::new(0, 2, 1));
        let mut zero = report(0);
        zero.parked = vec![
            (sent, CommitPhase::CommitPrimarySent),
            (before, CommitPhase::BeforeCommitPrimary),
        ];
        let mut one = report(1);
        one.locks = vec![held(sent, &[1], &[1]), held(before, &[1], &[1])];
        one.backups = vec![held(before, &[0], &[0])];
        let decisions = decide(&old(), &new(), &[zero, one]);
        assert!(committed(&decisions, sent));
        assert!(!committed(&decisions, before));
    }

    #[test]
    fn a_finished_commit_waiting_for_truncation_is_committed_and_installed_where_missing() {
        // Coordinator 1 committed a write to region 2 (primary 2, backup 0):
        // node 0 holds the COMMIT-BACKUP and applies it itself.
        let txid = TxnId::new(1, 0, 9);
        let mut zero = report(0);
        zero.backups = vec![held(txid, &[2], &[2])];
        let decisions = decide(&old(), &new(), &[zero, report(1)]);
        assert!(committed(&decisions, txid));
        assert!(decisions[&0].installs.is_empty(), "its own record");
        assert!(decisions[&1].installs.is_empty(), "holds no replica of 2");
    }

    #[test]
    fn a_failed_coordinators_transaction_commits_only_with_evidence_and_every_region() {
        // Writes regions 0 and 1. Node 0 (primary of 0) holds the LOCK;
        // region 1's primary (1) holds the LOCK; its backup (2) failed.
        let with_backup = TxnId::new(2, 0, 1);
        let mut zero = report(0);
        let mut one = report(1);
        zero.locks = vec![held(with_backup, &[0, 1], &[0])];
        one.locks = vec![held(with_backup, &[0, 1], &[1])];
        // Region 0's backup is node 1: it got the COMMIT-BACKUP.
        one.backups = vec![held(with_backup, &[0, 1], &[0])];
        // The same shape, but no COMMIT-BACKUP reached a survivor.
        let without = TxnId::new(2, 1, 1);
        zero.locks.push(held(without, &[0, 1], &[0]));
        one.locks.push(held(without, &[0, 1], &[1]));
        let decisions = decide(&old(), &new(), &[zero, one]);
        assert!(committed(&decisions, with_backup));
        assert!(!committed(&decisions, without));
    }

    #[test]
    fn a_region_whose_writes_died_with_its_replicas_aborts_the_transaction() {
        // Coordinator 2 wrote regions 0 and 2; region 2's primary (2)
        // failed and its backup (0) got no COMMIT-BACKUP; region 0's
        // backup (1) did. Its writes to region 2 are nowhere: abort (no
        // COMMIT-PRIMARY can have been sent before every backup had one).
        let txid = TxnId::new(2, 0, 3);
        let mut zero = report(0);
        zero.locks = vec![held(txid, &[0, 2], &[0])];
        let mut one = report(1);
        one.backups = vec![held(txid, &[0, 2], &[0])];
        let decisions = decide(&old(), &new(), &[zero, one]);
        assert!(!committed(&decisions, txid));
    }

    #[test]
    fn committed_writes_reach_a_promoted_primary_that_lacks_them() {
        // Coordinator 2 wrote regions 1 (nodes 1, 2) and 2 (nodes 2, 0).
        // Node 1 holds the LOCK of region 1; node 0 the COMMIT-BACKUP of
        // region 2, so both regions' writes survive and it commits. Each
        // survivor applies its own record; neither needs an install.
        let txid = TxnId::new(2, 4, 4);
        let mut zero = report(0);
        zero.backups = vec![held(txid, &[1, 2], &[2])];
        let mut one = report(1);
        one.locks = vec![held(txid, &[1, 2], &[1])];
        let decisions = decide(&old(), &new(), &[zero, one]);
        assert!(committed(&decisions, txid));
        assert!(decisions[&0].installs.is_empty());
        assert!(decisions[&1].installs.is_empty());
        // With region 1 also backed on node 0 (three copies), node 0 would
        // install region 1's writes from node 1's LOCK.
        let old3 = Configuration::initial(3, 3, 1);
        let new3 = old3.without(&[2], 0).expect("replicas left");
        let mut zero = report(0);
        zero.backups = vec![held(txid, &[1, 2], &[2])];
        let mut one = report(1);
        one.locks = vec![held(txid, &[1, 2], &[1])];
        one.backups = vec![held(txid, &[1, 2], &[2])];
        let decisions = decide(&old3, &new3, &[zero, one]);
        assert!(committed(&decisions, txid));
        let regions: Vec<u16> = decisions[&0]
            .installs
            .iter()
            .map(|e| e.addr.region())
            .collect();
        assert_eq!(regions, vec![1]);
    }
}
