//! An object's slot in a region (`CLASS_BYTES[class]` bytes):
//!
//! ```text
//!  0        8        12            16                                  C-8      C
//!  | header | size   | incarnation | payload (size bytes, then zeros)  | footer |
//!  | u64    | u32    | u32         |                                   | u64    |
//! ```
//!
//! The header is an [`crate::Header`] word (lock, allocated, version); the
//! footer repeats the version; the incarnation counts the slot's frees
//! (see [`crate::Addr`]). Size and incarnation are one word, written with
//! one store. **Torn-read detection**: a
//! READ is atomic only per 8-byte word, so a reader may see parts of two
//! versions. Every writer of a slot writes the footer (the new version)
//! first, then size and payload, then the header, each in increasing
//! address order; a reader copies the slot in increasing address order (one
//! READ). The copy is consistent iff the header is unlocked and the footer
//! equals the header's version: if any payload word came from a newer
//! write, the footer (read after it, written before it) shows the newer
//! version. This is a seqlock folded into one READ; FaRM instead puts a
//! version in every cache line and relies on cache-line-atomic DMA, which
//! the shm fabric (deliberately) does not give.

use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use crate::header::Header;
use crate::limits::{CLASS_BYTES, OBJECT_OVERHEAD_BYTES};

/// The words before an object's payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SlotPrefix {
    pub header: u64,
    pub size: u32,
    pub incarnation: u32,
}

const _: () = assert!(size_of::<SlotPrefix>() == 16);
const _: () = assert!(offset_of!(SlotPrefix, header) == 0);
const _: () = assert!(offset_of!(SlotPrefix, size) == 8);
const _: () = assert!(offset_of!(SlotPrefix, incarnation) == 12);
const _: () = assert!(size_of::<SlotPrefix>() + FOOTER_BYTES == OBJECT_OVERHEAD_BYTES as usize);
const _: () = assert!(CLASS_BYTES[0] as usize >= OBJECT_OVERHEAD_BYTES as usize + 8);

/// Offset of the header word in a slot.
pub const HEADER_OFFSET: u64 = offset_of!(SlotPrefix, header) as u64;
/// Offset of the word that holds size and incarnation.
pub const SIZE_OFFSET: u64 = offset_of!(SlotPrefix, size) as u64;

/// The word at [`SIZE_OFFSET`]: size and incarnation, as one store writes
/// them.
pub fn size_word(size: usize, incarnation: u32) -> u64 {
    let size = u32::try_from(size).expect("a payload fits its slot");
    u64::from_le_bytes(bytemuck::cast([
        size.to_le_bytes(),
        incarnation.to_le_bytes(),
    ]))
}

/// The incarnation in a word read at [`SIZE_OFFSET`].
pub fn incarnation_of(size_word: u64) -> u32 {
    let [_, incarnation]: [[u8; 4]; 2] = bytemuck::cast(size_word.to_le_bytes());
    u32::from_le_bytes(incarnation)
}
/// Offset of the payload in a slot.
pub const PAYLOAD_OFFSET: u64 = size_of::<SlotPrefix>() as u64;
/// Bytes of the footer word.
pub const FOOTER_BYTES: usize = size_of::<u64>();

/// Offset of the footer word in a slot of `slot_bytes` bytes.
pub fn footer_offset(slot_bytes: u32) -> u64 {
    u64::from(slot_bytes) - FOOTER_BYTES as u64
}

/// The payload capacity of a slot of `slot_bytes` bytes.
pub fn capacity(slot_bytes: u32) -> usize {
    slot_bytes as usize - OBJECT_OVERHEAD_BYTES as usize
}

/// Why a slot copy cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// The header's lock bit is set: a commit is installing it.
    Locked,
    /// The footer disagrees with the header, or the size is impossible: the
    /// copy mixes two versions.
    Torn,
}

/// A consistent copy of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot<'a> {
    pub header: Header,
    pub incarnation: u32,
    pub payload: &'a [u8],
}

/// Checks a copy of a whole slot (one of the [`CLASS_BYTES`] sizes).
pub fn decode(bytes: &[u8]) -> Result<Slot<'_>, SlotState> {
    if bytes.len() < OBJECT_OVERHEAD_BYTES as usize || !bytes.len().is_multiple_of(8) {
        return Err(SlotState::Torn);
    }
    let prefix: SlotPrefix = bytemuck::pod_read_unaligned(&bytes[..size_of::<SlotPrefix>()]);
    let header = Header::decode(prefix.header);
    if header.locked {
        return Err(SlotState::Locked);
    }
    let footer_at = bytes.len() - FOOTER_BYTES;
    let footer = u64::from_le_bytes(bytes[footer_at..].try_into().expect("8 bytes"));
    if footer != header.version {
        return Err(SlotState::Torn);
    }
    let body = &bytes[PAYLOAD_OFFSET as usize..footer_at];
    let size = prefix.size as usize;
    // A consistent copy never has a larger size; a never-written slot has 0.
    if size > body.len() {
        return Err(SlotState::Torn);
    }
    Ok(Slot {
        header,
        incarnation: prefix.incarnation,
        payload: &body[..size],
    })
}

/// Encodes a whole slot of `slot_bytes` bytes holding `payload` (what a
/// writer's stores produce, for tests and the fuzzers' reference).
pub fn encode(slot_bytes: u32, slot: &Slot) -> Vec<u8> {
    let Slot {
        header,
        incarnation,
        payload,
    } = *slot;
    assert!(payload.len() <= capacity(slot_bytes));
    let mut bytes = vec![0u8; slot_bytes as usize];
    let prefix = SlotPrefix {
        header: header.encode(),
        size: payload.len() as u32,
        incarnation,
    };
    bytes[..size_of::<SlotPrefix>()].copy_from_slice(bytemuck::bytes_of(&prefix));
    let payload_at = PAYLOAD_OFFSET as usize;
    bytes[payload_at..payload_at + payload.len()].copy_from_slice(payload);
    let footer_at = footer_offset(slot_bytes) as usize;
    bytes[footer_at..].copy_from_slice(&header.version.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_tears_are_seen() {
        let header = Header {
            locked: false,
            allocated: true,
            version: 17,
        };
        let slot = Slot {
            header,
            incarnation: 3,
            payload: b"payload",
        };
        let bytes = encode(128, &slot);
        assert_eq!(decode(&bytes), Ok(slot));
        let mut torn = bytes.clone();
        let footer_at = footer_offset(128) as usize;
        torn[footer_at] ^= 1;
        assert_eq!(decode(&torn), Err(SlotState::Torn));
        let locked = encode(
            128,
            &Slot {
                header: header.with_lock(true),
                ..slot
            },
        );
        assert_eq!(decode(&locked), Err(SlotState::Locked));
        let mut oversized = bytes;
        oversized[SIZE_OFFSET as usize] = 200;
        assert_eq!(decode(&oversized), Err(SlotState::Torn));
        assert_eq!(incarnation_of(size_word(5, 77)), 77);
    }
}
