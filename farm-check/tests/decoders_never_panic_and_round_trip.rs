//! Fuzz targets for the checker's decoders of bytes from elsewhere: the
//! `check` request a driver sends node processes and the histories node
//! processes send back. Arbitrary input must never panic; an impossible
//! history is an error (`History::try_new`), not a panic; an encoding of
//! arbitrary values decodes to them again.
//!
//! Inputs come from proptest (256 cases per target in the suite; a longer
//! run is `PROPTEST_CASES=1000000 cargo test --release -p farm-check
//! --test decoders_never_panic_and_round_trip`, see the README).

use farm_check::history::{ClientId, MicroOp, Outcome, Txn};
use farm_check::service::{CheckOutput, CheckRequest};
use farm_check::History;
use proptest::collection::vec;
use proptest::prelude::*;

fn micro_op() -> impl Strategy<Value = MicroOp> {
    prop_oneof![
        (any::<u64>(), any::<Option<u64>>())
            .prop_map(|(key, value)| MicroOp::ReadRegister { key, value }),
        (any::<u64>(), any::<u64>()).prop_map(|(key, value)| MicroOp::WriteRegister { key, value }),
        (any::<u64>(), any::<u64>()).prop_map(|(key, element)| MicroOp::Append { key, element }),
        (any::<u64>(), vec(any::<u64>(), 0..5))
            .prop_map(|(key, elements)| MicroOp::ReadList { key, elements }),
    ]
}

fn txn() -> impl Strategy<Value = Txn> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        vec(micro_op(), 0..4),
        0u8..3,
    )
        .prop_map(|(client, invoke_ns, complete_ns, ops, outcome)| Txn {
            client: ClientId(client),
            invoke_ns,
            complete_ns,
            ops,
            outcome: [Outcome::Committed, Outcome::Aborted, Outcome::Unknown][usize::from(outcome)],
        })
}

proptest! {
    #[test]
    fn check_messages_of_arbitrary_text_never_panic(text in ".{0,300}") {
        if let Ok(request) = serde_json::from_str::<CheckRequest>(&text) {
            let _ = request.check();
        }
        if let Ok(output) = serde_json::from_str::<CheckOutput>(&text) {
            let _ = History::try_new(output.txns);
        }
    }

    /// Histories from node processes with any times: an impossible one is
    /// an error, and the history decodes to what was sent.
    #[test]
    fn histories_round_trip_and_impossible_ones_are_errors(txns in vec(txn(), 0..20)) {
        let output = CheckOutput { txns: txns.clone(), aborted: Default::default(), final_read: None };
        let text = serde_json::to_string(&output).unwrap();
        let again: CheckOutput = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&again.txns, &txns);
        let impossible = txns.iter().any(|t| t.invoke_ns > t.complete_ns);
        prop_assert_eq!(History::try_new(again.txns).is_err(), impossible);
    }
}
