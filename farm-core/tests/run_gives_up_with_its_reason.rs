//! `Node::run` does not retry for ever: a transaction that keeps aborting
//! ends, after the node's retry budget, with an error that says how many
//! attempts and the last abort reason. (Regression: a lock left behind
//! made every read of an object abort, and `Node::run` retried for ever,
//! silently.)

use std::time::{Duration, Instant};

use farm_core::{AbortReason, Cluster, ClusterConfig, Error, RetryBudget, TxnError};

#[test]
fn a_transaction_that_always_aborts_ends_with_attempts_and_reason() {
    let cluster = Cluster::start(ClusterConfig {
        region_bytes: 2 << 20,
        retry: RetryBudget {
            attempts_max: u64::MAX,
            time_max: Duration::from_millis(300),
        },
        ..ClusterConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let result: Result<(), Error> = cluster
        .node(0)
        .run(|_| Err(TxnError::Conflict(AbortReason::ReadConflict)));
    match result {
        Err(Error::RetriesExhausted {
            attempts,
            waited,
            last: AbortReason::ReadConflict,
        }) => {
            assert!(attempts > 1 && waited >= Duration::from_millis(300));
            let text = result.unwrap_err().to_string();
            assert!(
                text.contains(&attempts.to_string()) && text.contains("read"),
                "{text}"
            );
        }
        other => panic!("expected the budget to end it: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A budget of attempts ends it too.
    let result = cluster.node(1).run_with(
        RetryBudget {
            attempts_max: 3,
            time_max: Duration::from_secs(60),
        },
        |_| Err::<(), _>(TxnError::Conflict(AbortReason::LockConflict)),
    );
    assert!(matches!(
        result,
        Err(Error::RetriesExhausted {
            attempts: 3,
            last: AbortReason::LockConflict,
            ..
        })
    ));
}
