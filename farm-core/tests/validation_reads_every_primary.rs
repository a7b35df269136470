//! A read-only transaction validates by READing the header of every object
//! it read from another node, posted to all of their primaries before any
//! is waited for, in waves when the read set is larger than a batch (64
//! READs per primary). Validation passes when nothing changed and fails
//! when any one object changed, whichever primary and wave it is in.

use farm_core::{AbortReason, Addr, Cluster, Outcome};

/// Objects per primary: more than two batches of 64, so three waves.
const PER_PRIMARY: usize = 150;

/// Reads every object from node 2 (a remote read for each), lets `meddle`
/// change things, then commits: the outcome.
fn read_all_then_commit(cluster: &Cluster, all: &[Addr], meddle: impl FnOnce()) -> Outcome {
    let mut txn = cluster.node(2).begin().unwrap();
    for &addr in all {
        txn.read(addr).unwrap();
    }
    meddle();
    txn.commit().unwrap()
}

#[test]
fn validation_covers_every_primary_and_wave() {
    let cluster = farm_core::testing::cluster(16 << 20);
    let on_0 = farm_core::testing::objects(&cluster, 0, PER_PRIMARY);
    let on_1 = farm_core::testing::objects(&cluster, 1, PER_PRIMARY);
    let all: Vec<Addr> = on_0.iter().chain(&on_1).copied().collect();

    assert_eq!(
        read_all_then_commit(&cluster, &all, || {}),
        Outcome::Committed,
        "nothing changed: validation passes"
    );

    // One change at a time: the first wave of node 0, the last wave of
    // node 1, the middle of each.
    for (addr, writer) in [
        (on_0[0], 0),
        (on_1[PER_PRIMARY - 1], 1),
        (on_0[100], 1),
        (on_1[70], 0),
    ] {
        let outcome = read_all_then_commit(&cluster, &all, || {
            cluster
                .node(writer)
                .run(|txn| txn.write(addr, b"changed"))
                .unwrap();
        });
        assert_eq!(
            outcome,
            Outcome::Aborted(AbortReason::Validation),
            "{addr:?} changed after it was read, written from node {writer}"
        );
    }

    assert_eq!(
        read_all_then_commit(&cluster, &all, || {}),
        Outcome::Committed,
        "nothing changed since: validation passes again"
    );
}
