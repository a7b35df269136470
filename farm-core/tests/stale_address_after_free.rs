//! Freeing an object bumps its slot's incarnation: a read through an old
//! address is an error, not a silent read of whatever lives there now.

use farm_core::{Error, TxnError};

#[test]
fn read_after_free_and_after_reuse_is_detected() {
    let cluster = farm_core::testing::cluster(4 << 20);
    let owner = cluster.node(0);
    let addr = owner.run(|txn| txn.alloc(b"first life")).unwrap();
    owner.run(|txn| txn.free(addr)).unwrap();
    for reader in cluster.nodes() {
        // Right after the free's commit returns, the object may still be
        // locked until its primary installs the free: a conflict, retried.
        let mut result = reader.begin().unwrap().read(addr);
        for _ in 0..100 {
            if !matches!(result, Err(TxnError::Conflict(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            result = reader.begin().unwrap().read(addr);
        }
        match result {
            Err(TxnError::Failed(Error::StaleAddress { found, .. })) => {
                assert_eq!(found, addr.incarnation() + 1)
            }
            other => panic!("node {} read a freed object: {other:?}", reader.id()),
        }
    }
    // The slot is reused, but only after every other free slot of its
    // class (oldest first): same offset, next incarnation, and the old
    // address still does not reach the new object.
    let mut allocated = 0;
    let reused = loop {
        let batch = owner
            .run(|txn| {
                (0..64)
                    .map(|_| txn.alloc(b"second life"))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        allocated += batch.len();
        if let Some(reused) = batch.into_iter().find(|a| a.offset() == addr.offset()) {
            break reused;
        }
        assert!(allocated < 10_000, "the freed slot never came back");
    };
    assert!(
        allocated > 1000,
        "the freed slot came back after {allocated} allocations, before the other free slots"
    );
    assert_eq!(reused.incarnation(), addr.incarnation() + 1);
    let mut txn = cluster.node(2).begin().unwrap();
    assert!(matches!(
        txn.read(addr),
        Err(TxnError::Failed(Error::StaleAddress { .. }))
    ));
    assert_eq!(txn.read(reused).unwrap(), b"second life");
    // Writing or freeing through the stale address fails the same way.
    let mut txn = cluster.node(1).begin().unwrap();
    assert!(matches!(
        txn.write(addr, b"x"),
        Err(TxnError::Failed(Error::StaleAddress { .. }))
    ));
}
