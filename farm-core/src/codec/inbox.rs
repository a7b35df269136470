//! A node's inbox: the registration peers write into, persistent like its
//! regions (a file mapping). For a cluster of N nodes:
//!
//! ```text
//!  0                 4096                 8192                 RINGS_OFFSET
//!  | heads[r]         | retired[s]         | replies[c][p]       | ring from node 0 | ring from 1 | ...
//!  | one 64-byte slot | one 64-byte slot   | one word per        | RING_BYTES each, N rings
//!  | per receiver r:  | per sender s: how  | (context c,         |
//!  | how far r has    | far I retired the  | primary p): p's     |
//!  | retired the ring | ring s → me (kept  | answer to the LOCK  |
//!  | me → r (r WRITEs | for a restart)     | of c's transaction  |
//!  | it)              |                    | ([`LockReply`])     |
//! ```
//!
//! Ring positions are absolute byte counts that never wrap; `position %
//! RING_BYTES` is the place in a ring (see [`crate::ring`]).

use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use crate::limits::{CONTEXTS_MAX, NODES_MAX, RING_BYTES};
use crate::txn_id::TxnId;

/// A word alone in its cache line, so that writers of neighbouring words
/// do not share a line.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct PaddedWord {
    pub word: u64,
    pub padding: [u64; 7],
}

/// Everything before the rings.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct InboxPrefix {
    pub heads: [PaddedWord; NODES_MAX],
    pub retired: [PaddedWord; NODES_MAX],
    pub replies: [[u64; NODES_MAX]; CONTEXTS_MAX],
}

const _: () = assert!(size_of::<PaddedWord>() == 64);
const _: () = assert!(offset_of!(InboxPrefix, retired) == 4096);
const _: () = assert!(offset_of!(InboxPrefix, replies) == 8192);
const _: () = assert!(RINGS_OFFSET.is_multiple_of(4096));

/// Where the rings start.
pub const RINGS_OFFSET: u64 = size_of::<InboxPrefix>() as u64;

/// Bytes of the inbox of a node in a cluster of `nodes` nodes.
pub fn inbox_bytes(nodes: usize) -> u64 {
    RINGS_OFFSET + nodes as u64 * RING_BYTES
}

/// Where `receiver` publishes how far it retired the ring this node sends
/// it.
pub fn head_offset(receiver: usize) -> u64 {
    assert!(receiver < NODES_MAX);
    (offset_of!(InboxPrefix, heads) + receiver * size_of::<PaddedWord>()) as u64
}

/// Where this node persists how far it retired the ring from `sender`.
pub fn retired_offset(sender: usize) -> u64 {
    assert!(sender < NODES_MAX);
    (offset_of!(InboxPrefix, retired) + sender * size_of::<PaddedWord>()) as u64
}

/// Where `primary` answers the LOCK of `context`'s transaction.
pub fn reply_offset(context: usize, primary: usize) -> u64 {
    assert!(context < CONTEXTS_MAX && primary < NODES_MAX);
    (offset_of!(InboxPrefix, replies) + (context * NODES_MAX + primary) * size_of::<u64>()) as u64
}

/// Where the ring from `sender` starts.
pub fn ring_offset(sender: usize) -> u64 {
    assert!(sender < NODES_MAX);
    RINGS_OFFSET + sender as u64 * RING_BYTES
}

/// A primary's answer to a LOCK, WRITTEN into the coordinator's reply
/// word: the transaction's sequence and yes or no, so that a late answer
/// to an earlier transaction of the same context is never taken for this
/// one's.
///
/// ```text
///   63..40    39..8       7..0
/// | unused | sequence | 1 = granted, 2 = refused |
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockReply {
    pub sequence: u32,
    pub granted: bool,
}

impl LockReply {
    const GRANTED: u64 = 1;
    const REFUSED: u64 = 2;
    const SEQUENCE_SHIFT: u32 = 8;

    pub fn for_txn(txid: TxnId, granted: bool) -> LockReply {
        LockReply {
            sequence: txid.sequence(),
            granted,
        }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.sequence) << Self::SEQUENCE_SHIFT)
            | if self.granted {
                Self::GRANTED
            } else {
                Self::REFUSED
            }
    }

    /// `None` for a word that is no answer (zero, or garbage).
    pub fn decode(word: u64) -> Option<LockReply> {
        let granted = match word & 0xff {
            Self::GRANTED => true,
            Self::REFUSED => false,
            _ => return None,
        };
        if word >> (Self::SEQUENCE_SHIFT + 32) != 0 {
            return None;
        }
        Some(LockReply {
            sequence: (word >> Self::SEQUENCE_SHIFT) as u32,
            granted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lock_replies_round_trip(sequence: u32, granted: bool) {
            let reply = LockReply { sequence, granted };
            prop_assert_eq!(LockReply::decode(reply.encode()), Some(reply));
        }

        #[test]
        fn any_word_decodes_without_panic(word: u64) {
            if let Some(reply) = LockReply::decode(word) {
                prop_assert_eq!(reply.encode(), word);
            }
        }
    }

    #[test]
    fn layout_matches_the_diagram() {
        assert_eq!(head_offset(1), 64);
        assert_eq!(retired_offset(0), 4096);
        assert_eq!(reply_offset(0, 0), 8192);
        assert_eq!(reply_offset(1, 0), 8192 + NODES_MAX as u64 * 8);
        assert_eq!(ring_offset(0), RINGS_OFFSET);
        assert_eq!(inbox_bytes(3), RINGS_OFFSET + 3 * RING_BYTES);
    }
}
