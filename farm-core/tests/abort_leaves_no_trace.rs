//! An aborted transaction (explicit abort, drop, lock conflict, validation
//! failure) leaves no trace: values, versions and lock bits are as before,
//! and slots it allocated go back to the allocator.

use std::sync::atomic::Ordering;
use std::time::Duration;

use farm_core::header::Header;
use farm_core::{AbortReason, Addr, Cluster, Outcome};

fn cluster() -> Cluster {
    farm_core::testing::cluster(4 << 20)
}

/// The header word and payload of `addr` at every replica.
fn snapshot(cluster: &Cluster, addr: Addr) -> Vec<(u64, Vec<u8>)> {
    cluster
        .nodes()
        .iter()
        .filter_map(|node| farm_core::testing::replica(node, addr.region()))
        .map(|mr| {
            let header = mr
                .atomic_u64(u64::from(addr.offset()))
                .unwrap()
                .load(Ordering::Acquire);
            let mut slot = vec![0u8; 64];
            mr.read(u64::from(addr.offset()), &mut slot).unwrap();
            (header, slot)
        })
        .collect()
}

#[test]
fn explicit_abort_and_drop_change_nothing() {
    let cluster = cluster();
    let node = cluster.node(1);
    let remote = cluster.node(0).run(|txn| txn.alloc(b"original")).unwrap();
    let local = node.run(|txn| txn.alloc(b"mine")).unwrap();
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    let before = (snapshot(&cluster, remote), snapshot(&cluster, local));
    let free_before = node.stats().lock_records.load(Ordering::Relaxed);
    let slots_before = node.free_slots(local.region(), 0);

    let mut txn = node.begin().unwrap();
    txn.write(remote, b"changed!").unwrap();
    txn.write(local, b"changed").unwrap();
    let fresh = txn.alloc(b"never").unwrap();
    txn.abort();

    {
        let mut txn = node.begin().unwrap();
        txn.write(remote, b"dropped").unwrap();
        txn.free(local).unwrap();
        // Dropped without commit.
    }
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (snapshot(&cluster, remote), snapshot(&cluster, local)),
        before
    );
    assert_eq!(
        node.stats().lock_records.load(Ordering::Relaxed),
        free_before,
        "an abort before commit sends nothing"
    );
    // The slot the aborted transaction allocated went back to the
    // allocator (last in line: its lock may outlive the abort briefly).
    assert_eq!(fresh.class(), 0);
    assert_eq!(
        node.free_slots(local.region(), 0),
        slots_before,
        "the aborted allocation's slot was given back"
    );
}

#[test]
fn lock_conflict_abort_unlocks_and_changes_nothing() {
    let cluster = cluster();
    let a = cluster
        .node(0)
        .run(|txn| txn.alloc(&1u64.to_le_bytes()))
        .unwrap();
    let b = cluster
        .node(1)
        .run(|txn| txn.alloc(&2u64.to_le_bytes()))
        .unwrap();
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    let before_b = snapshot(&cluster, b);

    // T1 reads a and b; T2 commits a change to a; T1 then writes both and
    // must abort (lock conflict at a's primary), leaving b untouched.
    let mut t1 = cluster.node(2).begin().unwrap();
    let _: u64 = t1.read_pod(a).unwrap();
    let _: u64 = t1.read_pod(b).unwrap();
    cluster.node(0).run(|txn| txn.write_pod(a, &10u64)).unwrap();
    t1.write_pod(a, &100u64).unwrap();
    t1.write_pod(b, &200u64).unwrap();
    assert_eq!(
        t1.commit().unwrap(),
        Outcome::Aborted(AbortReason::LockConflict)
    );
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    assert_eq!(
        snapshot(&cluster, b),
        before_b,
        "b keeps its value, version and lock bit"
    );
    for (word, _) in snapshot(&cluster, a) {
        assert!(!Header::decode(word).locked, "no lock is left behind");
    }
    let a_now: u64 = cluster.node(1).run(|txn| txn.read_pod(a)).unwrap();
    assert_eq!(a_now, 10);
}

#[test]
fn validation_abort_changes_nothing() {
    let cluster = cluster();
    let a = cluster
        .node(0)
        .run(|txn| txn.alloc(&1u64.to_le_bytes()))
        .unwrap();
    let b = cluster
        .node(1)
        .run(|txn| txn.alloc(&2u64.to_le_bytes()))
        .unwrap();
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    let before_b = snapshot(&cluster, b);
    // T1 reads a (not written) and writes b; a changes before T1 commits.
    let mut t1 = cluster.node(2).begin().unwrap();
    let _: u64 = t1.read_pod(a).unwrap();
    t1.write_pod(b, &99u64).unwrap();
    cluster.node(0).run(|txn| txn.write_pod(a, &5u64)).unwrap();
    assert_eq!(
        t1.commit().unwrap(),
        Outcome::Aborted(AbortReason::Validation)
    );
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    assert_eq!(snapshot(&cluster, b), before_b);
}
