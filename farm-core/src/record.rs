//! Records: the unit a sender appends to a message ring.
//!
//! ```text
//! word 0   | magic 0xFA (8) | kind (8) | reserved (16) | len in bytes (32) |
//! word 1   | epoch (32)                | sender node (16) | reserved (16)  |
//! word 2   | transaction id (64)                                          |
//! ...      | payload (len - 32 bytes)                                     |
//! last     | tag (32): low bits of the record's ring position | checksum (32) |
//! ```
//!
//! The sender writes a record with one WRITE, whose words land in
//! increasing address order, so the trailer is the last to arrive: a record
//! whose trailer is still zero is incomplete, one whose trailer is set but
//! whose checksum does not match is corrupt and is never applied.
//! A PAD record is the header word alone: it says "the rest of this lap is
//! unused, continue at the ring's start".
//!
//! The epoch is the configuration epoch the sender was in; recovery (FaRM
//! SOSP'15 §5) will use it to ignore records from an older configuration.

use crate::error::{Error, Result};

pub const HEADER_BYTES: usize = 24;
pub const TRAILER_BYTES: usize = 8;
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + TRAILER_BYTES;
const MAGIC: u64 = 0xFA;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Pad = 1,
    Lock = 2,
    LockReply = 3,
    CommitBackup = 4,
    CommitPrimary = 5,
    Abort = 6,
    Truncate = 7,
}

impl Kind {
    pub fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Pad,
            2 => Kind::Lock,
            3 => Kind::LockReply,
            4 => Kind::CommitBackup,
            5 => Kind::CommitPrimary,
            6 => Kind::Abort,
            7 => Kind::Truncate,
            _ => return None,
        })
    }
}

pub fn header_word(kind: Kind, len: usize) -> u64 {
    assert!(len.is_multiple_of(8) && len <= u32::MAX as usize);
    (MAGIC << 56) | ((kind as u64) << 48) | len as u64
}

/// Decodes word 0: (kind, len), or None for a word that is no header.
pub fn decode_header_word(word: u64) -> Option<(Kind, usize)> {
    if word >> 56 != MAGIC || (word >> 32) & 0xffff != 0 {
        return None;
    }
    Some((
        Kind::from_u8((word >> 48) as u8)?,
        (word & 0xffff_ffff) as usize,
    ))
}

pub fn tag(position: u64) -> u32 {
    ((position >> 3) as u32).wrapping_add(1)
}

/// A word-wise multiply-xorshift hash: a checksum for torn or flipped
/// bytes (not an adversary), fast enough for the commit path.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        state = (state ^ word).wrapping_mul(0xff51_afd7_ed55_8ccd);
        state ^= state >> 29;
    }
    for byte in chunks.remainder() {
        state = (state ^ u64::from(*byte)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    }
    state ^= state >> 32;
    state as u32
}

/// Builds a record in `buffer` (cleared first). `position` is where it will
/// land in the ring (the trailer's tag).
pub struct RecordBuilder<'a> {
    buffer: &'a mut Vec<u8>,
}

impl<'a> RecordBuilder<'a> {
    pub fn new(buffer: &'a mut Vec<u8>, kind: Kind, epoch: u32, sender: u16, txid: u64) -> Self {
        buffer.clear();
        buffer.extend_from_slice(&header_word(kind, 0).to_le_bytes());
        buffer.extend_from_slice(
            &((u64::from(epoch) << 32) | (u64::from(sender) << 16)).to_le_bytes(),
        );
        buffer.extend_from_slice(&txid.to_le_bytes());
        RecordBuilder { buffer }
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.buffer.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Bytes, zero-padded to a multiple of 8.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.buffer.extend_from_slice(bytes);
        let padded = self.buffer.len().next_multiple_of(8);
        self.buffer.resize(padded, 0);
        self
    }

    /// Finishes the record: its length in word 0 and the trailer. Returns
    /// its length.
    pub fn finish(&mut self, position: u64) -> Result<usize> {
        let len = self.buffer.len() + TRAILER_BYTES;
        if len > crate::limits::RECORD_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                bytes: len,
                max: crate::limits::RECORD_BYTES_MAX,
            });
        }
        let kind = Kind::from_u8(self.buffer[6]).expect("builder wrote the kind");
        self.buffer[..8].copy_from_slice(&header_word(kind, len).to_le_bytes());
        let trailer = (u64::from(tag(position)) << 32) | u64::from(checksum(self.buffer));
        self.buffer.extend_from_slice(&trailer.to_le_bytes());
        Ok(len)
    }
}

/// A complete, checked record, borrowed from a receive buffer.
#[derive(Debug)]
pub struct Record<'a> {
    pub kind: Kind,
    pub epoch: u32,
    pub sender: u16,
    pub txid: u64,
    pub payload: &'a [u8],
}

/// Checks and decodes a whole record (header to trailer).
pub fn parse(bytes: &[u8], position: u64) -> Result<Record<'_>, &'static str> {
    if bytes.len() < OVERHEAD_BYTES || !bytes.len().is_multiple_of(8) {
        return Err("bad length");
    }
    let word = |index: usize| {
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
    };
    let (kind, len) = decode_header_word(word(0)).ok_or("bad header word")?;
    if len != bytes.len() {
        return Err("length mismatch");
    }
    let trailer = word(bytes.len() / 8 - 1);
    if (trailer >> 32) as u32 != tag(position) {
        return Err("trailer tag does not match the ring position");
    }
    if trailer as u32 != checksum(&bytes[..bytes.len() - TRAILER_BYTES]) {
        return Err("checksum mismatch");
    }
    Ok(Record {
        kind,
        epoch: (word(1) >> 32) as u32,
        sender: (word(1) >> 16) as u16,
        txid: word(2),
        payload: &bytes[HEADER_BYTES..bytes.len() - TRAILER_BYTES],
    })
}

/// Reads fields of a payload in order.
pub struct PayloadReader<'a> {
    bytes: &'a [u8],
}

impl<'a> PayloadReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        PayloadReader { bytes }
    }

    pub fn u64(&mut self) -> Result<u64, &'static str> {
        if self.bytes.len() < 8 {
            return Err("payload too short");
        }
        let (head, tail) = self.bytes.split_at(8);
        self.bytes = tail;
        Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
    }

    /// `len` bytes and their padding to 8.
    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let padded = len.next_multiple_of(8);
        if self.bytes.len() < padded {
            return Err("payload too short");
        }
        let (head, tail) = self.bytes.split_at(padded);
        self.bytes = tail;
        Ok(&head[..len])
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_and_detect_every_flipped_bit() {
        let mut buffer = Vec::new();
        let mut builder = RecordBuilder::new(&mut buffer, Kind::Lock, 7, 2, 0xabc);
        builder.u64(5).bytes(b"hello");
        let len = builder.finish(4096).unwrap();
        assert_eq!(len, buffer.len());
        let record = parse(&buffer, 4096).unwrap();
        assert_eq!(
            (record.kind, record.epoch, record.sender, record.txid),
            (Kind::Lock, 7, 2, 0xabc)
        );
        let mut reader = PayloadReader::new(record.payload);
        assert_eq!(reader.u64().unwrap(), 5);
        assert_eq!(reader.bytes(5).unwrap(), b"hello");
        assert!(
            parse(&buffer, 4104).is_err(),
            "a record read at another position is rejected"
        );
        for index in 0..buffer.len() {
            for bit in 0..8 {
                let mut bad = buffer.clone();
                bad[index] ^= 1 << bit;
                assert!(
                    parse(&bad, 4096).is_err(),
                    "flip of byte {index} bit {bit} went unnoticed"
                );
            }
        }
    }
}
