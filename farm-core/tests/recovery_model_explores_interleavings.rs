//! Recovery's vote and decision rules ([`farm_core::reconfiguration::decide`])
//! and lock recovery, model-checked with shuttle over the interleavings of
//! two concurrent, conflicting commits and a crash that can strike at any
//! step of either (FaRM SOSP'15 §4 and §5.3).
//!
//! The model: each transaction's coordinator sends its LOCKs to the
//! primaries at once (one thread per record, as the rings let records to
//! different nodes land in any order), waits for every answer, then its
//! COMMIT-BACKUPs at once, then its COMMIT-PRIMARYs, reports to its client,
//! and TRUNCATEs. A LOCK fails when another transaction holds the object or
//! installed a newer version (both transactions expect version 0), and the
//! coordinator then releases the locks it got. A record to or from a node
//! that has crashed is lost; a coordinator that loses one after LOCK parks
//! for recovery's decision, as the engine's gate does. A crasher thread
//! crashes one node (the coordinators, a primary, a backup, or none) at a
//! point that shuttle's scheduler chooses. Then every survivor reports what
//! it holds, `decide` runs on the configuration without the crashed node,
//! and the test checks:
//! - every member decides every reported transaction, and all alike;
//! - a transaction that a primary installed, or whose client heard
//!   "committed", is committed;
//! - a committed transaction's writes reach every replica of its regions in
//!   the new configuration (installed, held in the replica's own record, or
//!   among its installs);
//! - no two transactions that both expected version 0 of an object commit
//!   (a lost update);
//! - every lock that a survivor holds belongs to a decided transaction, so
//!   apply releases it: a dead coordinator leaves no lock behind.
//!
//! Shuttle prints the schedule of a failing run, which replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use farm_core::codec::record::Entry;
use farm_core::config::Configuration;
use farm_core::reconfiguration::{decide, CommitPhase, Decisions, Held, RecoveryReport};
use farm_core::{Addr, Header, TxnId};
use shuttle::sync::Mutex;

/// One object per region, at the region's first slot.
fn entry(region: u16) -> Entry {
    let expected = Header::decode(0);
    Entry {
        addr: Addr::new(region, 0, 0, 65_536),
        expected,
        new: expected.after_write(),
        payload: vec![region as u8; 8],
    }
}

#[derive(Clone)]
struct Txn {
    id: TxnId,
    coordinator: usize,
    regions: Vec<u16>,
}

#[derive(Default)]
struct World {
    crashed: Option<usize>,
    /// (primary, region) → the transaction holding its object's lock.
    lock_owner: BTreeMap<(usize, u16), TxnId>,
    /// (replica, region) → the transaction whose write it installed.
    installed: BTreeMap<(usize, u16), TxnId>,
    /// (node, txn) → regions it holds a LOCK of, as primary.
    locks: BTreeMap<(usize, TxnId), Vec<u16>>,
    /// (node, txn) → regions it holds a COMMIT-BACKUP of, as backup.
    backups: BTreeMap<(usize, TxnId), Vec<u16>>,
    truncated: BTreeMap<usize, Vec<TxnId>>,
    parked: BTreeMap<usize, Vec<(TxnId, CommitPhase)>>,
    reported: BTreeSet<TxnId>,
}

impl World {
    fn alive(&self, node: usize) -> bool {
        self.crashed != Some(node)
    }
}

type Shared = Arc<Mutex<World>>;

/// Delivers one record from `from` to `to` at once (if both live) and runs
/// `effect` at the receiver; `None` when the record or its answer is lost.
fn deliver<T>(
    world: &Shared,
    from: usize,
    to: usize,
    effect: impl FnOnce(&mut World) -> T,
) -> Option<T> {
    let mut w = world.lock().unwrap();
    if !w.alive(from) || !w.alive(to) {
        return None;
    }
    Some(effect(&mut w))
}

/// Sends one record per target at once, each from its own thread; the
/// answers in target order.
fn fan_out<T: Send + 'static>(
    world: &Shared,
    from: usize,
    targets: &[usize],
    effect: impl Fn(&mut World, usize) -> T + Send + Sync + Clone + 'static,
) -> Vec<Option<T>> {
    let handles: Vec<_> = targets
        .iter()
        .map(|&to| {
            let (world, effect) = (world.clone(), effect.clone());
            shuttle::thread::spawn(move || deliver(&world, from, to, |w| effect(w, to)))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn commit(world: &Shared, config: &Configuration, txn: &Txn) {
    let c = txn.coordinator;
    let primaries: BTreeSet<usize> = txn.regions.iter().map(|&r| config.primary(r)).collect();
    let primaries: Vec<usize> = primaries.into_iter().collect();
    let backups: BTreeSet<usize> = txn
        .regions
        .iter()
        .flat_map(|&r| config.backups(r))
        .collect();
    let backups: Vec<usize> = backups.into_iter().collect();
    let held_at = {
        let (config, regions) = (config.clone(), txn.regions.clone());
        move |node: usize, as_primary: bool| -> Vec<u16> {
            regions
                .iter()
                .copied()
                .filter(|&r| {
                    if as_primary {
                        config.primary(r) == node
                    } else {
                        config.backups(r).any(|b| b == node)
                    }
                })
                .collect()
        }
    };
    let id = txn.id;

    // LOCK: at each primary, lock every object it holds of the write set,
    // if none is locked or newer than expected; else take nothing.
    let h = held_at.clone();
    let locked = fan_out(world, c, &primaries, move |w, p| {
        let mine = h(p, true);
        let free = mine
            .iter()
            .all(|&r| !w.lock_owner.contains_key(&(p, r)) && !w.installed.contains_key(&(p, r)));
        if free {
            for &r in &mine {
                w.lock_owner.insert((p, r), id);
            }
            w.locks.insert((p, id), mine);
        }
        free
    });
    if locked.iter().any(|answer| answer.is_none()) {
        // A lost LOCK or answer: the engine parks (a managed node) before
        // COMMIT-BACKUP; recovery releases the locks.
        park(world, c, id, CommitPhase::BeforeCommitPrimary);
        return;
    }
    if locked.iter().any(|answer| answer == &Some(false)) {
        // A conflict: release what was granted (ABORT), client told.
        let granted: Vec<usize> = primaries
            .iter()
            .zip(&locked)
            .filter(|(_, answer)| **answer == Some(true))
            .map(|(&p, _)| p)
            .collect();
        fan_out(world, c, &granted, move |w, p| {
            if let Some(regions) = w.locks.remove(&(p, id)) {
                for r in regions {
                    w.lock_owner.remove(&(p, r));
                }
            }
        });
        return;
    }
    // COMMIT-BACKUP.
    let h = held_at.clone();
    let backed = fan_out(world, c, &backups, move |w, b| {
        w.backups.insert((b, id), h(b, false));
    });
    if backed.iter().any(Option::is_none) {
        park(world, c, id, CommitPhase::BeforeCommitPrimary);
        return;
    }
    // COMMIT-PRIMARY: install and unlock.
    let installed = fan_out(world, c, &primaries, move |w, p| {
        if let Some(regions) = w.locks.remove(&(p, id)) {
            for r in regions {
                w.lock_owner.remove(&(p, r));
                w.installed.insert((p, r), id);
            }
        }
    });
    if installed.iter().any(Option::is_none) {
        park(world, c, id, CommitPhase::CommitPrimarySent);
        return;
    }
    {
        let mut w = world.lock().unwrap();
        if !w.alive(c) {
            return;
        }
        w.reported.insert(id);
    }
    // TRUNCATE: backups apply and forget.
    fan_out(world, c, &backups, move |w, b| {
        if let Some(regions) = w.backups.remove(&(b, id)) {
            for r in regions {
                w.installed.insert((b, r), id);
            }
            w.truncated.entry(b).or_default().push(id);
        }
    });
}

fn park(world: &Shared, coordinator: usize, id: TxnId, phase: CommitPhase) {
    let mut w = world.lock().unwrap();
    if w.alive(coordinator) {
        w.parked.entry(coordinator).or_default().push((id, phase));
    }
}

/// A decision rule: `decide` or a wrong one.
type Decide = fn(&Configuration, &Configuration, &[RecoveryReport]) -> BTreeMap<usize, Decisions>;

/// One run: two commits and a crash of `victim`, concurrently; then
/// recovery's decision by `decide`, checked.
fn run(config: &Configuration, txns: &[Txn], victim: Option<usize>, decide: Decide) {
    let world: Shared = Arc::new(Mutex::new(World::default()));
    let mut threads = Vec::new();
    for txn in txns {
        let (world, config, txn) = (world.clone(), config.clone(), txn.clone());
        threads.push(shuttle::thread::spawn(move || {
            commit(&world, &config, &txn)
        }));
    }
    if let Some(victim) = victim {
        let world = world.clone();
        threads.push(shuttle::thread::spawn(move || {
            world.lock().unwrap().crashed = Some(victim);
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let w = world.lock().unwrap();
    let survivors: Vec<usize> = (0..config.nodes).filter(|&n| w.alive(n)).collect();
    let txn_of = |id: TxnId| txns.iter().find(|t| t.id == id).expect("a known txn");
    let held = |id: TxnId, regions: &[u16]| Held {
        txid: id,
        regions: txn_of(id).regions.clone(),
        entries: regions.iter().map(|&r| entry(r)).collect(),
    };
    let reports: Vec<RecoveryReport> = survivors
        .iter()
        .map(|&node| RecoveryReport {
            node,
            locks: w
                .locks
                .iter()
                .filter(|((n, _), _)| *n == node)
                .map(|((_, id), regions)| held(*id, regions))
                .collect(),
            backups: w
                .backups
                .iter()
                .filter(|((n, _), _)| *n == node)
                .map(|((_, id), regions)| held(*id, regions))
                .collect(),
            parked: w.parked.get(&node).cloned().unwrap_or_default(),
            truncated: w.truncated.get(&node).cloned().unwrap_or_default(),
        })
        .collect();
    let failed: Vec<usize> = w.crashed.into_iter().collect();
    let Some(new) = config.without(&failed, survivors[0]) else {
        return; // a region lost every replica: nothing to decide
    };
    let decisions = decide(config, &new, &reports);
    let case = format!(
        "nodes {}, copies {}, txns {:?}, crashed {:?}, reported {:?}, installed {:?}",
        config.nodes,
        config.copies,
        txns.iter()
            .map(|t| (t.coordinator, t.regions.clone()))
            .collect::<Vec<_>>(),
        w.crashed,
        w.reported,
        w.installed
    );

    let mentioned: BTreeSet<TxnId> = reports
        .iter()
        .flat_map(|r| {
            r.locks
                .iter()
                .chain(&r.backups)
                .map(|h| h.txid)
                .chain(r.parked.iter().map(|(id, _)| *id))
        })
        .collect();
    let mut committed = w.reported.clone();
    for &id in &mentioned {
        let verdicts: BTreeSet<bool> = new
            .members
            .iter()
            .map(|member| {
                let d = decisions.get(member).cloned().unwrap_or_default();
                assert_ne!(
                    d.committed.contains(&id),
                    d.aborted.contains(&id),
                    "{case}: member {member} decides {id:?} neither or both ways"
                );
                d.committed.contains(&id)
            })
            .collect();
        assert_eq!(
            verdicts.len(),
            1,
            "{case}: members decide {id:?} differently"
        );
        if verdicts.contains(&true) {
            committed.insert(id);
        } else {
            assert!(
                !w.reported.contains(&id),
                "{case}: {id:?} was reported committed, and recovery aborts it"
            );
        }
    }
    for (&(node, _), &id) in &w.installed {
        if config.primary(txn_of(id).regions[0]) == node || w.reported.contains(&id) {
            assert!(
                committed.contains(&id),
                "{case}: {id:?} was installed at node {node}, and recovery aborts it"
            );
        }
    }
    for &id in &committed {
        for &region in &txn_of(id).regions {
            for replica in new.replicas(region) {
                let has = w.installed.get(&(replica, region)) == Some(&id);
                let own = reports.iter().filter(|r| r.node == replica).any(|r| {
                    r.locks.iter().chain(&r.backups).any(|h| {
                        h.txid == id && h.entries.iter().any(|e| e.addr.region() == region)
                    })
                });
                let given = decisions
                    .get(&replica)
                    .is_some_and(|d| d.installs.iter().any(|e| e.addr.region() == region));
                assert!(
                    has || own || given,
                    "{case}: {id:?} committed, but replica {replica} of region {region} never gets its write"
                );
            }
        }
    }
    let committed: Vec<&Txn> = txns.iter().filter(|t| committed.contains(&t.id)).collect();
    for (i, a) in committed.iter().enumerate() {
        for b in &committed[i + 1..] {
            assert!(
                !a.regions.iter().any(|r| b.regions.contains(r)),
                "{case}: {:?} and {:?} both committed over version 0 of one object (a lost update)",
                a.id,
                b.id
            );
        }
    }
    for ((node, id), _) in w.locks.iter().filter(|((n, _), _)| w.alive(*n)) {
        assert!(
            mentioned.contains(id),
            "{case}: node {node} holds a lock of {id:?} that recovery does not decide"
        );
    }
}

/// Every scenario: configurations, two overlapping transactions from
/// different coordinators, and each possible victim.
fn scenarios() -> Vec<(Configuration, Vec<Txn>, Option<usize>)> {
    let mut all = Vec::new();
    for (nodes, copies) in [(3usize, 2usize), (3, 3), (4, 3)] {
        let config = Configuration::initial(nodes, copies, 1);
        for (a, b) in [(vec![0u16, 1], vec![1u16, 2]), (vec![0], vec![0, 2])] {
            let txns = vec![
                Txn {
                    id: TxnId::new(0, 0, 1),
                    coordinator: 0,
                    regions: a.clone(),
                },
                Txn {
                    id: TxnId::new(1, 0, 1),
                    coordinator: 1,
                    regions: b.clone(),
                },
            ];
            for victim in (0..nodes).map(Some).chain([None]) {
                all.push((config.clone(), txns.clone(), victim));
            }
        }
    }
    all
}

#[test]
fn decisions_are_safe_under_random_interleavings_and_crashes() {
    for (config, txns, victim) in scenarios() {
        shuttle::check_random(move || run(&config, &txns, victim, decide), 300);
    }
}

/// The model can fail: a vote that aborts what it should commit (the
/// fault `farm check --fault abort-in-recovery` injects) and one that
/// commits what it should abort are both caught.
#[test]
fn wrong_votes_are_caught() {
    fn abort_all(
        old: &Configuration,
        new: &Configuration,
        reports: &[RecoveryReport],
    ) -> BTreeMap<usize, Decisions> {
        let mut decisions = decide(old, new, reports);
        for d in decisions.values_mut() {
            let committed = std::mem::take(&mut d.committed);
            d.aborted.extend(committed);
            d.installs.clear();
        }
        decisions
    }
    fn commit_all(
        old: &Configuration,
        new: &Configuration,
        reports: &[RecoveryReport],
    ) -> BTreeMap<usize, Decisions> {
        let mut decisions = decide(old, new, reports);
        for d in decisions.values_mut() {
            let aborted = std::mem::take(&mut d.aborted);
            d.committed.extend(aborted);
        }
        decisions
    }
    for (name, wrong) in [
        ("abort-all", abort_all as Decide),
        ("commit-all", commit_all),
    ] {
        let caught = scenarios().into_iter().any(|(config, txns, victim)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shuttle::check_random(move || run(&config, &txns, victim, wrong), 300)
            }))
            .is_err()
        });
        assert!(caught, "the model did not catch the wrong vote {name}");
    }
}

#[test]
fn decisions_are_safe_under_pct_schedules() {
    // PCT finds bugs that need a few specific preemptions (depth 3).
    for (config, txns, victim) in scenarios() {
        shuttle::check_pct(move || run(&config, &txns, victim, decide), 200, 3);
    }
}
