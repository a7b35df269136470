//! Concurrent transfers between accounts spread over every node: the total
//! never changes, in any consistent snapshot and at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use farm_core::{Addr, Cluster, Outcome, TxnError};

fn small_cluster() -> Cluster {
    farm_core::testing::cluster(4 << 20)
}

#[test]
fn single_node_read_your_writes_and_commit() {
    let cluster = small_cluster();
    let node = cluster.node(0);
    let addr = node.run(|txn| txn.alloc(&7u64.to_le_bytes())).unwrap();
    let value = node
        .run(|txn| {
            let value: u64 = txn.read_pod(addr)?;
            txn.write_pod(addr, &(value + 1))?;
            let again: u64 = txn.read_pod(addr)?;
            assert_eq!(again, value + 1, "a transaction reads its own writes");
            Ok(value + 1)
        })
        .unwrap();
    assert_eq!(value, 8);
    // Another node reads it with a one-sided READ.
    let seen: u64 = cluster.node(2).run(|txn| txn.read_pod(addr)).unwrap();
    assert_eq!(seen, 8);
}

#[test]
fn transfers_conserve_the_total() {
    const ACCOUNTS: usize = 12;
    const START: u64 = 1000;
    let cluster = Arc::new(small_cluster());
    // Accounts on every node's regions.
    let accounts: Vec<Addr> = (0..ACCOUNTS)
        .map(|i| {
            cluster
                .node(i % 3)
                .run(|txn| txn.alloc(&START.to_le_bytes()))
                .unwrap()
        })
        .collect();
    let accounts = Arc::new(accounts);
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let aborted = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4usize {
        let (cluster, accounts, committed, aborted) = (
            cluster.clone(),
            accounts.clone(),
            committed.clone(),
            aborted.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let node = cluster.node(t % 3);
            let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ t as u64;
            for _ in 0..400 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let from = accounts[(seed % ACCOUNTS as u64) as usize];
                let to = accounts[((seed >> 16) % ACCOUNTS as u64) as usize];
                if from == to {
                    continue;
                }
                let amount = (seed >> 32) % 50;
                let (outcome, _) = node
                    .try_once(|txn| {
                        let a: u64 = txn.read_pod(from)?;
                        let b: u64 = txn.read_pod(to)?;
                        let amount = amount.min(a);
                        txn.write_pod(from, &(a - amount))?;
                        txn.write_pod(to, &(b + amount))?;
                        Ok(())
                    })
                    .unwrap();
                match outcome {
                    Outcome::Committed => committed.fetch_add(1, Ordering::Relaxed),
                    Outcome::Aborted(_) => aborted.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // A reader checks consistent snapshots while transfers run.
    let reader = {
        let (cluster, accounts, stop) = (cluster.clone(), accounts.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut snapshots = 0;
            while !stop.load(Ordering::Relaxed) {
                let result = cluster.node(1).try_once(|txn| {
                    let mut total = 0u64;
                    for account in accounts.iter() {
                        total += txn.read_pod::<u64>(*account)?;
                    }
                    Ok::<u64, TxnError>(total)
                });
                if let Ok((Outcome::Committed, Some(total))) = result {
                    assert_eq!(
                        total,
                        START * ACCOUNTS as u64,
                        "a committed snapshot saw money appear or vanish"
                    );
                    snapshots += 1;
                }
            }
            snapshots
        })
    };
    for thread in threads {
        thread.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let snapshots = reader.join().unwrap();
    let total: u64 = cluster
        .node(0)
        .run(|txn| {
            let mut total = 0;
            for account in accounts.iter() {
                total += txn.read_pod::<u64>(*account)?;
            }
            Ok(total)
        })
        .unwrap();
    assert_eq!(total, START * ACCOUNTS as u64);
    let committed = committed.load(Ordering::Relaxed);
    eprintln!(
        "committed {committed}, aborted {}, consistent snapshots {snapshots}",
        aborted.load(Ordering::Relaxed)
    );
    assert!(committed > 100, "transfers made progress");
    cluster.quiesce(Duration::from_secs(20)).unwrap();
}
