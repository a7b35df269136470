//! The transactional hash table: get/put/delete from any node, chains past
//! a bucket's capacity, values that grow, atomicity with the rest of the
//! transaction, and concurrent read-modify-writes of one key that lose no
//! update.

use std::collections::HashMap;
use std::time::Duration;

use farm_core::{Cluster, HashTable, TxnError};

fn cluster() -> Cluster {
    farm_core::testing::cluster(8 << 20)
}

#[test]
fn put_get_delete_from_every_node_with_overflow_chains() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    // 4 buckets for 200 keys: long overflow chains.
    let table = HashTable::create(&nodes, 4).unwrap();
    let mut model = HashMap::new();
    for key in 0..200u64 {
        let node = cluster.node(key as usize % 3);
        let value = vec![key as u8; 1 + (key as usize * 7) % 300];
        node.run(|txn| table.put(txn, key, &value)).unwrap();
        model.insert(key, value);
    }
    // Grow some values past their class; delete others.
    for key in (0..200u64).step_by(3) {
        let value = vec![0xAB; 700 + key as usize];
        cluster
            .node(1)
            .run(|txn| table.put(txn, key, &value))
            .unwrap();
        model.insert(key, value);
    }
    for key in (1..200u64).step_by(5) {
        let removed = cluster.node(2).run(|txn| table.delete(txn, key)).unwrap();
        assert_eq!(removed, model.remove(&key).is_some());
    }
    assert!(!cluster
        .node(0)
        .run(|txn| table.delete(txn, 10_000))
        .unwrap());
    for key in 0..200u64 {
        let node = cluster.node((key as usize + 1) % 3);
        let got = node.run(|txn| table.get(txn, key)).unwrap();
        assert_eq!(got.as_ref(), model.get(&key), "key {key}");
    }
}

/// The bulk path ([`HashTable::link_many`]) ends where the same puts one at
/// a time end: chains past a bucket's capacity (4 buckets, 300 keys), keys
/// already there (their old values are freed), keys given twice (the last
/// wins), and batches that each touch buckets earlier batches grew.
#[test]
fn link_many_agrees_with_put() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let linked = HashTable::create(&nodes, 4).unwrap();
    let model_table = HashTable::create(&nodes, 4).unwrap();
    let mut model = HashMap::new();
    // Some keys put the ordinary way first, as objects of their own (over
    // the inline capacity): link_many must replace and free them.
    for key in (0..300u64).step_by(7) {
        let value = vec![0xEE; farm_core::INLINE_VALUE_BYTES + 5];
        cluster
            .node(0)
            .run(|txn| linked.put(txn, key, &value))
            .unwrap();
    }
    let old_values: Vec<_> = (0..300u64)
        .step_by(7)
        .map(|key| {
            cluster
                .node(0)
                .run(|txn| linked.value_addr(txn, key))
                .unwrap()
                .unwrap()
        })
        .collect();
    for (round, keys) in [(0..150u64), (100..300u64)].into_iter().enumerate() {
        let mut keys: Vec<u64> = keys.collect();
        // A key twice in one call (the first chunk): the second value must
        // win.
        keys.insert(5, keys[3]);
        for (node_id, chunk) in keys.chunks(40).enumerate() {
            let node = cluster.node(node_id % 3);
            let values: Vec<Vec<u8>> = chunk
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    vec![(key + i as u64 + round as u64) as u8; 1 + (*key as usize % 90)]
                })
                .collect();
            let addrs = node
                .run(|txn| {
                    values
                        .iter()
                        .map(|v| txn.alloc(v))
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap();
            let entries: Vec<(u64, farm_core::Addr)> =
                chunk.iter().copied().zip(addrs.iter().copied()).collect();
            cluster
                .node((node_id + 1) % 3)
                .run(|txn| linked.link_many(txn, &entries))
                .unwrap();
            for (key, value) in chunk.iter().zip(&values) {
                node.run(|txn| model_table.put(txn, *key, value)).unwrap();
                model.insert(*key, value.clone());
            }
        }
    }
    for key in 0..320u64 {
        let node = cluster.node(key as usize % 3);
        let got = node.run(|txn| linked.get(txn, key)).unwrap();
        let expected = node.run(|txn| model_table.get(txn, key)).unwrap();
        assert_eq!(got, expected, "key {key}");
        assert_eq!(got.as_ref(), model.get(&key), "key {key}");
    }
    // The values replaced were freed: their addresses are stale now.
    for old in old_values {
        let read = cluster.node(1).run(|txn| txn.read(old).map(|_| ()));
        assert!(
            matches!(read, Err(farm_core::Error::StaleAddress { .. })),
            "a replaced value at {old} was not freed: {read:?}"
        );
    }
}

#[test]
fn an_aborted_put_is_not_visible() {
    let cluster = cluster();
    let table = HashTable::create(&[cluster.node(0)], 16).unwrap();
    cluster
        .node(0)
        .run(|txn| table.put(txn, 1, b"one"))
        .unwrap();
    let mut txn = cluster.node(1).begin().unwrap();
    table.put(&mut txn, 1, b"uno").unwrap();
    table.put(&mut txn, 2, b"two").unwrap();
    assert_eq!(
        table.get(&mut txn, 2).unwrap().as_deref(),
        Some(&b"two"[..]),
        "a transaction sees its own puts"
    );
    txn.abort();
    let (one, two) = cluster
        .node(2)
        .run(|txn| Ok::<_, TxnError>((table.get(txn, 1)?, table.get(txn, 2)?)))
        .unwrap();
    assert_eq!(one.as_deref(), Some(&b"one"[..]));
    assert_eq!(two, None);
}

#[test]
fn concurrent_increments_of_one_key_lose_no_update() {
    increments_lose_no_update(cluster());
}

/// The same with coordinators that yield at once while they wait for LOCK
/// answers (`LockWait::Yield`, `farm bench --lock-wait yield`).
#[test]
fn concurrent_increments_lose_no_update_with_yielding_lock_waits() {
    let cluster = Cluster::start(farm_core::ClusterConfig {
        region_bytes: 8 << 20,
        lock_wait: farm_core::LockWait::Yield,
        ..farm_core::ClusterConfig::default()
    })
    .unwrap();
    increments_lose_no_update(cluster);
}

/// Four threads on three nodes add 1 to one key 150 times each.
fn increments_lose_no_update(cluster: Cluster) {
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let table = HashTable::create(&nodes, 8).unwrap();
    cluster
        .node(0)
        .run(|txn| table.put(txn, 42, &0u64.to_le_bytes()))
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..4usize {
            let (cluster, table) = (&cluster, &table);
            scope.spawn(move || {
                let node = cluster.node(t % 3);
                for _ in 0..150 {
                    node.run(|txn| {
                        let value = table.get(txn, 42)?.expect("key 42 exists");
                        let count = u64::from_le_bytes(value.try_into().expect("8 bytes"));
                        table.put(txn, 42, &(count + 1).to_le_bytes())
                    })
                    .unwrap();
                }
            });
        }
    });
    let value = cluster
        .node(2)
        .run(|txn| table.get(txn, 42))
        .unwrap()
        .unwrap();
    assert_eq!(u64::from_le_bytes(value.try_into().unwrap()), 600);
    cluster.quiesce(Duration::from_secs(20)).unwrap();
}

/// Regression: a get racing a delete used to fail with StaleAddress (the
/// value was freed after the bucket was read); it is a conflict, retried.
/// The window between the two READs is narrow, so this test rarely hits
/// the original failure in one process (a 10 s `farm bench` TATP run did);
/// it checks that the racing paths never surface an error.
#[test]
fn gets_racing_deletes_and_inserts_are_conflicts_not_errors() {
    let value_of = |key: u64| vec![key as u8; 36 + key as usize * 4];
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let table = HashTable::create(&nodes, 2).unwrap();
    std::thread::scope(|scope| {
        for t in 0..6usize {
            let (cluster, table) = (&cluster, &table);
            scope.spawn(move || {
                let node = cluster.node(t % 3);
                let mut seed = 0x9E37_79B9u64 ^ t as u64;
                for _ in 0..3000 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = seed % 6;
                    match seed % 3 {
                        // Keys 0 and 1 inline, the others objects.
                        0 => node.run(|txn| table.put(txn, key, &value_of(key))).unwrap(),
                        1 => {
                            node.run(|txn| table.delete(txn, key)).unwrap();
                        }
                        _ => {
                            if let Some(value) = node.run(|txn| table.get(txn, key)).unwrap() {
                                assert_eq!(value, value_of(key));
                            }
                        }
                    }
                }
            });
        }
    });
}

/// The bulk path that loads inline ([`HashTable::put_many`]) ends where
/// the same puts one at a time end: small values inline and large ones as
/// objects, chains past a bucket's capacity, keys already there (object
/// values written in place or replaced), and a key given twice.
#[test]
fn put_many_agrees_with_put() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    for inline in [
        farm_core::INLINE_VALUE_BYTES_MIN,
        20,
        farm_core::INLINE_VALUE_BYTES,
    ] {
        let bulk = HashTable::create_with(&nodes, 4, inline).unwrap();
        let single = HashTable::create_with(&nodes, 4, inline).unwrap();
        let mut model = HashMap::new();
        for round in 0..3u64 {
            let mut entries: Vec<(u64, Vec<u8>)> = (round * 50..round * 50 + 120)
                .map(|key| {
                    (
                        key,
                        vec![(key + round) as u8; (key as usize * 13 + round as usize) % 100],
                    )
                })
                .collect();
            entries.insert(7, (entries[2].0, b"first of two".to_vec()));
            entries.swap(2, 7);
            for (node_id, chunk) in entries.chunks(30).enumerate() {
                let node = cluster.node(node_id % 3);
                let borrowed: Vec<(u64, &[u8])> =
                    chunk.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                node.run(|txn| bulk.put_many(txn, &borrowed)).unwrap();
                for (key, value) in chunk {
                    node.run(|txn| single.put(txn, *key, value)).unwrap();
                    model.insert(*key, value.clone());
                }
            }
        }
        for key in 0..300u64 {
            let node = cluster.node(key as usize % 3);
            let got = node.run(|txn| bulk.get(txn, key)).unwrap();
            assert_eq!(
                got,
                node.run(|txn| single.get(txn, key)).unwrap(),
                "key {key}, inline {inline}"
            );
            assert_eq!(got.as_ref(), model.get(&key), "key {key}, inline {inline}");
        }
    }
    let node = cluster.node(0);
    for inline in [
        0,
        farm_core::INLINE_VALUE_BYTES_MIN - 1,
        farm_core::INLINE_VALUE_BYTES_MAX + 1,
    ] {
        assert!(matches!(
            HashTable::create_with(&[node], 4, inline),
            Err(farm_core::Error::InvalidArgument { .. })
        ));
    }
}

/// Loads keys `0..keys` with `value_bytes`-byte values into `table` in
/// bulk from node 0, then looks each up from the node `key % 3`: the
/// object READs a lookup took on average.
fn reads_a_lookup(cluster: &Cluster, table: &HashTable, keys: u64, value_bytes: usize) -> f64 {
    let all: Vec<(u64, Vec<u8>)> = (0..keys).map(|k| (k, vec![k as u8; value_bytes])).collect();
    for chunk in all.chunks(100) {
        let entries: Vec<(u64, &[u8])> = chunk.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        cluster
            .node(0)
            .run(|txn| table.put_many(txn, &entries))
            .unwrap();
    }
    // Every commit applied and unlocked first: a read of a locked bucket
    // is retried, and retries count as READs.
    cluster.quiesce(Duration::from_secs(20)).unwrap();
    let before = farm_core::thread_reads().objects;
    for (key, value) in &all {
        let node = cluster.node(*key as usize % 3);
        assert_eq!(
            node.run(|txn| table.get(txn, *key)).unwrap().as_ref(),
            Some(value)
        );
    }
    (farm_core::thread_reads().objects - before) as f64 / keys as f64
}

/// FaRM's point (NSDI'14 §5): with small values inline in the buckets, a
/// lookup is one READ when the key is in its home bucket. At about half
/// the slots used, READs per lookup stay near 1 (the table before inline
/// values took 2); values over the inline capacity take about 2.
#[test]
fn small_values_take_one_read_a_lookup() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let keys = 3000u64;
    for (value_bytes, low, high) in [(38usize, 1.0, 1.1), (100, 2.0, 2.1)] {
        // 4 slots a bucket, 2 keys a bucket on average.
        let table = HashTable::create(&nodes, keys as usize / 2).unwrap();
        let per_lookup = reads_a_lookup(&cluster, &table, keys, value_bytes);
        println!("{value_bytes}-byte values: {per_lookup:.3} READs a lookup");
        assert!(
            (low..=high).contains(&per_lookup),
            "{value_bytes}-byte values took {per_lookup:.3} READs a lookup, not {low} to {high}"
        );
    }
}

/// `get_many` gives, key by key, what `get` gives: inline values, values
/// kept as objects of their own, absent keys, keys deep in overflow chains
/// (8 buckets for 120 keys), a key given twice, and keys this transaction
/// put or deleted before; from every node.
#[test]
fn get_many_agrees_with_get() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let table = HashTable::create(&nodes, 8).unwrap();
    let mut model = HashMap::new();
    for key in (0..120u64).filter(|key| key % 7 != 3) {
        let bytes = if key % 4 == 0 {
            farm_core::INLINE_VALUE_BYTES + 10
        } else {
            1 + key as usize % 20
        };
        let value = vec![key as u8; bytes];
        cluster
            .node(key as usize % 3)
            .run(|txn| table.put(txn, key, &value))
            .unwrap();
        model.insert(key, value);
    }
    let mut keys: Vec<u64> = (0..130).collect();
    keys.extend([5, 8, 5]);
    for node in cluster.nodes() {
        let (many, one_by_one) = node
            .run(|txn| {
                let many = table.get_many(txn, &keys)?;
                let one_by_one = keys
                    .iter()
                    .map(|key| table.get(txn, *key))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((many, one_by_one))
            })
            .unwrap();
        assert_eq!(many, one_by_one);
        for (key, value) in keys.iter().zip(&many) {
            assert_eq!(value.as_ref(), model.get(key), "key {key}");
        }
    }
    let seen = cluster
        .node(1)
        .run(|txn| {
            table.put(txn, 1, b"mine")?;
            table.delete(txn, 2)?;
            table.get_many(txn, &[1, 2, 6])
        })
        .unwrap();
    assert_eq!(
        seen,
        vec![Some(b"mine".to_vec()), None, model.get(&6).cloned()]
    );
}

/// FaRM's neighbourhoods (NSDI'14 §5): a key whose home bucket is full
/// goes to the next bucket (moving one of that bucket's own keys on if it
/// is full too), and a lookup reads both with one READ, so a crowded
/// table still answers in about one READ, where chaining alone takes two
/// for every key past its home. 3,000 keys with 38-byte values in 900
/// buckets of 4 slots (83% of the slots used): 1.047 READs a lookup; the
/// same keys in 900 buckets none of which lie next to another (every
/// other bucket of a larger table) chain instead: 1.140. (Placement is
/// deterministic: these figures do not vary run to run.)
#[test]
fn a_crowded_table_answers_in_about_one_read_a_lookup() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let (keys, buckets) = (3000u64, 900usize);
    let adjacent = HashTable::create(&nodes, buckets).unwrap();
    // Each node allocated its share one bucket after another: all but the
    // last of each share have a neighbour.
    assert_eq!(adjacent.buckets_with_neighbours(), buckets - nodes.len());
    let spread = HashTable::create(&nodes, 2 * buckets).unwrap();
    let apart =
        HashTable::from_bucket_addrs(spread.bucket_addrs().iter().step_by(2).copied().collect())
            .unwrap();
    assert_eq!(apart.buckets_with_neighbours(), 0);
    let per_lookup: Vec<f64> = [&adjacent, &apart]
        .into_iter()
        .map(|table| reads_a_lookup(&cluster, table, keys, 38))
        .collect();
    println!(
        "READs a lookup at 83% of the slots: {:.3} with neighbourhoods, {:.3} with chains alone",
        per_lookup[0], per_lookup[1]
    );
    assert!(per_lookup[0] <= 1.06, "{per_lookup:?}");
    assert!(per_lookup[1] >= per_lookup[0] + 0.05, "{per_lookup:?}");
}

/// Keys moving within their neighbourhoods under concurrent transactions
/// (a delete takes a key back into its home from the neighbour, an insert
/// into a full neighbourhood moves one on): keys come in pairs that
/// writers insert, rewrite and delete together, on a crowded table of one
/// run of neighbours (8 buckets of 3 slots for 16 pair keys and 18 others),
/// and readers, which look both up in one transaction, must see both or
/// neither, with the same version. A lookup keeps in its read set only
/// the bucket that answered; this checks that what it leaves out is not
/// needed.
#[test]
fn pairs_stay_whole_while_keys_move_between_neighbours() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    let table = HashTable::create_with(&nodes[..1], 8, farm_core::INLINE_VALUE_BYTES_MAX).unwrap();
    assert_eq!(table.buckets_with_neighbours(), 7);
    for other in 100..118u64 {
        cluster
            .node(0)
            .run(|txn| table.put(txn, other, &[1]))
            .unwrap();
    }
    let pair = |p: u64| (p, 1000 + p);
    std::thread::scope(|scope| {
        for t in 0..6usize {
            let (cluster, table) = (&cluster, &table);
            scope.spawn(move || {
                let node = cluster.node(t % 3);
                let seed = 0x5EED_0000u64 + t as u64;
                let mut state = seed;
                for round in 0..4000u64 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let (a, b) = pair(state % 8);
                    if t % 2 == 0 && !state.is_multiple_of(3) {
                        let version = (round * 8 + t as u64).to_le_bytes();
                        node.run(|txn| {
                            if state % 5 < 2 {
                                table.delete(txn, a)?;
                                table.delete(txn, b)?;
                            } else {
                                table.put(txn, a, &version)?;
                                table.put(txn, b, &version)?;
                            }
                            Ok(())
                        })
                        .unwrap();
                    } else {
                        let (x, y) = node
                            .run(|txn| Ok((table.get(txn, a)?, table.get(txn, b)?)))
                            .unwrap();
                        assert_eq!(
                            x, y,
                            "pair {a}/{b} seen half written (thread seed {seed:#x}, round {round})"
                        );
                    }
                }
            });
        }
    });
}

/// A table larger than its nodes can hold is refused by name or runs out
/// of region memory, without first listing every bucket it would have
/// (regression: `create(.., usize::MAX)` panicked with a capacity
/// overflow, and `1 << 40` buckets tried to allocate terabytes).
#[test]
fn a_table_too_large_is_an_error() {
    let cluster = cluster();
    let nodes: Vec<_> = cluster.nodes().iter().collect();
    for buckets in [usize::MAX, 1 << 40] {
        assert!(matches!(
            HashTable::create(&nodes, buckets),
            Err(farm_core::Error::InvalidArgument { .. })
        ));
    }
    // Within the limit but past the 8 MiB regions: the allocator's error.
    match HashTable::create(&nodes, 1 << 20) {
        Err(farm_core::Error::OutOfMemory { .. }) => {}
        other => panic!("2^20 buckets in 8 MiB regions: {other:?}"),
    }
}
