//! Fuzz targets for every decoder of bytes that reach the engine from a
//! peer or a file: ring records (and their entries and TRUNCATE lists),
//! the polled record prefix, object slots, region headers and slab tables,
//! LOCK answers, header and address words. Each decoder gets arbitrary
//! bytes and must not panic; each encoding of arbitrary values decodes to
//! them again; valid encodings with random damage must not panic either
//! (and a damaged record is never accepted as another record).
//!
//! Inputs come from proptest (stable Rust has no coverage-guided fuzzer
//! here); the suite runs the default 256 cases per target, a longer run is
//! `PROPTEST_CASES=1000000 cargo test --release -p farm-core --test
//! decoders_never_panic_and_round_trip` (see the README). A failure prints
//! the input, minimized, and proptest keeps its seed in
//! `proptest-regressions/` so that the next run tries it first.

use farm_core::codec::inbox::LockReply;
use farm_core::codec::object::{self, Slot};
use farm_core::codec::record::{self, Entry, Kind, Record, RecordPrefix, RecordWriter};
use farm_core::codec::region::{slab_class, Formatted, RegionHeader};
use farm_core::limits::{CLASS_BYTES, OBJECT_PAYLOAD_MAX};
use farm_core::{Addr, Header, TxnId};
use proptest::collection::vec;
use proptest::prelude::*;

fn header() -> impl Strategy<Value = Header> {
    (any::<bool>(), 0..=Header::VERSION_MAX).prop_map(|(allocated, version)| Header {
        locked: false,
        allocated,
        version,
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        header(),
        header(),
        vec(any::<u8>(), 0..=OBJECT_PAYLOAD_MAX as usize),
    )
        .prop_map(|(addr, expected, new, payload)| Entry {
            addr: Addr(addr),
            expected,
            new,
            payload,
        })
}

fn txid() -> impl Strategy<Value = TxnId> {
    (0usize..64, 0usize..64, any::<u32>()).prop_map(|(n, c, s)| TxnId::new(n, c, s))
}

/// A sealed LOCK or COMMIT-BACKUP record of `entries`, for ring position
/// `position`.
fn entries_record(
    kind: Kind,
    sender: usize,
    txid: TxnId,
    entries: &[Entry],
    position: u64,
) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut writer = RecordWriter::new(&mut buffer, kind, sender, 1, txid);
    let regions: Vec<u16> = entries.iter().map(|e| e.addr.region()).collect();
    writer.regions(&regions);
    for entry in entries {
        writer.entry(entry.addr, entry.expected, entry.new, &entry.payload);
    }
    record::seal(&mut buffer, position).expect("the strategies keep records small");
    buffer
}

/// Everything a receiver does with a record's bytes, none of which may
/// panic.
fn decode_all(bytes: &[u8], position: u64) {
    if let Ok(record) = Record::decode(bytes, position) {
        if let Ok(regions) = record.regions() {
            regions.for_each(drop);
        }
        if let Ok(entries) = record.entries() {
            for entry in entries {
                let _ = entry.map(|e| e.to_owned());
            }
        }
        if let Ok(truncated) = record.truncated() {
            truncated.for_each(drop);
        }
    }
}

proptest! {
    #[test]
    fn records_of_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048), position in any::<u64>()) {
        decode_all(&bytes, position & !7);
    }

    /// Records whose framing and checksum are right but whose payload is
    /// anything (a peer that speaks garbage carefully): the entry and
    /// TRUNCATE decoders see every shape of payload.
    #[test]
    fn records_with_arbitrary_payloads_never_panic(
        kind in prop::sample::select(vec![Kind::Lock, Kind::CommitBackup, Kind::Truncate, Kind::Abort]),
        payload in vec(any::<u8>(), 0..600),
        count in prop::option::of((any::<u32>(), 0u32..40)),
    ) {
        let mut buffer = Vec::new();
        RecordWriter::new(&mut buffer, kind, 1, 1, TxnId::new(1, 2, 3));
        buffer.truncate(record::HEADER_BYTES);
        if let Some((count, regions)) = count {
            buffer.extend_from_slice(&count.to_le_bytes());
            buffer.extend_from_slice(&regions.to_le_bytes());
        }
        buffer.extend_from_slice(&payload);
        buffer.resize(buffer.len().next_multiple_of(8), 0);
        record::seal(&mut buffer, 64).unwrap();
        decode_all(&buffer, 64);
    }

    #[test]
    fn record_prefixes_of_any_word_never_panic(word: u64) {
        if let Ok((_, len)) = RecordPrefix::decode(word) {
            prop_assert_eq!(len as u64, word & 0xffff_ffff);
        }
    }

    #[test]
    fn entry_records_round_trip(
        lock: bool,
        sender in 0usize..64,
        txid in txid(),
        entries in vec(entry(), 0..8),
        position in (0u64..1 << 40).prop_map(|p| p * 8),
    ) {
        let kind = if lock { Kind::Lock } else { Kind::CommitBackup };
        let bytes = entries_record(kind, sender, txid, &entries, position);
        let record = Record::decode(&bytes, position).unwrap();
        prop_assert_eq!((record.kind, record.sender, record.txid, record.configuration), (kind, sender, txid, 1));
        let decoded: Vec<Entry> = record.entries().unwrap().map(|e| e.unwrap().to_owned()).collect();
        let regions: Vec<u16> = entries.iter().map(|e| e.addr.region()).collect();
        prop_assert_eq!(record.regions().unwrap().collect::<Vec<_>>(), regions);
        prop_assert_eq!(decoded, entries);
    }

    #[test]
    fn truncate_records_round_trip(txids in vec(txid(), 0..300), position in (0u64..1 << 40).prop_map(|p| p * 8)) {
        let mut buffer = Vec::new();
        let mut writer = RecordWriter::new(&mut buffer, Kind::Truncate, 3, 1, TxnId::default());
        for txid in &txids {
            writer.truncated(*txid);
        }
        record::seal(&mut buffer, position).unwrap();
        let record = Record::decode(&buffer, position).unwrap();
        prop_assert_eq!(record.truncated().unwrap().collect::<Vec<_>>(), txids);
    }

    /// A valid record with random bytes overwritten, or cut short: never a
    /// panic, and never accepted with other contents.
    #[test]
    fn damaged_records_never_panic_nor_pass(
        entries in vec(entry(), 1..4),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = entries_record(Kind::Lock, 1, TxnId::new(1, 0, 9), &entries, 4096);
        let mut damaged = bytes.clone();
        for (at, byte) in &damage {
            damaged[at.index(bytes.len())] = *byte;
        }
        decode_all(&damaged, 4096);
        if damaged != bytes {
            prop_assert!(Record::decode(&damaged, 4096).is_err(), "a damaged record passed");
        }
        let cut = cut.index(bytes.len());
        decode_all(&bytes[..cut], 4096);
        prop_assert!(Record::decode(&bytes[..cut], 4096).is_err());
    }

    #[test]
    fn object_slots_of_arbitrary_bytes_never_panic(class in 0usize..CLASS_BYTES.len(), bytes in vec(any::<u8>(), 4096)) {
        let slot = &bytes[..CLASS_BYTES[class] as usize];
        if let Ok(decoded) = object::decode(slot) {
            prop_assert!(decoded.payload.len() <= object::capacity(CLASS_BYTES[class]));
        }
        let _ = object::decode(&bytes[..bytes.len() / 3]);
    }

    #[test]
    fn object_slots_round_trip(
        class in 0usize..CLASS_BYTES.len(),
        header in header(),
        incarnation in 0..=Addr::INCARNATION_MAX,
        payload in vec(any::<u8>(), 0..=40),
    ) {
        let slot = Slot { header, incarnation, payload: &payload };
        let bytes = object::encode(CLASS_BYTES[class], &slot);
        prop_assert_eq!(object::decode(&bytes), Ok(slot));
    }

    #[test]
    fn region_headers_never_panic_and_round_trip(bytes in vec(any::<u8>(), 0..128), region: u16, len: u64, entry: u8) {
        let _ = RegionHeader::decode(&bytes);
        let header = RegionHeader::new(region, len);
        prop_assert_eq!(
            RegionHeader::decode(bytemuck::bytes_of(&header)),
            Ok(Formatted::Region { region, bytes: len })
        );
        if let Ok(Some(class)) = slab_class(entry) {
            prop_assert!((class as usize) < CLASS_BYTES.len());
        }
    }

    #[test]
    fn words_never_panic(word: u64) {
        let _ = LockReply::decode(word);
        let header = Header::decode(word);
        prop_assert_eq!(header.encode(), word);
        let addr = Addr(word);
        prop_assert_eq!(Addr::new(addr.region(), addr.class(), addr.incarnation(), addr.offset()), addr);
        let txid = TxnId::decode(word);
        prop_assert_eq!(txid.encode(), word);
    }
}
