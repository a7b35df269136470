//! The identifier of a transaction: which node coordinates it, which of
//! that node's contexts runs it, and the context's sequence number.
//!
//! ```text
//!   63..48        47..32          31..0
//! +-----------+--------------+------------+
//! | node (16) | context (16) |  sequence  |
//! +-----------+--------------+------------+
//! ```
//!
//! A context runs one transaction at a time and numbers them, so the word
//! is unique across the cluster for 2^32 transactions per context; the LOCK
//! answer of a primary carries the sequence (see
//! [`crate::codec::inbox::LockReply`]) so that a late answer to an earlier
//! transaction is never taken for the current one's.

use std::fmt;

use crate::limits::{CONTEXTS_MAX, NODES_MAX};

/// A transaction's identifier, as records carry it.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TxnId(u64);

impl TxnId {
    const CONTEXT_SHIFT: u32 = 32;
    const NODE_SHIFT: u32 = 48;

    /// # Panics
    /// If `node` or `context` is beyond the engine's limits
    /// ([`NODES_MAX`], [`CONTEXTS_MAX`]): callers take both from the
    /// node's own state, never from input.
    pub fn new(node: usize, context: usize, sequence: u32) -> TxnId {
        assert!(node < NODES_MAX, "node {node} overflows a transaction id");
        assert!(
            context < CONTEXTS_MAX,
            "context {context} overflows a transaction id"
        );
        TxnId(
            ((node as u64) << Self::NODE_SHIFT)
                | ((context as u64) << Self::CONTEXT_SHIFT)
                | u64::from(sequence),
        )
    }

    /// The word a record carries.
    pub fn encode(self) -> u64 {
        self.0
    }

    /// Any word is a transaction id; whether its node and context exist is
    /// for the receiver to check ([`TxnId::is_valid`]).
    pub fn decode(word: u64) -> TxnId {
        TxnId(word)
    }

    /// True when node and context are within the engine's limits.
    pub fn is_valid(self) -> bool {
        self.node() < NODES_MAX && self.context() < CONTEXTS_MAX
    }

    pub fn node(self) -> usize {
        (self.0 >> Self::NODE_SHIFT) as usize
    }

    pub fn context(self) -> usize {
        ((self.0 >> Self::CONTEXT_SHIFT) & 0xffff) as usize
    }

    pub fn sequence(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}.{}.{}", self.node(), self.context(), self.sequence())
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn txn_id_round_trips(node in 0..NODES_MAX, context in 0..CONTEXTS_MAX, sequence: u32) {
            let id = TxnId::new(node, context, sequence);
            prop_assert_eq!((id.node(), id.context(), id.sequence()), (node, context, sequence));
            prop_assert_eq!(TxnId::decode(id.encode()), id);
            prop_assert!(id.is_valid());
        }
    }

    #[test]
    #[should_panic(expected = "context")]
    fn new_refuses_a_context_beyond_the_limit() {
        let _ = TxnId::new(0, CONTEXTS_MAX, 1);
    }
}
