//! `Node::set_max_in_flight`: a node never runs more transactions at once
//! than its bound; a `begin` beyond it waits for one to end (commit, abort
//! or drop), on plain threads and in a worker's tasks; writes made under
//! the bound all land; lifting the bound lets waiting and new
//! transactions in.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use farm_core::Outcome;

#[test]
fn a_begin_beyond_the_bound_waits_for_a_transaction_to_end() {
    let cluster = farm_core::testing::cluster(16 << 20);
    let node = cluster.node(0);
    node.set_max_in_flight(NonZeroUsize::new(1));
    let first = node.begin().unwrap();
    let (began, waiting) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let txn = cluster.node(0).begin().unwrap();
            began.send(()).unwrap();
            drop(txn);
        });
        // The second begin waits while the first transaction is open.
        assert!(
            waiting.recv_timeout(Duration::from_millis(300)).is_err(),
            "a second transaction began beyond a bound of one"
        );
        assert_eq!(first.commit().unwrap(), Outcome::Committed);
        waiting
            .recv_timeout(Duration::from_secs(5))
            .expect("the second transaction began once the first committed");
    });
    // Other nodes are not bounded by node 0's bound.
    let held = node.begin().unwrap();
    let other = cluster.node(1).begin().unwrap();
    drop(other);
    drop(held);
    // Lifting the bound: two at once on node 0 again.
    node.set_max_in_flight(None);
    let a = node.begin().unwrap();
    let b = node.begin().unwrap();
    drop((a, b));
}

#[test]
fn bounded_threads_and_tasks_never_exceed_the_bound_and_lose_no_write() {
    const BOUND: usize = 2;
    const THREADS: usize = 4;
    const TASKS: usize = 3;
    const EACH: usize = 40;
    let cluster = farm_core::testing::cluster(16 << 20);
    let counters = farm_core::testing::objects(&cluster, 1, 1);
    let counter = counters[0];
    cluster
        .node(0)
        .run(|txn| txn.write(counter, &0u64.to_le_bytes()))
        .unwrap();
    let node = cluster.node(0);
    node.set_max_in_flight(NonZeroUsize::new(BOUND));
    let running = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    // One increment of the shared counter, retried until it commits,
    // counting the transactions open at once on node 0.
    let increment = || loop {
        let mut txn = node.begin().unwrap();
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        let value = match txn.read(counter) {
            Ok(bytes) => u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            // Locked by another increment's commit: drop it and retry.
            Err(farm_core::TxnError::Conflict(_)) => {
                running.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            Err(error) => panic!("read failed: {error:?}"),
        };
        // Let the thread's other tasks (or other threads) try to begin.
        farm_core::task::sleep(Duration::from_micros(200));
        txn.write(counter, &(value + 1).to_le_bytes()).unwrap();
        running.fetch_sub(1, Ordering::SeqCst);
        if txn.commit().unwrap() == Outcome::Committed {
            return;
        }
    };
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let increment = &increment;
            scope.spawn(move || {
                if thread % 2 == 0 {
                    for _ in 0..EACH * TASKS {
                        increment();
                    }
                } else {
                    let done = farm_core::Worker::new(node, TASKS)
                        .run(|_| {
                            for _ in 0..EACH {
                                increment();
                            }
                        })
                        .unwrap();
                    assert_eq!(done.len(), TASKS);
                }
            });
        }
    });
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= BOUND,
        "{most} transactions open at once under a bound of {BOUND}"
    );
    let total = cluster
        .node(2)
        .run(|txn| {
            Ok(u64::from_le_bytes(
                txn.read(counter)?[..8].try_into().unwrap(),
            ))
        })
        .unwrap();
    assert_eq!(total as usize, THREADS * TASKS * EACH);
}
