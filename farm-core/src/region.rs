//! Regions: fixed-size, file-backed registered memory that holds objects,
//! and the operations a node does on its own replicas of them (install a
//! value, take and release the lock words). The byte layouts are in
//! [`crate::codec::region`] and [`crate::codec::object`]; this module may
//! not send anything over the fabric.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdma_transport::MemoryRegion;

use crate::codec::object::{self, FOOTER_BYTES, HEADER_OFFSET, PAYLOAD_OFFSET, SIZE_OFFSET};
use crate::codec::record::Entry;
use crate::codec::region::{Formatted, RegionHeader};
use crate::error::{Error, Result};
use crate::header::{Addr, Header};
use crate::limits::{
    CLASS_BYTES, OBJECT_OVERHEAD_BYTES, OBJECT_PAYLOAD_MAX, REGION_HEADER_BYTES, SLAB_BYTES,
};

pub fn class_bytes(class: u8) -> u32 {
    CLASS_BYTES[usize::from(class)]
}

/// The smallest class whose slot holds `payload` bytes.
///
/// # Errors
/// [`Error::ObjectTooLarge`] beyond [`OBJECT_PAYLOAD_MAX`].
pub fn class_for(payload: usize) -> Result<u8> {
    CLASS_BYTES
        .iter()
        .position(|bytes| payload + OBJECT_OVERHEAD_BYTES as usize <= *bytes as usize)
        .map(|class| class as u8)
        .ok_or(Error::ObjectTooLarge {
            bytes: payload,
            max: OBJECT_PAYLOAD_MAX,
        })
}

/// Checks that `addr` names a slot of its size class inside a region of
/// `region_bytes` bytes (not that the slot's slab holds that class).
pub fn check_slot(addr: Addr, region_bytes: u64) -> std::result::Result<(), &'static str> {
    if usize::from(addr.class()) >= CLASS_BYTES.len() {
        return Err("no such size class");
    }
    let offset = addr.offset();
    let slot = class_bytes(addr.class());
    if offset < REGION_HEADER_BYTES
        || !((offset - REGION_HEADER_BYTES) % SLAB_BYTES).is_multiple_of(slot)
        || u64::from(offset) + u64::from(slot) > region_bytes
    {
        return Err("offset is not a slot of its class");
    }
    Ok(())
}

/// Writes the region header of fresh (all-zero) memory, or checks the one
/// an earlier run wrote.
///
/// # Errors
/// [`Error::RegionMismatch`] when the memory holds another region or
/// another size; [`Error::Corrupt`] when its header does not decode.
pub fn format(mr: &MemoryRegion, region: u16) -> Result<()> {
    let mut bytes = [0u8; std::mem::size_of::<RegionHeader>()];
    mr.read(0, &mut bytes)?;
    let found = RegionHeader::decode(&bytes).map_err(|source| Error::Corrupt {
        what: format!("header of region {region}"),
        source,
    })?;
    match found {
        Formatted::Fresh => {
            mr.write(0, bytemuck::bytes_of(&RegionHeader::new(region, mr.len())))?;
            Ok(())
        }
        Formatted::Region { region: r, bytes } if r == region && bytes == mr.len() => Ok(()),
        Formatted::Region { region: r, bytes } => Err(Error::RegionMismatch {
            region,
            found: format!("region {r} of {bytes} bytes (expected {} bytes)", mr.len()),
        }),
    }
}

/// The header word of a local slot.
pub fn header_word(mr: &MemoryRegion, offset: u32) -> Result<&AtomicU64> {
    Ok(mr.atomic_u64(u64::from(offset) + HEADER_OFFSET)?)
}

/// The incarnation of a local slot (meaningful while the caller owns the
/// slot: its allocator handed it out, or it holds its lock).
pub fn incarnation(mr: &MemoryRegion, offset: u32) -> Result<u32> {
    let word = mr
        .atomic_u64(u64::from(offset) + SIZE_OFFSET)?
        // This Acquire pairs with the Release of the install that wrote it.
        .load(Ordering::Acquire);
    Ok(object::incarnation_of(word))
}

/// Writes a new value into a slot of local memory in the order that makes
/// torn reads detectable (footer, size and incarnation, payload, header;
/// see [`crate::codec::object`]). The caller holds the slot's lock (a
/// primary) or is the only writer (a backup applying a truncated
/// transaction).
pub fn install(
    mr: &MemoryRegion,
    offset: u32,
    class: u8,
    header: Header,
    incarnation: u32,
    payload: &[u8],
) -> Result<()> {
    let slot_bytes = class_bytes(class);
    let offset = u64::from(offset);
    assert!(
        payload.len() <= object::capacity(slot_bytes),
        "payload exceeds its slot"
    );
    assert!(!header.locked, "an installed header is unlocked");
    // Release stores, in this order: footer, size and incarnation,
    // payload, header.
    mr.atomic_u64(offset + object::footer_offset(slot_bytes))?
        .store(header.version, Ordering::Release);
    mr.atomic_u64(offset + SIZE_OFFSET)?.store(
        object::size_word(payload.len(), incarnation),
        Ordering::Release,
    );
    mr.write(offset + PAYLOAD_OFFSET, payload)?;
    // Zero the rest of the body, so that a replica that skipped versions
    // (backups apply only the newest) holds the same bytes as the primary.
    const ZEROS: [u8; CLASS_BYTES[CLASS_BYTES.len() - 1] as usize] =
        [0; CLASS_BYTES[CLASS_BYTES.len() - 1] as usize];
    let rest = slot_bytes as usize - PAYLOAD_OFFSET as usize - FOOTER_BYTES - payload.len();
    mr.write(
        offset + PAYLOAD_OFFSET + payload.len() as u64,
        &ZEROS[..rest],
    )?;
    header_word(mr, offset as u32)?.store(header.encode(), Ordering::Release);
    Ok(())
}

/// A node's replicas of the regions it holds, by region id (`None` where
/// it holds none), and the object-level operations on them.
#[derive(Clone)]
pub struct Replicas(Vec<Option<Arc<MemoryRegion>>>);

impl Replicas {
    pub fn new(replicas: Vec<Option<Arc<MemoryRegion>>>) -> Replicas {
        Replicas(replicas)
    }

    /// This node's replica of `region`, if it holds one.
    pub fn get(&self, region: u16) -> Option<&Arc<MemoryRegion>> {
        self.0.get(usize::from(region)).and_then(Option::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u16, &Arc<MemoryRegion>)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(region, mr)| mr.as_ref().map(|mr| (region as u16, mr)))
    }

    /// The remote keys of the replicas, by region.
    pub fn keys(&self) -> Vec<Option<u32>> {
        self.0
            .iter()
            .map(|mr| mr.as_ref().map(|mr| mr.rkey()))
            .collect()
    }

    /// Bytes of every region (they are all the same size).
    pub fn region_bytes(&self) -> u64 {
        self.iter().next().map(|(_, mr)| mr.len()).unwrap_or(0)
    }

    /// This node's replica of `addr`'s region.
    ///
    /// # Errors
    /// [`Error::BadAddress`] when this node holds none (a peer named an
    /// object of a region it does not send us).
    pub fn of(&self, addr: Addr) -> Result<&Arc<MemoryRegion>> {
        self.get(addr.region()).ok_or(Error::BadAddress {
            addr,
            why: "this node holds no replica of its region",
        })
    }

    /// The header word of `addr`'s slot in this node's replica.
    pub fn header_word(&self, addr: Addr) -> Result<&AtomicU64> {
        header_word(self.of(addr)?, addr.offset())
    }

    /// CAS-locks every object of `entries` at its expected header; all or
    /// nothing (the ones taken are released when one is refused).
    pub fn try_lock(&self, entries: &[Entry]) -> Result<bool> {
        for (index, entry) in entries.iter().enumerate() {
            let word = self.header_word(entry.addr)?;
            let expected = entry.expected.with_lock(false).encode();
            let locked = entry.expected.with_lock(true).encode();
            // AcqRel: the Acquire pairs with the Release of the install that
            // wrote the expected version; the Release orders our lock before
            // the install we do at COMMIT-PRIMARY.
            if word
                .compare_exchange(expected, locked, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                for done in &entries[..index] {
                    self.unlock(done)?;
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes the locks of a LOCK being replayed after a restart: already
    /// ours (taken before the crash) or free at the expected version.
    /// Anything else means the LOCK was refused or its transaction already
    /// finished here: then nothing stays locked.
    pub fn relock(&self, entries: &[Entry]) -> Result<bool> {
        for entry in entries {
            let word = self.header_word(entry.addr)?;
            let free = entry.expected.with_lock(false).encode();
            let ours = entry.expected.with_lock(true).encode();
            // Acquire/AcqRel as in `try_lock`.
            let now = word.load(Ordering::Acquire);
            if now == ours
                || (now == free
                    && word
                        .compare_exchange(free, ours, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok())
            {
                continue;
            }
            // Refused: give back every lock of this LOCK (those found taken
            // before the crash belong to it too).
            for entry in entries {
                let word = self.header_word(entry.addr)?;
                let free = entry.expected.with_lock(false).encode();
                let ours = entry.expected.with_lock(true).encode();
                let _ = word.compare_exchange(ours, free, Ordering::AcqRel, Ordering::Acquire);
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Releases a lock taken at `entry.expected`, leaving the object as it
    /// was.
    pub fn unlock(&self, entry: &Entry) -> Result<()> {
        // This Release pairs with the Acquire of the next lock or reader.
        self.header_word(entry.addr)?
            .store(entry.expected.with_lock(false).encode(), Ordering::Release);
        Ok(())
    }

    /// Installs a locked write (a primary at COMMIT-PRIMARY): the new
    /// header and payload; after a free, the slot's next incarnation.
    pub fn install(&self, entry: &Entry) -> Result<()> {
        let incarnation = if entry.new.allocated {
            entry.addr.incarnation()
        } else {
            entry.addr.next_incarnation()
        };
        install(
            self.of(entry.addr)?,
            entry.addr.offset(),
            entry.addr.class(),
            entry.new,
            incarnation,
            &entry.payload,
        )
    }

    /// Installs `entry` unless the replica already holds that version or
    /// a newer one: backups apply truncations in any order, and a restarted
    /// node may replay what it had applied before it died.
    pub fn install_if_newer(&self, entry: &Entry) -> Result<()> {
        let current = Header::decode(self.header_word(entry.addr)?.load(Ordering::Acquire));
        if current.version < entry.new.version {
            self.install(entry)?;
        }
        Ok(())
    }

    /// Writes every replica's dirty pages to its file.
    pub fn flush(&self) -> Result<()> {
        for (_, mr) in self.iter() {
            mr.flush()?;
        }
        Ok(())
    }
}
