//! Regions: fixed-size, file-backed memory that holds objects, and the
//! layout of an object inside its slot.
//!
//! ```text
//! region file:  0        64                 REGION_HEADER_BYTES
//!               | header | slab table (1 B  | slab 0 | slab 1 | ...
//!               | magic, | per slab: class  |
//!               | id,len | + 1, 0 = unused) |
//!
//! object slot (CLASS_BYTES[class] bytes):
//!               0        8              16                      C-8     C
//!               | header | size (u32)   | payload (size bytes,  | footer |
//!               |        | + reserved   | then unused)          |        |
//! ```
//!
//! **Torn-read detection.** A READ is atomic only per 8-byte word, so a
//! reader may see parts of two versions. Every writer of a slot writes the
//! footer (the new version) first, then the size and payload, then the
//! header (unlocked, new version), each in increasing address order; a
//! reader copies the slot in increasing address order (one READ). The copy
//! is consistent iff the header is unlocked and the footer equals the
//! header's version: if any payload word came from a newer write, the
//! footer (read after it, written before it) shows the newer version.
//! This is a seqlock folded into one READ; FaRM instead puts a version in
//! every cache line and relies on cache-line-atomic DMA, which the shm
//! fabric (deliberately) does not give.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdma_transport::MemoryRegion;

use crate::error::{Error, Result};
use crate::header::Header;
use crate::limits::{CLASS_BYTES, OBJECT_OVERHEAD_BYTES, REGION_HEADER_BYTES, SLAB_BYTES};

const REGION_MAGIC: u64 = u64::from_le_bytes(*b"FARMREG1");
const SLAB_TABLE_OFFSET: u64 = 64;

pub fn class_bytes(class: u8) -> u32 {
    CLASS_BYTES[class as usize]
}

/// The smallest class whose slot holds `payload` bytes.
pub fn class_for(payload: usize) -> Result<u8> {
    CLASS_BYTES
        .iter()
        .position(|bytes| payload + OBJECT_OVERHEAD_BYTES as usize <= *bytes as usize)
        .map(|class| class as u8)
        .ok_or(Error::ObjectTooLarge {
            bytes: payload,
            max: crate::limits::OBJECT_PAYLOAD_MAX,
        })
}

pub fn slab_count(region_bytes: u64) -> u32 {
    (region_bytes.saturating_sub(u64::from(REGION_HEADER_BYTES)) / u64::from(SLAB_BYTES)) as u32
}

/// Writes the region header of fresh (all-zero) memory, or checks the one
/// an earlier run wrote.
pub fn format(mr: &MemoryRegion, region: u16) -> Result<()> {
    let mut header = [0u8; 24];
    mr.read(0, &mut header)?;
    let word = |i: usize| u64::from_le_bytes(header[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    if word(0) == 0 {
        let mut fresh = [0u8; 24];
        fresh[..8].copy_from_slice(&REGION_MAGIC.to_le_bytes());
        fresh[8..16].copy_from_slice(&u64::from(region).to_le_bytes());
        fresh[16..24].copy_from_slice(&mr.len().to_le_bytes());
        mr.write(0, &fresh)?;
        return Ok(());
    }
    if word(0) != REGION_MAGIC || word(1) != u64::from(region) || word(2) != mr.len() {
        return Err(Error::Config(format!(
            "region file for region {region} holds another region or size (id {}, {} bytes)",
            word(1),
            word(2)
        )));
    }
    Ok(())
}

/// Why a slot copy cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Locked,
    Torn,
}

/// Checks a copy of a whole slot; returns its header and payload.
pub fn parse_slot(bytes: &[u8]) -> Result<(Header, &[u8]), SlotState> {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let header = Header::decode(word(0));
    if header.locked {
        return Err(SlotState::Locked);
    }
    let footer = word(bytes.len() - 8);
    if footer != header.version {
        return Err(SlotState::Torn);
    }
    let size = (word(8) & 0xffff_ffff) as usize;
    if size > bytes.len() - OBJECT_OVERHEAD_BYTES as usize {
        // A consistent copy never has this; a never-written slot has 0.
        return Err(SlotState::Torn);
    }
    Ok((header, &bytes[16..16 + size]))
}

/// Writes a new value into a slot of local memory in the order that makes
/// torn reads detectable (footer, body, header). The caller holds the
/// slot's lock (a primary) or is the only writer (a backup applying a
/// truncated transaction).
pub fn install(
    mr: &MemoryRegion,
    offset: u32,
    class: u8,
    header: Header,
    payload: &[u8],
) -> Result<()> {
    let offset = u64::from(offset);
    let slot = u64::from(class_bytes(class));
    assert!(
        payload.len() as u64 + u64::from(OBJECT_OVERHEAD_BYTES) <= slot,
        "payload exceeds its slot"
    );
    assert!(!header.locked);
    // Release stores, in this order: footer, size, payload, header.
    mr.atomic_u64(offset + slot - 8)?
        .store(header.version, Ordering::Release);
    mr.atomic_u64(offset + 8)?
        .store(payload.len() as u64, Ordering::Release);
    mr.write(offset + 16, payload)?;
    // Zero the rest of the body, so that a replica that skipped versions
    // (backups apply only the newest) holds the same bytes as the primary.
    const ZEROS: [u8; 4096] = [0; 4096];
    let rest = (slot - 24) as usize - payload.len();
    mr.write(offset + 16 + payload.len() as u64, &ZEROS[..rest])?;
    mr.atomic_u64(offset)?
        .store(header.encode(), Ordering::Release);
    Ok(())
}

/// The header word of a local slot.
pub fn header_word(mr: &MemoryRegion, offset: u32) -> Result<&std::sync::atomic::AtomicU64> {
    Ok(mr.atomic_u64(u64::from(offset))?)
}

/// Hands out slots of one region at its primary. Slab assignments are
/// persistent (the slab table); free lists are rebuilt from the headers
/// when a node starts.
pub struct Allocator {
    region: u16,
    mr: Arc<MemoryRegion>,
    slabs: u32,
    next_slab: u32,
    free: Vec<Vec<u32>>,
}

impl Allocator {
    pub fn open(region: u16, mr: Arc<MemoryRegion>) -> Result<Allocator> {
        let slabs = slab_count(mr.len());
        let mut allocator = Allocator {
            region,
            mr,
            slabs,
            next_slab: 0,
            free: vec![Vec::new(); CLASS_BYTES.len()],
        };
        let mut table = vec![0u8; slabs as usize];
        allocator.mr.read(SLAB_TABLE_OFFSET, &mut table)?;
        for (slab, entry) in table.iter().enumerate() {
            if *entry == 0 {
                continue;
            }
            let class = entry - 1;
            if class as usize >= CLASS_BYTES.len() {
                return Err(Error::Config(format!(
                    "region {region}: slab {slab} has unknown class {class}"
                )));
            }
            allocator.next_slab = allocator.next_slab.max(slab as u32 + 1);
            for offset in allocator.slots(slab as u32, class).rev() {
                let header =
                    Header::decode(header_word(&allocator.mr, offset)?.load(Ordering::Acquire));
                if !header.allocated && !header.locked {
                    allocator.free[class as usize].push(offset);
                }
            }
        }
        Ok(allocator)
    }

    fn slots(&self, slab: u32, class: u8) -> impl DoubleEndedIterator<Item = u32> {
        let start = REGION_HEADER_BYTES + slab * SLAB_BYTES;
        let size = class_bytes(class);
        (0..SLAB_BYTES / size).map(move |index| start + index * size)
    }

    /// A free slot of `class`, taken out of the free list until it is
    /// committed as allocated or given back with [`Allocator::release`].
    /// When it had to assign a new slab, it says which slab-table byte
    /// changed (offset, value): the caller copies it to the backups.
    pub fn take(&mut self, class: u8) -> Result<(u32, Option<(u64, u8)>)> {
        if let Some(offset) = self.free[class as usize].pop() {
            return Ok((offset, None));
        }
        if self.next_slab >= self.slabs {
            return Err(Error::OutOfMemory {
                region: self.region,
                class_bytes: class_bytes(class),
            });
        }
        let slab = self.next_slab;
        self.next_slab += 1;
        self.mr
            .write(SLAB_TABLE_OFFSET + u64::from(slab), &[class + 1])?;
        let slots: Vec<u32> = self.slots(slab, class).rev().collect();
        self.free[class as usize].extend(slots);
        let offset = self.free[class as usize]
            .pop()
            .expect("a fresh slab has slots");
        Ok((
            offset,
            Some((SLAB_TABLE_OFFSET + u64::from(slab), class + 1)),
        ))
    }

    pub fn release(&mut self, offset: u32, class: u8) {
        self.free[class as usize].push(offset);
    }

    /// Gives a slot back to be handed out last: one whose lock an aborted
    /// transaction's ABORT record has not released yet.
    pub fn release_later(&mut self, offset: u32, class: u8) {
        self.free[class as usize].insert(0, offset);
    }

    pub fn free_slots(&self, class: u8) -> usize {
        self.free[class as usize].len()
            + (self.slabs - self.next_slab) as usize * (SLAB_BYTES / class_bytes(class)) as usize
    }
}
