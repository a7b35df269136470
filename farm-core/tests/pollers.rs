//! `Node::poller`: while application threads say they poll, the server
//! threads stop sleeping on the doorbell. Records must still be processed
//! when those threads do not poll at all (the server's naps), and commits
//! stay correct while a thread polls a node's rings alongside its server.

use std::time::{Duration, Instant};

use farm_core::Cluster;

fn cluster() -> Cluster {
    farm_core::testing::cluster(2 << 20)
}

#[test]
fn registered_pollers_that_never_poll_only_slow_commits_down() {
    let cluster = cluster();
    let addrs: Vec<_> = (0..3)
        .map(|n| {
            cluster
                .node(n)
                .run(|txn| txn.alloc(&0u64.to_le_bytes()))
                .unwrap()
        })
        .collect();
    // Every node has a poller that never polls.
    let guards: Vec<_> = cluster.nodes().iter().map(|n| n.poller()).collect();
    let started = Instant::now();
    for round in 0..50u64 {
        for &addr in &addrs {
            cluster
                .node(round as usize % 3)
                .run(|txn| {
                    let value: u64 = txn.read_pod(addr)?;
                    txn.write_pod(addr, &(value + 1))
                })
                .unwrap();
        }
    }
    eprintln!("150 commits with idle pollers: {:?}", started.elapsed());
    drop(guards);
    for &addr in &addrs {
        let value: u64 = cluster.node(0).run(|txn| txn.read_pod(addr)).unwrap();
        assert_eq!(value, 50);
    }
    cluster.quiesce(Duration::from_secs(10)).unwrap();
}

#[test]
fn commits_stay_correct_while_a_thread_polls() {
    let cluster = cluster();
    let addr = cluster
        .node(1)
        .run(|txn| txn.alloc(&0u64.to_le_bytes()))
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Node 1's thread polls in a loop; node 0's thread commits writes
        // to node 1's object, whose LOCKs node 1 must process.
        let stop = &stop;
        let node1 = cluster.node(1);
        scope.spawn(move || {
            let _poller = node1.poller();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                node1.poll();
                std::hint::spin_loop();
            }
        });
        for _ in 0..200 {
            cluster
                .node(0)
                .run(|txn| {
                    let value: u64 = txn.read_pod(addr)?;
                    txn.write_pod(addr, &(value + 1))
                })
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let value: u64 = cluster.node(2).run(|txn| txn.read_pod(addr)).unwrap();
    assert_eq!(value, 200);
}
