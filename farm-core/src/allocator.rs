//! Hands out the slots of a region at its primary. Slab assignments are
//! persistent (the region's slab table, [`crate::codec::region`]) and
//! replicated to the backups; free lists are rebuilt from the object
//! headers when a node starts.
//!
//! Freed slots are handed out again oldest first (a FIFO per class), and
//! while the region has unassigned slabs the allocator keeps at least a
//! slab's worth of free slots in each class before it reuses one: a freed
//! slot comes back only after every other free slot of its class. With the
//! slot's 22-bit incarnation (see [`crate::Addr`]) an address of a freed
//! object can name a new one only after 2^22 × (slots per slab) frees of
//! its class in its region while the region has room, and after 2^22 frees
//! of its very slot in any case. (Regression: the last freed slot was
//! handed out first, and with a 12-bit incarnation one alloc/free loop
//! made a freed address name a new object after about 8,000 turns.)

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use rdma_transport::MemoryRegion;

use crate::codec::region::{
    slab_class, slab_entry, slab_offset, slab_table_entry_offset, SLAB_TABLE_BYTES_MAX,
    SLAB_TABLE_OFFSET,
};
use crate::error::{Error, Result};
use crate::header::{Addr, Header};
use crate::limits::{CLASS_BYTES, REGION_HEADER_BYTES, SLAB_BYTES};
use crate::region::{class_bytes, header_word, Replicas};

/// Slabs of a region of `region_bytes` bytes.
pub fn slab_count(region_bytes: u64) -> u32 {
    let slabs = region_bytes.saturating_sub(u64::from(REGION_HEADER_BYTES)) / u64::from(SLAB_BYTES);
    slabs.min(SLAB_TABLE_BYTES_MAX as u64) as u32
}

/// A slab-table byte the allocator changed (offset in the region, value):
/// the caller copies it to the region's backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabChange {
    pub offset: u64,
    pub value: u8,
}

/// The allocator of one region.
pub struct Allocator {
    region: u16,
    mr: Arc<MemoryRegion>,
    slabs: u32,
    next_slab: u32,
    /// Free slots per class, oldest first.
    free: Vec<VecDeque<u32>>,
}

impl Allocator {
    /// Rebuilds the free lists from the slab table and the headers.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when a slab-table entry names no size class.
    pub fn open(region: u16, mr: Arc<MemoryRegion>) -> Result<Allocator> {
        let slabs = slab_count(mr.len());
        let mut allocator = Allocator {
            region,
            mr,
            slabs,
            next_slab: 0,
            free: vec![VecDeque::new(); CLASS_BYTES.len()],
        };
        let mut table = vec![0u8; slabs as usize];
        allocator.mr.read(SLAB_TABLE_OFFSET, &mut table)?;
        for (slab, entry) in table.iter().enumerate() {
            let class = slab_class(*entry).map_err(|source| Error::Corrupt {
                what: format!("slab table of region {region}, slab {slab}"),
                source,
            })?;
            let Some(class) = class else { continue };
            allocator.next_slab = allocator.next_slab.max(slab as u32 + 1);
            for offset in allocator.slots(slab as u32, class) {
                let header =
                    Header::decode(header_word(&allocator.mr, offset)?.load(Ordering::Acquire));
                if !header.allocated && !header.locked {
                    allocator.free[usize::from(class)].push_back(offset);
                }
            }
        }
        Ok(allocator)
    }

    fn slots(&self, slab: u32, class: u8) -> impl Iterator<Item = u32> {
        let start = slab_offset(slab);
        let size = class_bytes(class);
        (0..SLAB_BYTES / size).map(move |index| start + index * size)
    }

    /// A free slot of `class`, taken out of the free list until it is
    /// committed as allocated or given back with [`Allocator::release`].
    /// When it had to assign a new slab, it says which slab-table byte
    /// changed.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the region has no slot of that class
    /// left and no slab to assign.
    pub fn take(&mut self, class: u8) -> Result<(u32, Option<SlabChange>)> {
        let slots_per_slab = (SLAB_BYTES / class_bytes(class)) as usize;
        let mut change = None;
        // Keep a slab's worth free while there is room, so that a freed
        // slot waits behind at least that many others.
        if self.free[usize::from(class)].len() < slots_per_slab && self.next_slab < self.slabs {
            let slab = self.next_slab;
            self.next_slab += 1;
            let assigned = SlabChange {
                offset: slab_table_entry_offset(slab),
                value: slab_entry(class),
            };
            self.mr.write(assigned.offset, &[assigned.value])?;
            let slots: Vec<u32> = self.slots(slab, class).collect();
            self.free[usize::from(class)].extend(slots);
            change = Some(assigned);
        }
        match self.free[usize::from(class)].pop_front() {
            Some(offset) => Ok((offset, change)),
            None => Err(Error::OutOfMemory {
                region: self.region,
                class_bytes: class_bytes(class),
            }),
        }
    }

    /// Gives a slot back, behind every other free slot of its class: a
    /// committed free, or an aborted allocation (whose lock may outlive the
    /// abort until the primary processes the ABORT record).
    pub fn release(&mut self, offset: u32, class: u8) {
        self.free[usize::from(class)].push_back(offset);
    }

    /// Slots of `class` this region can still hand out.
    pub fn free_slots(&self, class: u8) -> usize {
        self.free[usize::from(class)].len()
            + (self.slabs - self.next_slab) as usize * (SLAB_BYTES / class_bytes(class)) as usize
    }
}

/// The allocators of the regions a node is primary of, by region id. A
/// backup promoted to primary by a configuration change gets one then
/// ([`Allocators::promote`]); none is ever taken away while the node runs.
pub struct Allocators(Vec<OnceLock<Mutex<Allocator>>>);

impl Allocators {
    /// Opens an allocator for every region of `replicas` that `is_primary`
    /// says this node is primary of.
    pub fn open(replicas: &Replicas, is_primary: impl Fn(u16) -> bool) -> Result<Allocators> {
        let mut allocators: Vec<OnceLock<Mutex<Allocator>>> = Vec::new();
        for (region, mr) in replicas.iter() {
            allocators.resize_with(usize::from(region) + 1, OnceLock::new);
            if is_primary(region) {
                let _ = allocators[usize::from(region)]
                    .set(Mutex::new(Allocator::open(region, mr.clone())?));
            }
        }
        Ok(Allocators(allocators))
    }

    /// Allocator recovery (FaRM SOSP'15 §5.5): this node became the
    /// primary of `region`, whose replica `mr` it holds; the free lists
    /// are rebuilt from the replicated slab table and the object headers.
    /// Nothing happens if it already has the allocator.
    ///
    /// # Errors
    /// As [`Allocator::open`]; [`Error::NotPrimary`]-like misuse (a region
    /// this node holds no replica of) is [`Error::Config`].
    pub fn promote(&self, region: u16, mr: &Arc<MemoryRegion>) -> Result<()> {
        let Some(slot) = self.0.get(usize::from(region)) else {
            return Err(Error::Config(format!(
                "promoted to primary of region {region}, of which this node holds no replica"
            )));
        };
        if slot.get().is_none() {
            let _ = slot.set(Mutex::new(Allocator::open(region, mr.clone())?));
        }
        Ok(())
    }

    /// The allocator of `region`, if this node is its primary.
    pub fn get(&self, region: u16) -> Option<&Mutex<Allocator>> {
        self.0.get(usize::from(region)).and_then(OnceLock::get)
    }

    /// Gives the slot of `addr` back to its region's allocator, if this
    /// node is its primary (see [`Allocator::release`]).
    pub fn release(&self, addr: Addr) {
        if let Some(allocator) = self.get(addr.region()) {
            allocator
                .lock()
                .expect("allocator lock")
                .release(addr.offset(), addr.class());
        }
    }

    /// Free slots of `class` in `region` (0 where this node is not its
    /// primary).
    pub fn free_slots(&self, region: u16, class: u8) -> usize {
        if usize::from(class) >= crate::limits::CLASS_BYTES.len() {
            return 0;
        }
        self.get(region)
            .map(|a| a.lock().expect("allocator lock").free_slots(class))
            .unwrap_or(0)
    }
}
