//! Ring records: the unit a sender appends to a message ring with one
//! one-sided WRITE (FaRM SOSP'15 §4: LOCK, COMMIT-BACKUP, COMMIT-PRIMARY,
//! ABORT, TRUNCATE all travel this way).
//!
//! ```text
//! record (len bytes, a multiple of 8):
//!  0       4          6      7       8          10       12              16         24
//!  | len   | reserved | kind | magic | reserved | sender | configuration | txid     |
//!  | u32   | u16      | u8   | 0xFB  | u16      | u16    | u32           | u64      |
//!  +-------+----------+------+-------+----------+--------+---------------+----------+
//!  | payload (len - 32 bytes; by kind, below)                                       |
//!  +--------------------------------------------------------------------------------+
//!  | checksum u32 (of every byte before it) | tag u32 (the ring position's)         |
//!
//! LOCK and COMMIT-BACKUP payload:       TRUNCATE payload:
//!  | count u32 | regions u32 |           | count u32 | reserved u32 |
//!  | the transaction's written regions   then `count` txids (u64 each)
//!  | (u16 each, zero-padded to 8)        |
//!  then `count` entries:
//!  | addr u64 | expected header u64 | new header u64 | len u32 | reserved u32 |
//!  | payload (len bytes, zero-padded to 8)                                    |
//!
//! COMMIT-PRIMARY and ABORT: no payload.
//! PAD: the first 8 bytes alone (len = the rest of the ring's lap).
//! ```
//!
//! The first 8 bytes ([`RecordPrefix`]) are the word a receiver polls: zero
//! means nothing has landed. The sender's WRITE lands in increasing address
//! order, so the trailer is the last to arrive: a record whose trailer is
//! still zero is incomplete; one whose trailer is set but whose checksum
//! does not match is corrupt and is never applied. The tag ties a record to
//! its position, so a stale record from an earlier lap is never taken for a
//! new one. The configuration is the one the sender was in (FaRM SOSP'15
//! §5: records of an older configuration are ignored).

use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use super::{read_pod, DecodeError};
use crate::header::{Addr, Header};
use crate::limits::{OBJECT_PAYLOAD_MAX, RECORD_BYTES_MAX};
use crate::txn_id::TxnId;

/// A record's format mark: 0xFB since the checksum is CRC-32 (0xFA
/// records, of the earlier hash, are another format).
const MAGIC: u8 = 0xFB;

/// The kinds of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Filler to the end of a ring's lap.
    Pad = 1,
    /// Coordinator → primary: lock these objects at these versions.
    Lock = 2,
    // 3 was a LOCK answer sent as a record; answers are one-sided WRITEs
    // of a [`super::inbox::LockReply`] word now.
    /// Coordinator → backup: the new values, applied at truncation.
    CommitBackup = 4,
    /// Coordinator → primary: install the locked writes and unlock.
    CommitPrimary = 5,
    /// Coordinator → primary: release the locks of a LOCK.
    Abort = 6,
    /// Coordinator → backup: these transactions are done everywhere.
    Truncate = 7,
}

impl Kind {
    pub fn decode(value: u8) -> Result<Kind, DecodeError> {
        Ok(match value {
            1 => Kind::Pad,
            2 => Kind::Lock,
            4 => Kind::CommitBackup,
            5 => Kind::CommitPrimary,
            6 => Kind::Abort,
            7 => Kind::Truncate,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    /// The name FaRM's papers use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pad => "PAD",
            Kind::Lock => "LOCK",
            Kind::CommitBackup => "COMMIT-BACKUP",
            Kind::CommitPrimary => "COMMIT-PRIMARY",
            Kind::Abort => "ABORT",
            Kind::Truncate => "TRUNCATE",
        }
    }

    /// Kinds whose payload is a count and that many entries or txids.
    fn has_count(self) -> bool {
        matches!(self, Kind::Lock | Kind::CommitBackup | Kind::Truncate)
    }
}

/// The first word of every record: what a receiver polls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordPrefix {
    pub len: u32,
    pub reserved: u16,
    pub kind: u8,
    pub magic: u8,
}

/// The header of every record but PAD.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    pub prefix: RecordPrefix,
    pub reserved: u16,
    pub sender: u16,
    pub configuration: u32,
    pub txid: u64,
}

/// The last word of every record but PAD.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordTrailer {
    pub checksum: u32,
    pub tag: u32,
}

/// The counts that open LOCK, COMMIT-BACKUP and TRUNCATE payloads: of
/// entries (or txids), and of written regions (LOCK, COMMIT-BACKUP: every
/// region the transaction writes, so that recovery knows the whole write
/// set's reach from any one record, FaRM SOSP'15 §5.3; 0 for TRUNCATE).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CountHeader {
    pub count: u32,
    pub regions: u32,
}

/// One object write of a LOCK or COMMIT-BACKUP, before its payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EntryHeader {
    pub addr: u64,
    pub expected: u64,
    pub new: u64,
    pub len: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<RecordPrefix>() == 8);
const _: () = assert!(offset_of!(RecordPrefix, len) == 0);
const _: () = assert!(offset_of!(RecordPrefix, kind) == 6);
const _: () = assert!(offset_of!(RecordPrefix, magic) == 7);
const _: () = assert!(size_of::<RecordHeader>() == 24);
const _: () = assert!(offset_of!(RecordHeader, sender) == 10);
const _: () = assert!(offset_of!(RecordHeader, configuration) == 12);
const _: () = assert!(offset_of!(RecordHeader, txid) == 16);
const _: () = assert!(size_of::<RecordTrailer>() == 8);
const _: () = assert!(offset_of!(RecordTrailer, tag) == 4);
const _: () = assert!(size_of::<CountHeader>() == 8);
const _: () = assert!(size_of::<EntryHeader>() == 32);
const _: () = assert!(offset_of!(EntryHeader, len) == 24);

pub const HEADER_BYTES: usize = size_of::<RecordHeader>();
pub const TRAILER_BYTES: usize = size_of::<RecordTrailer>();
/// Bytes of a record beyond its payload.
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + TRAILER_BYTES;
/// A record with no payload (COMMIT-PRIMARY, ABORT).
pub const PLAIN_RECORD_BYTES: usize = OVERHEAD_BYTES;
const COUNT_BYTES: usize = size_of::<CountHeader>();
const ENTRY_HEADER_BYTES: usize = size_of::<EntryHeader>();
const TXID_BYTES: usize = size_of::<u64>();
const REGION_ID_BYTES: usize = size_of::<u16>();

const _: () = assert!(OVERHEAD_BYTES + COUNT_BYTES + 8 == crate::limits::RECORD_FIXED_BYTES);
const _: () = assert!(ENTRY_HEADER_BYTES == crate::limits::ENTRY_FIXED_BYTES);

/// The largest entry payload that still fits one record with its headers.
const _: () = assert!(
    OVERHEAD_BYTES + COUNT_BYTES + ENTRY_HEADER_BYTES + OBJECT_PAYLOAD_MAX as usize
        <= RECORD_BYTES_MAX
);

impl RecordPrefix {
    /// Decodes the polled word. Zero is "nothing here" and is the caller's
    /// to check first.
    pub fn decode(word: u64) -> Result<(Kind, usize), DecodeError> {
        let prefix: RecordPrefix = bytemuck::cast(word.to_le_bytes());
        if prefix.magic != MAGIC {
            return Err(DecodeError::BadMagic {
                what: "record",
                found: u64::from(prefix.magic),
            });
        }
        if prefix.reserved != 0 {
            return Err(DecodeError::ReservedBits { what: "record" });
        }
        Ok((Kind::decode(prefix.kind)?, prefix.len as usize))
    }

    fn encode(kind: Kind, len: usize) -> RecordPrefix {
        assert!(
            len.is_multiple_of(8) && len <= u32::MAX as usize,
            "record length {len}"
        );
        RecordPrefix {
            len: len as u32,
            reserved: 0,
            kind: kind as u8,
            magic: MAGIC,
        }
    }

    fn word(self) -> u64 {
        u64::from_le_bytes(bytemuck::cast(self))
    }
}

/// The word a PAD record is made of: it says "the rest of this lap, `len`
/// bytes, is unused; continue at the ring's start".
pub fn pad_word(len: u64) -> u64 {
    RecordPrefix::encode(Kind::Pad, len as usize).word()
}

/// The tag a record at ring `position` carries in its trailer.
pub fn tag(position: u64) -> u32 {
    ((position >> 3) as u32).wrapping_add(1)
}

/// CRC-32 (IEEE) of `bytes`, by `crc32fast`: a checksum for torn or
/// flipped bytes (not an adversary). It replaced a word-wise
/// multiply-xorshift hash of our own, whose serial multiply chain ran at
/// about 2 GB/s and made sealing and checking records about 7% of the CPU
/// time of loading TATP; `crc32fast` folds with carry-less multiplies
/// (PCLMULQDQ) where the CPU has them. Records of the earlier hash carry
/// magic 0xFA and are refused as another format ([`MAGIC`]).
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Bytes of the list of `regions` written regions in a record.
pub fn regions_bytes(regions: usize) -> usize {
    (regions * REGION_ID_BYTES).next_multiple_of(8)
}

/// Bytes of a LOCK or COMMIT-BACKUP record naming `regions` regions whose
/// entries carry payloads of `payload_lens` bytes (trailer included): what
/// a commit checks against [`RECORD_BYTES_MAX`] before it sends anything.
pub fn entries_record_bytes(
    regions: usize,
    payload_lens: impl IntoIterator<Item = usize>,
) -> usize {
    OVERHEAD_BYTES
        + COUNT_BYTES
        + regions_bytes(regions)
        + payload_lens
            .into_iter()
            .map(|len| ENTRY_HEADER_BYTES + len.next_multiple_of(8))
            .sum::<usize>()
}

/// Bytes of a TRUNCATE record of `count` transactions.
pub fn truncate_record_bytes(count: usize) -> usize {
    OVERHEAD_BYTES + COUNT_BYTES + count * TXID_BYTES
}

/// The most transactions one TRUNCATE record names.
pub const TRUNCATE_TXIDS_MAX: usize =
    (RECORD_BYTES_MAX - OVERHEAD_BYTES - COUNT_BYTES) / TXID_BYTES;

/// Builds a record's body in a reused buffer; [`seal`] completes it once
/// its ring position is known.
pub struct RecordWriter<'a> {
    buffer: &'a mut Vec<u8>,
    kind: Kind,
    count: u32,
    regions: u32,
}

impl<'a> RecordWriter<'a> {
    /// Clears `buffer` and writes the header of a `kind` record.
    pub fn new(
        buffer: &'a mut Vec<u8>,
        kind: Kind,
        sender: usize,
        configuration: u32,
        txid: TxnId,
    ) -> RecordWriter<'a> {
        assert!(kind != Kind::Pad, "a PAD is a word, not a record");
        assert!(sender <= usize::from(u16::MAX));
        buffer.clear();
        let header = RecordHeader {
            prefix: RecordPrefix::encode(kind, 0),
            reserved: 0,
            sender: sender as u16,
            configuration,
            txid: txid.encode(),
        };
        buffer.extend_from_slice(bytemuck::bytes_of(&header));
        if kind.has_count() {
            buffer.extend_from_slice(bytemuck::bytes_of(&CountHeader::zeroed()));
        }
        RecordWriter {
            buffer,
            kind,
            count: 0,
            regions: 0,
        }
    }

    /// Names the regions the transaction writes (LOCK, COMMIT-BACKUP; once,
    /// before the entries).
    pub fn regions(&mut self, regions: &[u16]) {
        assert!(
            matches!(self.kind, Kind::Lock | Kind::CommitBackup),
            "only LOCK and COMMIT-BACKUP name regions"
        );
        assert!(
            self.count == 0 && self.regions == 0,
            "regions come first, once"
        );
        for region in regions {
            self.buffer.extend_from_slice(&region.to_le_bytes());
        }
        let padded = self.buffer.len().next_multiple_of(8);
        self.buffer.resize(padded, 0);
        self.regions = regions.len() as u32;
        self.write_counts();
    }

    fn counted(&mut self) {
        self.count += 1;
        self.write_counts();
    }

    fn write_counts(&mut self) {
        let count = CountHeader {
            count: self.count,
            regions: self.regions,
        };
        self.buffer[HEADER_BYTES..HEADER_BYTES + COUNT_BYTES]
            .copy_from_slice(bytemuck::bytes_of(&count));
    }

    /// Appends one object write (LOCK, COMMIT-BACKUP).
    pub fn entry(&mut self, addr: Addr, expected: Header, new: Header, payload: &[u8]) {
        assert!(payload.len() <= OBJECT_PAYLOAD_MAX as usize);
        let header = EntryHeader {
            addr: addr.0,
            expected: expected.encode(),
            new: new.encode(),
            len: payload.len() as u32,
            reserved: 0,
        };
        self.buffer.extend_from_slice(bytemuck::bytes_of(&header));
        self.buffer.extend_from_slice(payload);
        let padded = self.buffer.len().next_multiple_of(8);
        self.buffer.resize(padded, 0);
        self.counted();
    }

    /// Appends one truncated transaction (TRUNCATE).
    pub fn truncated(&mut self, txid: TxnId) {
        self.buffer.extend_from_slice(&txid.encode().to_le_bytes());
        self.counted();
    }

    /// The record's length once sealed, trailer included.
    pub fn sealed_len(&self) -> usize {
        self.buffer.len() + TRAILER_BYTES
    }
}

/// A record body [`seal`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: usize,
    pub max: usize,
}

/// Completes the record [`RecordWriter`] built in `buffer` for ring
/// `position`: its length and the trailer. Returns the length.
pub fn seal(buffer: &mut Vec<u8>, position: u64) -> Result<usize, TooLarge> {
    let len = buffer.len() + TRAILER_BYTES;
    if len > RECORD_BYTES_MAX {
        return Err(TooLarge {
            bytes: len,
            max: RECORD_BYTES_MAX,
        });
    }
    let mut header: RecordHeader =
        read_pod(buffer, "record being sealed").expect("RecordWriter wrote a header");
    header.prefix.len = len as u32;
    buffer[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    let trailer = RecordTrailer {
        checksum: checksum(buffer),
        tag: tag(position),
    };
    buffer.extend_from_slice(bytemuck::bytes_of(&trailer));
    Ok(len)
}

/// A complete, checked record, borrowed from a receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub kind: Kind,
    pub sender: usize,
    pub configuration: u32,
    pub txid: TxnId,
    payload: &'a [u8],
}

impl<'a> Record<'a> {
    /// Checks and decodes a whole record (header to trailer) that was read
    /// at ring `position`.
    pub fn decode(bytes: &'a [u8], position: u64) -> Result<Record<'a>, DecodeError> {
        let header: RecordHeader = read_pod(bytes, "record header")?;
        let word = u64::from_le_bytes(bytemuck::cast(header.prefix));
        let (kind, len) = RecordPrefix::decode(word)?;
        if kind == Kind::Pad {
            return Err(DecodeError::Invalid {
                what: "record",
                why: "a PAD word where a record was expected",
            });
        }
        if len != bytes.len() || len < OVERHEAD_BYTES || !len.is_multiple_of(8) {
            return Err(DecodeError::BadLength {
                what: "record",
                len: len as u64,
                why: "not the bytes read, not a multiple of 8, or shorter than its header",
            });
        }
        if header.reserved != 0 {
            return Err(DecodeError::ReservedBits {
                what: "record header",
            });
        }
        let body = &bytes[..len - TRAILER_BYTES];
        let trailer: RecordTrailer = read_pod(&bytes[len - TRAILER_BYTES..], "record trailer")?;
        if trailer.tag != tag(position) {
            return Err(DecodeError::TagMismatch {
                expected: tag(position),
                found: trailer.tag,
            });
        }
        let expected = checksum(body);
        if trailer.checksum != expected {
            return Err(DecodeError::ChecksumMismatch {
                expected,
                found: trailer.checksum,
            });
        }
        let payload = &body[HEADER_BYTES..];
        if !kind.has_count() && !payload.is_empty() {
            return Err(DecodeError::TrailingBytes {
                what: kind.name(),
                left: payload.len(),
            });
        }
        Ok(Record {
            kind,
            sender: usize::from(header.sender),
            configuration: header.configuration,
            txid: TxnId::decode(header.txid),
            payload,
        })
    }

    /// The counts, the written regions (LOCK, COMMIT-BACKUP) and the rest.
    fn counted(&self) -> Result<(usize, &'a [u8], &'a [u8]), DecodeError> {
        let count: CountHeader = read_pod(self.payload, "record count")?;
        let rest = &self.payload[COUNT_BYTES..];
        let regions = count.regions as usize;
        if self.kind == Kind::Truncate && regions != 0 {
            return Err(DecodeError::ReservedBits {
                what: "TRUNCATE count",
            });
        }
        let list_bytes = regions_bytes(regions);
        if rest.len() < list_bytes {
            return Err(DecodeError::Truncated {
                what: "record's region list",
                needed: list_bytes,
                available: rest.len(),
            });
        }
        let list = &rest[..regions * REGION_ID_BYTES];
        Ok((count.count as usize, list, &rest[list_bytes..]))
    }

    fn writes_objects(&self) -> Result<(), DecodeError> {
        if matches!(self.kind, Kind::Lock | Kind::CommitBackup) {
            Ok(())
        } else {
            Err(DecodeError::Invalid {
                what: self.kind.name(),
                why: "carries no object writes",
            })
        }
    }

    /// The object writes of a LOCK or COMMIT-BACKUP, each checked.
    pub fn entries(&self) -> Result<Entries<'a>, DecodeError> {
        self.writes_objects()?;
        let (left, _, rest) = self.counted()?;
        Ok(Entries { rest, left })
    }

    /// Every region the transaction of a LOCK or COMMIT-BACKUP writes.
    pub fn regions(&self) -> Result<impl Iterator<Item = u16> + 'a, DecodeError> {
        self.writes_objects()?;
        let (_, list, _) = self.counted()?;
        Ok(list
            .chunks_exact(REGION_ID_BYTES)
            .map(|id| u16::from_le_bytes(id.try_into().expect("2 bytes"))))
    }

    /// The transactions a TRUNCATE names.
    pub fn truncated(&self) -> Result<impl Iterator<Item = TxnId> + 'a, DecodeError> {
        if self.kind != Kind::Truncate {
            return Err(DecodeError::Invalid {
                what: self.kind.name(),
                why: "names no truncated transactions",
            });
        }
        let (count, _, rest) = self.counted()?;
        if count.checked_mul(TXID_BYTES) != Some(rest.len()) {
            return Err(DecodeError::BadLength {
                what: "TRUNCATE",
                len: count as u64,
                why: "count does not match the payload",
            });
        }
        Ok(rest
            .chunks_exact(TXID_BYTES)
            .map(|word| TxnId::decode(u64::from_le_bytes(word.try_into().expect("8 bytes")))))
    }
}

/// One object write, borrowed from a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub addr: Addr,
    pub expected: Header,
    pub new: Header,
    pub payload: &'a [u8],
}

impl EntryRef<'_> {
    pub fn to_owned(&self) -> Entry {
        Entry {
            addr: self.addr,
            expected: self.expected,
            new: self.new,
            payload: self.payload.to_vec(),
        }
    }
}

/// One object write, owned: what a participant keeps from a LOCK until
/// COMMIT-PRIMARY or ABORT, and from a COMMIT-BACKUP until TRUNCATE.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub addr: Addr,
    pub expected: Header,
    pub new: Header,
    pub payload: Vec<u8>,
}

/// The entries of a record, decoded one at a time.
pub struct Entries<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<EntryRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return (!self.rest.is_empty()).then(|| {
                let left = self.rest.len();
                self.rest = &[];
                Err(DecodeError::TrailingBytes {
                    what: "record entries",
                    left,
                })
            });
        }
        self.left -= 1;
        Some(self.decode_one())
    }
}

impl<'a> Entries<'a> {
    fn decode_one(&mut self) -> Result<EntryRef<'a>, DecodeError> {
        let fail = |this: &mut Self, error| {
            this.left = 0;
            this.rest = &[];
            Err(error)
        };
        let header: EntryHeader = match read_pod(self.rest, "record entry") {
            Ok(header) => header,
            Err(error) => return fail(self, error),
        };
        let len = header.len as usize;
        if len > OBJECT_PAYLOAD_MAX as usize || header.reserved != 0 {
            return fail(
                self,
                DecodeError::BadLength {
                    what: "record entry",
                    len: len as u64,
                    why: "beyond the largest object, or reserved bits set",
                },
            );
        }
        let padded = len.next_multiple_of(8);
        let body = &self.rest[ENTRY_HEADER_BYTES..];
        if body.len() < padded {
            let available = body.len();
            return fail(
                self,
                DecodeError::Truncated {
                    what: "record entry payload",
                    needed: padded,
                    available,
                },
            );
        }
        self.rest = &body[padded..];
        Ok(EntryRef {
            addr: Addr(header.addr),
            expected: Header::decode(header.expected),
            new: Header::decode(header.new),
            payload: &body[..len],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_record(position: u64) -> Vec<u8> {
        let mut buffer = Vec::new();
        let mut writer = RecordWriter::new(&mut buffer, Kind::Lock, 2, 7, TxnId::new(1, 3, 0xabc));
        let header = Header {
            locked: false,
            allocated: true,
            version: 9,
        };
        writer.regions(&[1, 5]);
        writer.entry(
            Addr::new(1, 0, 4, 65536),
            header,
            header.after_write(),
            b"hello",
        );
        writer.entry(Addr::new(1, 0, 4, 65600), header, header.after_write(), b"");
        let len = writer.sealed_len();
        assert_eq!(len, entries_record_bytes(2, [5, 0]));
        assert_eq!(seal(&mut buffer, position).unwrap(), len);
        assert_eq!(buffer.len(), len);
        buffer
    }

    #[test]
    fn encode_then_decode_and_detect_every_flipped_bit() {
        let buffer = lock_record(4096);
        let record = Record::decode(&buffer, 4096).unwrap();
        assert_eq!(
            (
                record.kind,
                record.configuration,
                record.sender,
                record.txid
            ),
            (Kind::Lock, 7, 2, TxnId::new(1, 3, 0xabc))
        );
        let entries: Vec<EntryRef> = record.entries().unwrap().map(Result::unwrap).collect();
        assert_eq!(record.regions().unwrap().collect::<Vec<_>>(), [1, 5]);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].payload, b"hello");
        assert_eq!(entries[1].addr, Addr::new(1, 0, 4, 65600));
        assert!(
            Record::decode(&buffer, 4104).is_err(),
            "a record read at another position is rejected"
        );
        for index in 0..buffer.len() {
            for bit in 0..8 {
                let mut bad = buffer.clone();
                bad[index] ^= 1 << bit;
                assert!(
                    Record::decode(&bad, 4096).is_err(),
                    "flip of byte {index} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncate_lists_round_trip() {
        let mut buffer = Vec::new();
        let mut writer = RecordWriter::new(&mut buffer, Kind::Truncate, 0, 1, TxnId::default());
        let ids: Vec<TxnId> = (0..5).map(|s| TxnId::new(0, 1, s)).collect();
        for id in &ids {
            writer.truncated(*id);
        }
        assert_eq!(writer.sealed_len(), truncate_record_bytes(5));
        seal(&mut buffer, 0).unwrap();
        let record = Record::decode(&buffer, 0).unwrap();
        assert_eq!(record.truncated().unwrap().collect::<Vec<_>>(), ids);
        assert!(record.entries().is_err());
    }

    #[test]
    fn pad_word_decodes_as_a_pad() {
        assert_eq!(
            RecordPrefix::decode(pad_word(4096)).unwrap(),
            (Kind::Pad, 4096)
        );
        assert!(RecordPrefix::decode(0x1234).is_err());
    }

    #[test]
    fn seal_refuses_a_record_beyond_the_limit() {
        let mut buffer = Vec::new();
        let mut writer = RecordWriter::new(&mut buffer, Kind::Lock, 0, 1, TxnId::default());
        let payload = vec![0u8; OBJECT_PAYLOAD_MAX as usize];
        for _ in 0..RECORD_BYTES_MAX / payload.len() + 1 {
            writer.entry(
                Addr::new(0, 6, 0, 65536),
                Header::default(),
                Header::default(),
                &payload,
            );
        }
        let error = seal(&mut buffer, 0).unwrap_err();
        assert!(error.bytes > error.max);
    }
}
