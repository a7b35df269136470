//! The 64-bit word at the start of every object, and the address that names
//! an object.
//!
//! ```text
//! Header:   63     62          61..0
//!         +------+-----------+--------------------------------+
//!         | lock | allocated |            version             |
//!         | 1 b  |    1 b    |             62 b               |
//!         +------+-----------+--------------------------------+
//!
//! Addr:     63..50     49..47    46..25          24..0
//!         +----------+-------+---------------+--------------------+
//!         |  region  | class |  incarnation  | slot (offset / 64) |
//!         |   14 b   |  3 b  |     22 b      |        25 b        |
//!         +----------+-------+---------------+--------------------+
//! ```
//!
//! The version counts committed writes of the slot and never goes back, not
//! even across free and reallocation, so "newer" is always "larger", and a
//! LOCK or a validation that expects a version never mistakes a reallocated
//! object for the one it read. 62 bits do not wrap: a slot written a
//! million times a second would need 146,000 years.
//!
//! The incarnation counts the frees of a slot; it lives in the slot next to
//! the object's size ([`crate::codec::object`]), and an address remembers
//! the incarnation it was allocated in, so a read through an address whose
//! object was freed (and maybe reallocated) is detected instead of
//! returning someone else's data. An address can name a new object only
//! after its slot was freed 2^22 (4,194,304) times, and the allocator hands
//! a freed slot out again only after every other free slot of its class
//! (oldest first, with at least a slab's worth kept free while the region
//! has room: see `allocator`), so that is at least 2^22 × the slots of a
//! slab of the class frees of the class in that region: 2^32 for objects of
//! up to 40 bytes, 2^26 for the largest.

use std::fmt;

use crate::limits::{
    CLASS_BYTES, CLASS_ID_BITS, INCARNATION_BITS, REGION_BYTES_MAX, REGION_ID_BITS, SLOT_INDEX_BITS,
};

/// Decoded object header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub locked: bool,
    pub allocated: bool,
    pub version: u64,
}

impl Header {
    pub const VERSION_BITS: u32 = 62;
    pub const VERSION_MAX: u64 = (1 << Self::VERSION_BITS) - 1;
    const LOCK_BIT: u64 = 1 << 63;
    const ALLOCATED_BIT: u64 = 1 << 62;

    /// # Panics
    /// On a version beyond [`Header::VERSION_MAX`] (2^62 committed writes
    /// of one slot).
    pub fn encode(self) -> u64 {
        assert!(
            self.version <= Self::VERSION_MAX,
            "version {} overflows",
            self.version
        );
        (u64::from(self.locked) << 63) | (u64::from(self.allocated) << 62) | self.version
    }

    /// Every word is a header.
    pub fn decode(word: u64) -> Header {
        Header {
            locked: word & Self::LOCK_BIT != 0,
            allocated: word & Self::ALLOCATED_BIT != 0,
            version: word & Self::VERSION_MAX,
        }
    }

    pub fn with_lock(self, locked: bool) -> Header {
        Header { locked, ..self }
    }

    /// The header a committed write of a live object installs: next
    /// version, allocated, unlocked.
    pub fn after_write(self) -> Header {
        Header {
            locked: false,
            allocated: true,
            version: self.version + 1,
        }
    }

    /// The header a committed free of a live object installs: unallocated,
    /// the next version (the slot's incarnation moves on too: see
    /// [`Addr::next_incarnation`]).
    pub fn after_free(self) -> Header {
        Header {
            locked: false,
            allocated: false,
            version: self.version + 1,
        }
    }
}

/// The global address of an object: which region, which size class (so a
/// reader knows how many bytes one READ must fetch), which incarnation of
/// the slot, and which slot (its byte offset in the region / 64).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Addr(pub u64);

impl Addr {
    pub const REGION_BITS: u32 = REGION_ID_BITS;
    pub const CLASS_BITS: u32 = CLASS_ID_BITS;
    pub const INCARNATION_BITS: u32 = INCARNATION_BITS;
    pub const SLOT_BITS: u32 = SLOT_INDEX_BITS;
    /// Slots are counted in units of the smallest class.
    pub const SLOT_BYTES: u32 = CLASS_BYTES[0];
    pub const REGIONS_MAX: usize = 1 << Self::REGION_BITS;
    pub const INCARNATION_MAX: u32 = (1 << Self::INCARNATION_BITS) - 1;
    /// The largest region an address can reach into.
    pub const REGION_BYTES_MAX: u64 = REGION_BYTES_MAX;
    const SLOT_SHIFT: u32 = 0;
    const INCARNATION_SHIFT: u32 = Self::SLOT_BITS;
    const CLASS_SHIFT: u32 = Self::INCARNATION_SHIFT + Self::INCARNATION_BITS;
    const REGION_SHIFT: u32 = Self::CLASS_SHIFT + Self::CLASS_BITS;

    /// # Panics
    /// On a field beyond its bits, or an offset that is no multiple of
    /// [`Addr::SLOT_BYTES`]: callers take them from the allocator.
    pub fn new(region: u16, class: u8, incarnation: u32, offset: u32) -> Addr {
        assert!(
            usize::from(region) < Self::REGIONS_MAX,
            "region {region} overflows"
        );
        assert!(
            u32::from(class) < 1 << Self::CLASS_BITS,
            "class {class} overflows"
        );
        assert!(
            incarnation <= Self::INCARNATION_MAX,
            "incarnation {incarnation} overflows"
        );
        assert!(
            offset.is_multiple_of(Self::SLOT_BYTES) && u64::from(offset) < Self::REGION_BYTES_MAX,
            "offset {offset} is no slot"
        );
        Addr(
            (u64::from(region) << Self::REGION_SHIFT)
                | (u64::from(class) << Self::CLASS_SHIFT)
                | (u64::from(incarnation) << Self::INCARNATION_SHIFT)
                | (u64::from(offset / Self::SLOT_BYTES) << Self::SLOT_SHIFT),
        )
    }

    fn field(self, shift: u32, bits: u32) -> u64 {
        (self.0 >> shift) & ((1 << bits) - 1)
    }

    pub fn region(self) -> u16 {
        self.field(Self::REGION_SHIFT, Self::REGION_BITS) as u16
    }

    pub fn class(self) -> u8 {
        self.field(Self::CLASS_SHIFT, Self::CLASS_BITS) as u8
    }

    pub fn incarnation(self) -> u32 {
        self.field(Self::INCARNATION_SHIFT, Self::INCARNATION_BITS) as u32
    }

    /// The slot's byte offset in its region.
    pub fn offset(self) -> u32 {
        self.field(Self::SLOT_SHIFT, Self::SLOT_BITS) as u32 * Self::SLOT_BYTES
    }

    /// The incarnation a slot has after the object this address names is
    /// freed (wrapping after [`Addr::INCARNATION_MAX`]).
    pub fn next_incarnation(self) -> u32 {
        (self.incarnation() + 1) & Self::INCARNATION_MAX
    }

    pub fn with_incarnation(self, incarnation: u32) -> Addr {
        Addr::new(self.region(), self.class(), incarnation, self.offset())
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Addr(r{}/c{}/i{}/+{:#x})",
            self.region(),
            self.class(),
            self.incarnation(),
            self.offset()
        )
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

const _: () =
    assert!(Addr::REGION_BITS + Addr::CLASS_BITS + Addr::INCARNATION_BITS + Addr::SLOT_BITS == 64);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trips(locked: bool, allocated: bool, version in 0..=Header::VERSION_MAX) {
            let header = Header { locked, allocated, version };
            prop_assert_eq!(Header::decode(header.encode()), header);
        }

        #[test]
        fn every_word_decodes_and_re_encodes(word: u64) {
            prop_assert_eq!(Header::decode(word).encode(), word);
            let addr = Addr(word);
            prop_assert_eq!(Addr::new(addr.region(), addr.class(), addr.incarnation(), addr.offset()), addr);
        }

        #[test]
        fn addr_round_trips(
            region in 0..Addr::REGIONS_MAX as u16,
            class in 0u8..8,
            incarnation in 0..=Addr::INCARNATION_MAX,
            slot in 0u32..(1 << Addr::SLOT_BITS),
        ) {
            let offset = slot * Addr::SLOT_BYTES;
            let addr = Addr::new(region, class, incarnation, offset);
            prop_assert_eq!((addr.region(), addr.class(), addr.incarnation(), addr.offset()), (region, class, incarnation, offset));
            prop_assert_eq!(addr.next_incarnation(), (incarnation + 1) % (1 << Addr::INCARNATION_BITS));
        }
    }

    #[test]
    #[should_panic(expected = "version")]
    fn encode_refuses_an_overflowing_version() {
        let _ = Header {
            version: Header::VERSION_MAX + 1,
            ..Header::default()
        }
        .encode();
    }

    #[test]
    fn the_incarnation_wraps_only_after_2_pow_22_frees() {
        let addr = Addr::new(3, 1, Addr::INCARNATION_MAX - 1, 65_536 + 128);
        assert_eq!(addr.next_incarnation(), Addr::INCARNATION_MAX);
        let last = addr.with_incarnation(Addr::INCARNATION_MAX);
        assert_eq!(last.next_incarnation(), 0);
        assert_eq!(Addr::INCARNATION_MAX + 1, 4_194_304);
    }
}
