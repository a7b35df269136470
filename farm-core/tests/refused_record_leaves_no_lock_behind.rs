//! A commit that fails part-way through its LOCKs releases every lock
//! already granted. (Regression: a transaction on node 0 that wrote 8
//! objects of 4,072 bytes on node 1 and 16 on node 2 had node 1's LOCK
//! granted, then node 2's refused as too large; no ABORT was sent, and
//! every later read of node 1's objects aborted with a read conflict for
//! ever, which `Node::run` retried for ever: a silent hang.)

use std::time::{Duration, Instant};

use farm_core::limits::OBJECT_PAYLOAD_MAX;
use farm_core::{Addr, Cluster, ClusterConfig, Error, TxnError};
use rdma_transport::faulty::FaultPlan;
use rdma_transport::NodeId;

const BIG: usize = OBJECT_PAYLOAD_MAX as usize;

fn big_objects(cluster: &Cluster, owner: usize, count: usize) -> Vec<Addr> {
    (0..count)
        .map(|_| {
            cluster
                .node(owner)
                .run(|txn| txn.alloc(&vec![1u8; BIG]))
                .unwrap()
        })
        .collect()
}

/// Every object of `objects` can be read and written again, promptly.
fn unlocked(cluster: &Cluster, objects: &[Addr]) {
    let started = Instant::now();
    for addr in objects {
        let mut txn = cluster.node(2).begin().unwrap();
        match txn.read(*addr) {
            Ok(_) => {}
            Err(TxnError::Conflict(reason)) => panic!("{addr} stayed locked ({reason})"),
            Err(error) => panic!("{error}"),
        }
        txn.write(*addr, b"after").unwrap();
        txn.commit().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_reported_input_is_refused_and_node_1_keeps_no_lock() {
    let cluster = farm_core::testing::cluster(8 << 20);
    let on_1 = big_objects(&cluster, 1, 8);
    let on_2 = big_objects(&cluster, 2, 16);
    let mut txn = cluster.node(0).begin().unwrap();
    for addr in on_1.iter().chain(&on_2) {
        txn.write(*addr, &vec![2u8; BIG]).unwrap();
    }
    let error = txn.commit().unwrap_err();
    assert!(
        matches!(error, Error::TransactionTooLarge { .. }),
        "{error}"
    );
    unlocked(&cluster, &on_1);
}

/// A variant that the up-front size check cannot catch: node 1's LOCK is
/// sent and granted, then the link to node 2 is cut and node 2's LOCK
/// fails to post. The ABORT that follows releases node 1's locks.
#[test]
fn a_lock_that_fails_to_send_releases_the_locks_granted_before_it() {
    let plan = FaultPlan::new(1);
    let cluster = Cluster::start(ClusterConfig {
        region_bytes: 4 << 20,
        fault_plan: Some(plan.clone()),
        ..ClusterConfig::default()
    })
    .unwrap();
    let on_1 = big_objects(&cluster, 1, 2);
    let on_2 = big_objects(&cluster, 2, 2);
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    let mut txn = cluster.node(0).begin().unwrap();
    for addr in on_1.iter().chain(&on_2) {
        txn.write(*addr, b"never").unwrap();
    }
    plan.cut(NodeId(0), NodeId(2), true);
    let error = txn.commit().unwrap_err();
    assert!(
        matches!(error, Error::Fabric(rdma_transport::Error::Injected { .. })),
        "{error}"
    );
    plan.cut(NodeId(0), NodeId(2), false);
    unlocked(&cluster, &on_1);
    for addr in &on_1 {
        let value = cluster.node(1).run(|txn| txn.read(*addr)).unwrap();
        assert_eq!(value, b"after", "the failed commit left no trace");
    }
    // The failed post left no hole in the ring from node 0 to node 2: a
    // LOCK on it is answered at once.
    let started = Instant::now();
    cluster
        .node(0)
        .run(|txn| txn.write(on_2[0], b"later"))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
