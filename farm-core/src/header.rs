//! The 64-bit word at the start of every object, and the address that names
//! an object.
//!
//! ```text
//! Header:   63   62        61..50        49..0
//!         +------+-----------+-------------+-----------+
//!         | lock | allocated | incarnation |  version  |
//!         | 1 b  |    1 b    |    12 b     |   50 b    |
//!         +------+-----------+-------------+-----------+
//!
//! Addr:     63..48    47..44   43..32        31..0
//!         +--------+-------+-------------+----------+
//!         | region | class | incarnation |  offset  |
//!         +--------+-------+-------------+----------+
//! ```
//!
//! The version counts committed writes of the slot and never goes back, not
//! even across free and reallocation, so "newer" is always "larger". The
//! incarnation counts frees: an address remembers the incarnation it was
//! allocated in, so a read through an address whose object was freed (and
//! maybe reallocated) is detected instead of returning someone else's data.

use std::fmt;

/// Decoded object header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub locked: bool,
    pub allocated: bool,
    pub incarnation: u16,
    pub version: u64,
}

impl Header {
    pub const INCARNATION_BITS: u32 = 12;
    pub const VERSION_BITS: u32 = 50;
    pub const INCARNATION_MAX: u16 = (1 << Self::INCARNATION_BITS) - 1;
    pub const VERSION_MAX: u64 = (1 << Self::VERSION_BITS) - 1;
    const LOCK_BIT: u64 = 1 << 63;
    const ALLOCATED_BIT: u64 = 1 << 62;

    pub fn encode(self) -> u64 {
        assert!(
            self.incarnation <= Self::INCARNATION_MAX,
            "incarnation {} overflows",
            self.incarnation
        );
        assert!(
            self.version <= Self::VERSION_MAX,
            "version {} overflows",
            self.version
        );
        (u64::from(self.locked) << 63)
            | (u64::from(self.allocated) << 62)
            | (u64::from(self.incarnation) << Self::VERSION_BITS)
            | self.version
    }

    pub fn decode(word: u64) -> Header {
        Header {
            locked: word & Self::LOCK_BIT != 0,
            allocated: word & Self::ALLOCATED_BIT != 0,
            incarnation: ((word >> Self::VERSION_BITS) & u64::from(Self::INCARNATION_MAX)) as u16,
            version: word & Self::VERSION_MAX,
        }
    }

    pub fn with_lock(self, locked: bool) -> Header {
        Header { locked, ..self }
    }

    /// The header a committed write of a live object installs: same
    /// incarnation, next version, allocated, unlocked.
    pub fn after_write(self) -> Header {
        Header {
            locked: false,
            allocated: true,
            incarnation: self.incarnation,
            version: self.version + 1,
        }
    }

    /// The header a committed free of a live object installs: unallocated,
    /// the next incarnation (every address of the old object is stale now),
    /// the next version.
    pub fn after_free(self) -> Header {
        Header {
            locked: false,
            allocated: false,
            incarnation: self.next_incarnation(),
            version: self.version + 1,
        }
    }

    /// The incarnation after a free (wrapping: 4096 frees of one slot
    /// between a stale read and its use would go unnoticed).
    pub fn next_incarnation(self) -> u16 {
        (self.incarnation + 1) & Self::INCARNATION_MAX
    }
}

/// The global address of an object: which region, which size class (so a
/// reader knows how many bytes one READ must fetch), which incarnation of
/// the slot, and the byte offset in the region.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub u64);

impl Addr {
    pub fn new(region: u16, class: u8, incarnation: u16, offset: u32) -> Addr {
        assert!(class < 16, "class {class} overflows");
        assert!(
            incarnation <= Header::INCARNATION_MAX,
            "incarnation {incarnation} overflows"
        );
        Addr(
            (u64::from(region) << 48)
                | (u64::from(class) << 44)
                | (u64::from(incarnation) << 32)
                | u64::from(offset),
        )
    }

    pub fn region(self) -> u16 {
        (self.0 >> 48) as u16
    }

    pub fn class(self) -> u8 {
        ((self.0 >> 44) & 0xf) as u8
    }

    pub fn incarnation(self) -> u16 {
        ((self.0 >> 32) & u64::from(Header::INCARNATION_MAX)) as u16
    }

    pub fn offset(self) -> u32 {
        self.0 as u32
    }

    pub fn with_incarnation(self, incarnation: u16) -> Addr {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trips(locked: bool, allocated: bool, incarnation in 0..=Header::INCARNATION_MAX, version in 0..=Header::VERSION_MAX) {
            let header = Header { locked, allocated, incarnation, version };
            prop_assert_eq!(Header::decode(header.encode()), header);
        }

        #[test]
        fn every_word_decodes_and_re_encodes(word: u64) {
            prop_assert_eq!(Header::decode(word).encode(), word);
        }

        #[test]
        fn addr_round_trips(region: u16, class in 0u8..16, incarnation in 0..=Header::INCARNATION_MAX, offset: u32) {
            let addr = Addr::new(region, class, incarnation, offset);
            prop_assert_eq!((addr.region(), addr.class(), addr.incarnation(), addr.offset()), (region, class, incarnation, offset));
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
}
