//! Worker event loops and the async form (issue 11, item 1): many
//! transactions in flight on one thread, with the same guarantees as one.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use farm_core::{Addr, Cluster, Worker};

const ACCOUNTS: usize = 12;
const START: u64 = 1000;

fn cluster_with_accounts() -> (Cluster, Vec<Addr>) {
    let cluster = farm_core::testing::cluster(4 << 20);
    let accounts = (0..ACCOUNTS)
        .map(|i| {
            cluster
                .node(i % 3)
                .run(|txn| txn.alloc(&START.to_le_bytes()))
                .unwrap()
        })
        .collect();
    (cluster, accounts)
}

/// A xorshift step: the transfers' choices.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn total(node: &farm_core::Node, accounts: &[Addr]) -> u64 {
    node.run(|txn| {
        let mut sum = 0u64;
        for &account in accounts {
            sum += txn.read_pod::<u64>(account)?;
        }
        Ok(sum)
    })
    .unwrap()
}

#[test]
fn a_worker_keeps_many_transactions_in_flight_and_conserves_the_total() {
    let (cluster, accounts) = cluster_with_accounts();
    let accounts = &accounts;
    const IN_FLIGHT: usize = 8;
    std::thread::scope(|scope| {
        for n in 0..3 {
            let node = cluster.node(n);
            scope.spawn(move || {
                let running = Cell::new(0usize);
                let most = Cell::new(0usize);
                let worker = Worker::new(node, IN_FLIGHT);
                let audits = worker
                    .run(|task| {
                        let seed0 = 0x9E37_79B9_7F4A_7C15u64 ^ ((n * 100 + task) as u64 + 1);
                        let mut seed = seed0;
                        let mut audits = 0;
                        for round in 0..120 {
                            let r = next(&mut seed);
                            let from = accounts[(r % ACCOUNTS as u64) as usize];
                            let to = accounts[((r >> 16) % ACCOUNTS as u64) as usize];
                            running.set(running.get() + 1);
                            most.set(most.get().max(running.get()));
                            if round % 10 == 0 {
                                // A read-only snapshot of every account,
                                // between other tasks' transfers.
                                let sum = total(node, accounts);
                                assert_eq!(
                                    sum,
                                    START * ACCOUNTS as u64,
                                    "a snapshot saw another total (seed {seed0:#x})"
                                );
                                audits += 1;
                            } else if from != to {
                                node.run(|txn| {
                                    let a: u64 = txn.read_pod(from)?;
                                    let b: u64 = txn.read_pod(to)?;
                                    let amount = ((r >> 32) % 50).min(a);
                                    txn.write_pod(from, &(a - amount))?;
                                    txn.write_pod(to, &(b + amount))
                                })
                                .unwrap_or_else(|e| {
                                    panic!("transfer failed: {e} (seed {seed0:#x})")
                                });
                            }
                            running.set(running.get() - 1);
                        }
                        audits
                    })
                    .unwrap();
                assert_eq!(audits, vec![12; IN_FLIGHT], "every task ran to its end");
                assert!(
                    most.get() > 1,
                    "node {n}'s worker never had two transactions in flight"
                );
            });
        }
    });
    assert_eq!(total(cluster.node(1), accounts), START * ACCOUNTS as u64);
}

#[test]
fn async_transactions_interleave_on_one_thread() {
    let (cluster, accounts) = cluster_with_accounts();
    const FUTURES: usize = 24;
    // A minimal local executor: poll every future in turn until all are
    // ready (each wakes itself when it pauses).
    let mut futures: Vec<Option<Pin<Box<farm_core::RunAsync<u64>>>>> = (0..FUTURES)
        .map(|i| {
            let from = accounts[i % ACCOUNTS];
            let to = accounts[(i * 5 + 1) % ACCOUNTS];
            let node = cluster.node(i % 3);
            Some(Box::pin(node.run_async(move |txn| {
                let a: u64 = txn.read_pod(from)?;
                if from == to {
                    return Ok(a);
                }
                let b: u64 = txn.read_pod(to)?;
                let amount = (i as u64 % 7).min(a);
                txn.write_pod(from, &(a - amount))?;
                txn.write_pod(to, &(b + amount))?;
                Ok(amount)
            })))
        })
        .collect();
    let mut context = Context::from_waker(Waker::noop());
    let mut pending = 0usize;
    let mut done = 0usize;
    let mut rounds = 0usize;
    while done < FUTURES {
        rounds += 1;
        assert!(rounds < 10_000_000, "the futures never finished");
        for slot in &mut futures {
            let Some(future) = slot else { continue };
            match future.as_mut().poll(&mut context) {
                Poll::Ready(result) => {
                    result.expect("an async transfer failed");
                    *slot = None;
                    done += 1;
                }
                Poll::Pending => pending += 1,
            }
        }
    }
    assert!(
        pending > 0,
        "no transaction ever waited: the async form was never exercised"
    );
    assert_eq!(total(cluster.node(2), &accounts), START * ACCOUNTS as u64);
}
