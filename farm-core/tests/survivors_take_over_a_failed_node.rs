//! A node fails in the middle of a workload of an in-process cluster; the
//! survivors reconfigure around it ([`Cluster::remove_nodes`]: FaRM
//! SOSP'15 §5.2–5.3, with every step in this process) and go on.
//!
//! Client threads on every node, the failed one included, add 1 to two
//! random counters per transaction (so commits span regions, and the
//! failed node coordinates some and is primary or backup of others). The
//! failure cuts every link of the node (a seeded [`FaultPlan`]) while its
//! commits are in flight. Afterwards each counter must hold at least the
//! increments acknowledged to any client (nothing acknowledged is lost,
//! the failed node's acknowledgements included) and at most those plus
//! the ones whose outcome was unknown (nothing aborted became visible),
//! and the survivors must have committed in the new configuration. A
//! failure prints the seed; `FARM_SEED=<seed>` replays its workload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use farm_core::{Addr, Cluster, ClusterConfig, Error, Outcome};
use rdma_transport::faulty::FaultPlan;

const COUNTERS_PER_NODE: usize = 6;
const THREADS_PER_NODE: usize = 2;

fn seed() -> u64 {
    std::env::var("FARM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// xorshift64*: the workload's choices, reproducible from the seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// What the clients saw, per counter.
struct Tally {
    acked: Vec<AtomicU64>,
    unknown: Vec<AtomicU64>,
    committed_after_change: AtomicU64,
}

fn run(failed: usize, seed: u64) {
    let plan = FaultPlan::new(seed);
    let mut cluster = Cluster::start(ClusterConfig {
        nodes: 3,
        copies: 2,
        region_bytes: 4 << 20,
        fault_plan: Some(plan),
        ..ClusterConfig::default()
    })
    .unwrap();
    cluster.set_managed(true);
    let before = cluster.node(0).placement();
    let mut counters: Vec<Addr> = Vec::new();
    for node in cluster.nodes() {
        for _ in 0..COUNTERS_PER_NODE {
            counters.push(node.run(|txn| txn.alloc(&0u64.to_le_bytes())).unwrap());
        }
    }
    let counters = Arc::new(counters);
    let tally = Arc::new(Tally {
        acked: (0..counters.len()).map(|_| AtomicU64::new(0)).collect(),
        unknown: (0..counters.len()).map(|_| AtomicU64::new(0)).collect(),
        committed_after_change: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let changed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for node in cluster.nodes() {
        for thread in 0..THREADS_PER_NODE {
            let (node, counters, tally) = (node.clone(), counters.clone(), tally.clone());
            let (stop, changed) = (stop.clone(), changed.clone());
            let mut state = seed ^ ((node.id() * THREADS_PER_NODE + thread) as u64 + 1);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = (next(&mut state) % counters.len() as u64) as usize;
                    let b = (a + 1 + (next(&mut state) % (counters.len() as u64 - 1)) as usize)
                        % counters.len();
                    let after = changed.load(Ordering::Acquire);
                    let result = node.try_once(|txn| {
                        for &c in &[a, b] {
                            let value: u64 = txn.read_pod(counters[c])?;
                            txn.write_pod(counters[c], &(value + 1))?;
                        }
                        Ok(())
                    });
                    match result {
                        Ok((Outcome::Committed, _)) => {
                            for c in [a, b] {
                                tally.acked[c].fetch_add(1, Ordering::Relaxed);
                            }
                            if after {
                                tally.committed_after_change.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok((Outcome::Aborted(_), _)) => {}
                        // The failed node: nothing more to do.
                        Err(Error::ShutDown(_) | Error::Unavailable { .. }) => break,
                        // May have committed: the counters may show it.
                        Err(_) => {
                            for c in [a, b] {
                                tally.unknown[c].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }));
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    cluster.fail_node(failed);
    let after = cluster.remove_nodes(&[failed]).unwrap();
    changed.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }

    assert_eq!(after.id, before.id + 1, "seed {seed}");
    assert!(!after.is_member(failed), "seed {seed}");
    for region in 0..after.regions() as u16 {
        let primary = after.primary(region);
        assert_ne!(primary, failed, "seed {seed}: region {region}");
        if before.primary(region) == failed {
            // The first surviving backup took over.
            assert_eq!(
                Some(primary),
                before.backups(region).find(|&n| n != failed),
                "seed {seed}: region {region}"
            );
        }
    }
    let survivor = cluster.node((failed + 1) % 3);
    assert_eq!(survivor.placement().id, after.id);
    assert!(
        tally.committed_after_change.load(Ordering::Relaxed) > 0,
        "seed {seed}: nothing committed in the new configuration"
    );
    for (c, &addr) in counters.iter().enumerate() {
        let value: u64 = survivor.run(|txn| txn.read_pod(addr)).unwrap();
        let acked = tally.acked[c].load(Ordering::Relaxed);
        let unknown = tally.unknown[c].load(Ordering::Relaxed);
        assert!(
            acked <= value && value <= acked + unknown,
            "seed {seed}: counter {c} (region {}) holds {value}, acknowledged {acked}, unknown {unknown}",
            addr.region()
        );
    }
    cluster.quiesce(Duration::from_secs(10)).unwrap();
}

#[test]
fn survivors_take_over_the_regions_of_a_failed_node() {
    let seed = seed();
    eprintln!("seed {seed} (FARM_SEED={seed} replays it)");
    run(1, seed);
}

#[test]
fn survivors_take_over_when_the_configuration_manager_fails() {
    let seed = seed();
    eprintln!("seed {seed} (FARM_SEED={seed} replays it)");
    // The last node is the configuration manager of configuration 1.
    run(2, seed);
}
