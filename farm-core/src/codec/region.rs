//! A region file (or a replica's registered memory):
//!
//! ```text
//!  0       8        16      24         64                       REGION_HEADER_BYTES
//!  | magic | region | bytes | reserved | slab table              | slab 0 | slab 1 | ...
//!  | u64   | u64    | u64   | 5 × u64  | 1 byte per slab:        |
//!  |       |        |       |          | its class + 1, 0 unused |
//! ```
//!
//! A slab ([`SLAB_BYTES`]) is the unit in which a region hands space to a
//! size class; its slots are `CLASS_BYTES[class]` bytes each. The slab table
//! is the only allocator state that is persistent (and replicated to the
//! backups): free lists are rebuilt from the object headers.

use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use super::{read_pod, DecodeError};
use crate::limits::{CLASS_BYTES, REGION_HEADER_BYTES, SLAB_BYTES};

/// Version 2: the slot prefix holds the incarnation (version 1 kept it in
/// the header word); files of version 1 are refused, not misread.
const MAGIC: u64 = u64::from_le_bytes(*b"FARMREG2");

/// The first bytes of a region.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RegionHeader {
    pub magic: u64,
    pub region: u64,
    pub bytes: u64,
    pub reserved: [u64; 5],
}

const _: () = assert!(size_of::<RegionHeader>() == 64);
const _: () = assert!(offset_of!(RegionHeader, bytes) == 16);
const _: () =
    assert!(SLAB_TABLE_OFFSET as usize + SLAB_TABLE_BYTES_MAX <= REGION_HEADER_BYTES as usize);

/// Where the slab table starts.
pub const SLAB_TABLE_OFFSET: u64 = size_of::<RegionHeader>() as u64;
/// The most slabs a region's table can describe.
pub const SLAB_TABLE_BYTES_MAX: usize = REGION_HEADER_BYTES as usize - size_of::<RegionHeader>();

/// What the first bytes of a region say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formatted {
    /// All zero: fresh memory, not formatted yet.
    Fresh,
    /// A region header: which region, how many bytes.
    Region { region: u16, bytes: u64 },
}

impl RegionHeader {
    pub fn new(region: u16, bytes: u64) -> RegionHeader {
        RegionHeader {
            magic: MAGIC,
            region: u64::from(region),
            bytes,
            reserved: [0; 5],
        }
    }

    /// Decodes the first [`size_of::<RegionHeader>()`] bytes of a region.
    pub fn decode(bytes: &[u8]) -> Result<Formatted, DecodeError> {
        let header: RegionHeader = read_pod(bytes, "region header")?;
        if header == RegionHeader::zeroed() {
            return Ok(Formatted::Fresh);
        }
        if header.magic != MAGIC {
            return Err(DecodeError::BadMagic {
                what: "region header",
                found: header.magic,
            });
        }
        let region = u16::try_from(header.region).map_err(|_| DecodeError::Invalid {
            what: "region header",
            why: "region id beyond 16 bits",
        })?;
        if header.reserved != [0; 5] {
            return Err(DecodeError::ReservedBits {
                what: "region header",
            });
        }
        Ok(Formatted::Region {
            region,
            bytes: header.bytes,
        })
    }
}

/// The class a slab-table byte assigns, `None` for an unused slab.
pub fn slab_class(entry: u8) -> Result<Option<u8>, DecodeError> {
    match entry {
        0 => Ok(None),
        entry if usize::from(entry) <= CLASS_BYTES.len() => Ok(Some(entry - 1)),
        _ => Err(DecodeError::Invalid {
            what: "slab table",
            why: "entry names no size class",
        }),
    }
}

/// The slab-table byte that assigns a slab to `class`.
pub fn slab_entry(class: u8) -> u8 {
    assert!(usize::from(class) < CLASS_BYTES.len());
    class + 1
}

/// Offset of slab `slab`'s first byte.
pub fn slab_offset(slab: u32) -> u32 {
    REGION_HEADER_BYTES + slab * SLAB_BYTES
}

/// Offset of slab `slab`'s byte in the slab table.
pub fn slab_table_entry_offset(slab: u32) -> u64 {
    SLAB_TABLE_OFFSET + u64::from(slab)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_headers_round_trip() {
        let header = RegionHeader::new(5, 1 << 20);
        assert_eq!(
            RegionHeader::decode(bytemuck::bytes_of(&header)),
            Ok(Formatted::Region {
                region: 5,
                bytes: 1 << 20
            })
        );
        assert_eq!(RegionHeader::decode(&[0u8; 64]), Ok(Formatted::Fresh));
        assert!(RegionHeader::decode(&[1u8; 64]).is_err());
        assert!(RegionHeader::decode(&[0u8; 8]).is_err());
        for class in 0..CLASS_BYTES.len() as u8 {
            assert_eq!(slab_class(slab_entry(class)), Ok(Some(class)));
        }
        assert!(slab_class(CLASS_BYTES.len() as u8 + 1).is_err());
    }
}
