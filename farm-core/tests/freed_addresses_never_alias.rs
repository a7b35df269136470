//! A freed address reads as stale long after its object is gone, through
//! any amount of churn in its region. (Regression: one node, one copy, a
//! 4 MiB region, an 8-byte object allocated and freed in a loop: after
//! about 8,000 turns an address freed earlier was handed out again for a
//! new object, and a read through the old address returned the new
//! object's value instead of a stale-address error. The incarnation had 12
//! bits and the allocator reused the most recently freed slot first.)

use std::collections::HashSet;

use farm_core::{Addr, Cluster, ClusterConfig, Error, HashTable, TxnError};

fn one_node() -> Cluster {
    Cluster::start(ClusterConfig {
        nodes: 1,
        copies: 1,
        region_bytes: 4 << 20,
        ..ClusterConfig::default()
    })
    .unwrap()
}

fn is_stale(result: Result<Vec<u8>, TxnError>) -> bool {
    matches!(result, Err(TxnError::Failed(Error::StaleAddress { .. })))
}

#[test]
fn alloc_free_churn_far_beyond_the_old_wrap_never_aliases() {
    let cluster = one_node();
    let node = cluster.node(0);
    let mut freed: HashSet<Addr> = HashSet::new();
    // 20,000 turns: 2.5 times the old wrap point, 20 turns of every slot
    // of the first slab.
    for turn in 0..20_000u64 {
        let addr = node.run(|txn| txn.alloc(&turn.to_le_bytes())).unwrap();
        assert!(
            !freed.contains(&addr),
            "turn {turn}: {addr} was handed out again while a freed copy of it exists"
        );
        node.run(|txn| txn.free(addr)).unwrap();
        freed.insert(addr);
    }
    let live = node.run(|txn| txn.alloc(b"alive")).unwrap();
    for addr in &freed {
        let result = node.begin().unwrap().read(*addr);
        assert!(
            is_stale(result),
            "{addr} reads as something: a freed address aliases"
        );
    }
    assert_eq!(node.run(|txn| txn.read(live)).unwrap(), b"alive");
}

/// The same through the hash table: a value's address, kept by the
/// application, reads as stale after its key is deleted and the table
/// churns (every put allocates a value, every delete frees one).
#[test]
fn a_kept_value_address_stays_stale_through_put_delete_churn() {
    let cluster = one_node();
    let node = cluster.node(0);
    let table = HashTable::create(&[node], 64).unwrap();
    // Values over the inline capacity: each is an object of its own.
    let value = |tag: &[u8]| [tag, &[0u8; farm_core::INLINE_VALUE_BYTES]].concat();
    node.run(|txn| table.put(txn, 7, &value(b"first"))).unwrap();
    let kept = node
        .run(|txn| table.value_addr(txn, 7))
        .unwrap()
        .expect("key 7 is there");
    assert_eq!(node.run(|txn| txn.read(kept)).unwrap(), value(b"first"));
    node.run(|txn| table.delete(txn, 7)).unwrap();
    for turn in 0..10_000u64 {
        let key = turn % 5;
        node.run(|txn| table.put(txn, key, &value(&turn.to_le_bytes())))
            .unwrap();
        node.run(|txn| table.delete(txn, key)).unwrap();
        if turn % 1000 == 0 {
            assert!(is_stale(node.begin().unwrap().read(kept)), "turn {turn}");
        }
    }
    node.run(|txn| table.put(txn, 7, b"again")).unwrap();
    assert!(is_stale(node.begin().unwrap().read(kept)));
    assert_eq!(
        node.run(|txn| table.get(txn, 7)).unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

/// `Node::free_slots` of a size class that does not exist is 0, and the
/// region's allocator goes on working (regression: the class indexed the
/// allocator's lists under its lock, so the panic poisoned it and every
/// later allocation in the region panicked too).
#[test]
fn free_slots_of_a_class_that_does_not_exist_is_zero() {
    let cluster = farm_core::testing::cluster(8 << 20);
    let node = cluster.node(0);
    let region = (0..u16::MAX)
        .find(|&region| node.free_slots(region, 0) > 0)
        .expect("node 0 is primary of a region");
    for class in [7u8, 8, u8::MAX] {
        assert_eq!(node.free_slots(region, class), 0);
    }
    let addr = node.run(|txn| txn.alloc(b"still allocates")).unwrap();
    assert_eq!(node.run(|txn| txn.read(addr)).unwrap(), b"still allocates");
}
